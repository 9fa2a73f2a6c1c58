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


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) as 0700; tighten it if it already exists more open."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        os.chmod(path, PRIVATE_DIR)
    return path
