"""Where things live under $TRAINYARD_HOME, written down once.

The API serves logs from here and the local backend writes them here; neither imports
the other, both import this. Every directory is created private (0700) and every file
0600: a job's environment and output are its owner's business, not other local users'.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def logs_dir(home: Path, job_id: str) -> Path:
    """One directory of worker logs per job."""
    return home / "logs" / job_id


def worker_log_path(home: Path, job_id: str, worker: int) -> Path:
    """The output (stdout and stderr, all attempts appended) of worker `worker`."""
    return logs_dir(home, job_id) / f"worker-{worker}.log"


def job_output_dir(home: Path, job_id: str) -> Path:
    """The job's output directory (checkpoints, summary.json), shared by its attempts."""
    return home / "jobs" / job_id / "output"


def run_dir(home: Path) -> Path:
    """Runtime state of the local backend (one record per worker process)."""
    return home / "run"


def secrets_dir(home: Path) -> Path:
    """Secrets the local backend can hand to jobs by reference (`env_from_secret`)."""
    return home / "secrets"


def create_private_dirs(path: Path) -> Path:
    """Create `path` and every missing parent as 0700; existing ones are left as they are.

    (`Path.mkdir(mode, parents=True)` gives the mode to the last directory only: the
    parents it creates get the umask's 0755, so `logs/` and `jobs/` listed every job.)
    """
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:  # created meanwhile (another process): theirs is private too
            continue
    return path


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) as 0700; tighten it if it already exists more open."""
    create_private_dirs(path)
    if path.stat().st_mode & 0o077:
        os.chmod(path, PRIVATE_DIR)
    return path
