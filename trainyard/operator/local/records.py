"""The local backend's files under $TRAINYARD_HOME/run: what survives a server restart.

Per attempt of a job, `run/<job>/attempt-<n>/` holds:
- `gang.json`: the attempt's rendezvous port, chosen once so every worker of the
  attempt (and every later call, in this server or the next) agrees on it.
- `worker-<i>.json`: the worker's RECORD, written by the backend before the worker may
  run. Its existence means "launched": a repeated launch skips the worker, and a
  restarted server adopts it. It names the supervisor (pid, its start time in clock
  ticks and the boot id, so a reused pid is never mistaken for it), the argv, the log,
  the GPUs and metrics port it holds, and a stop request with its kill deadline once
  one was made.
- `worker-<i>.started`: written by the supervisor once the worker process exists (its
  pid, which is also its process group).
- `worker-<i>.status`: written by the supervisor when the worker ended (exit code,
  signal, message).

Every file is written to a temporary name and renamed, so a reader (or a server killed
mid-write) only ever sees a whole file. Not fsynced: the records guard against the
server dying, and a machine that loses power loses its workers too.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from trainyard.layout import PRIVATE_FILE, run_dir

RECORD_VERSION = 1
_ATTEMPT_DIR = re.compile(r"^attempt-(\d+)$")
_WORKER_RECORD = re.compile(r"^worker-(\d+)\.json$")
# Job ids are path segments here: uuid hex from the store, but checked, never trusted.
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RecordError(ValueError):
    """A record file that cannot be read back (truncated by hand, another version)."""


def safe_job_id(job_id: str) -> str:
    """`job_id` if it is usable as one directory name, else ValueError."""
    if not _SAFE_ID.match(job_id) or job_id in (".", ".."):
        raise ValueError(f"job id {job_id!r} is not a safe directory name")
    return job_id


@dataclass(frozen=True, slots=True)
class StopRequest:
    """A stop asked for a worker: why, when, and when the hard kill is due (epoch s)."""

    reason: str
    requested_at: float
    kill_at: float


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """What the backend knows about one launched worker (see the module docstring)."""

    job_id: str
    attempt: int
    index: int
    node: str
    launch_id: str
    pid: int  # the supervisor
    pgid: int  # the supervisor's own group and session (= pid); the worker has its own
    start_time: int  # the supervisor's start, clock ticks after boot (/proc/<pid>/stat)
    boot_id: str
    argv: tuple[str, ...]
    log_path: str
    gpus: tuple[int, ...] = ()
    metrics_port: int | None = None
    launched_at: float = 0.0
    stop: StopRequest | None = None
    version: int = field(default=RECORD_VERSION)

    def to_json(self) -> str:
        payload = asdict(self)
        payload["argv"] = list(self.argv)
        payload["gpus"] = list(self.gpus)
        return json.dumps(payload, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WorkerRecord:
        try:
            payload: dict[str, Any] = json.loads(text)
            if payload.get("version") != RECORD_VERSION:
                raise RecordError(f"record version {payload.get('version')!r} is not 1")
            stop = payload.get("stop")
            return cls(
                job_id=str(payload["job_id"]),
                attempt=int(payload["attempt"]),
                index=int(payload["index"]),
                node=str(payload["node"]),
                launch_id=str(payload["launch_id"]),
                pid=int(payload["pid"]),
                pgid=int(payload["pgid"]),
                start_time=int(payload["start_time"]),
                boot_id=str(payload["boot_id"]),
                argv=tuple(str(part) for part in payload["argv"]),
                log_path=str(payload["log_path"]),
                gpus=tuple(int(gpu) for gpu in payload.get("gpus") or ()),
                metrics_port=payload.get("metrics_port"),
                launched_at=float(payload.get("launched_at") or 0.0),
                stop=StopRequest(**stop) if stop else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, RecordError):
                raise
            raise RecordError(f"unreadable record: {exc}") from exc

    def with_stop(self, stop: StopRequest) -> WorkerRecord:
        return replace(self, stop=stop)


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a worker ended, as its supervisor wrote it."""

    exit_code: int | None
    signal: int | None
    message: str
    ended_at: float | None


@dataclass(frozen=True, slots=True)
class AttemptPaths:
    """The files of one attempt of one job."""

    directory: Path

    @classmethod
    def of(cls, home: Path, job_id: str, attempt: int) -> AttemptPaths:
        return cls(run_dir(home) / safe_job_id(job_id) / f"attempt-{int(attempt)}")

    @property
    def gang(self) -> Path:
        return self.directory / "gang.json"

    def record(self, index: int) -> Path:
        return self.directory / f"worker-{index}.json"

    def started(self, index: int) -> Path:
        return self.directory / f"worker-{index}.started"

    def status(self, index: int) -> Path:
        return self.directory / f"worker-{index}.status"

    def worker_files(self, index: int) -> tuple[Path, Path, Path]:
        return self.record(index), self.started(index), self.status(index)


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename (0600). OSError (ENOSPC, EACCES) propagates."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    try:
        data = text.encode()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        temporary.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(temporary, path)


def _key_values(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value.replace("\\n", "\n").replace("\\\\", "\\")
    return values


def _optional_int(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


def read_status(path: Path) -> ExitStatus | None:
    """The supervisor's status file, or None when there is none (yet)."""
    try:
        values = _key_values(path.read_text(errors="replace"))
    except FileNotFoundError:
        return None
    try:
        ended = values.get("ended_at")
        return ExitStatus(
            exit_code=_optional_int(values.get("exit_code")),
            signal=_optional_int(values.get("signal")),
            message=values.get("message", "") or "ended without a message",
            ended_at=float(ended) if ended else None,
        )
    except ValueError:
        return ExitStatus(None, None, f"unreadable exit status in {path}", None)


def read_started(path: Path) -> int | None:
    """The worker's pid (= process group) from the supervisor's started marker."""
    try:
        values = _key_values(path.read_text())
    except FileNotFoundError:
        return None
    try:
        return int(values["pgid"])
    except (KeyError, ValueError):
        return None


def scan(home: Path) -> list[tuple[str, int, int, Path]]:
    """Every worker record on disk: (job id, attempt, index, path). Leftover temporary
    files of a write that a crash interrupted are removed on the way."""
    found = []
    root = run_dir(home)
    try:
        jobs = list(os.scandir(root))
    except FileNotFoundError:
        return found
    for job in jobs:
        if not job.is_dir(follow_symlinks=False):
            continue
        for attempt_entry in os.scandir(job.path):
            match = _ATTEMPT_DIR.match(attempt_entry.name)
            if not match or not attempt_entry.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(attempt_entry.path):
                if entry.name.endswith(".tmp"):
                    Path(entry.path).unlink(missing_ok=True)
                    continue
                worker = _WORKER_RECORD.match(entry.name)
                if worker:
                    found.append(
                        (job.name, int(match.group(1)), int(worker.group(1)), Path(entry.path))
                    )
    return found


def read_gang_port(paths: AttemptPaths) -> int | None:
    """The attempt's rendezvous port from its gang.json, None when there is none."""
    try:
        return int(json.loads(paths.gang.read_text())["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def gang_ports(home: Path) -> dict[tuple[str, int], int]:
    """The rendezvous port of every attempt that has a gang.json."""
    ports = {}
    root = run_dir(home)
    if not root.is_dir():
        return ports
    for path in root.glob("*/attempt-*/gang.json"):
        match = _ATTEMPT_DIR.match(path.parent.name)
        try:
            port = int(json.loads(path.read_text())["port"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if match:
            ports[(path.parent.parent.name, int(match.group(1)))] = port
    return ports


def remove_worker_files(paths: AttemptPaths, index: int) -> bool:
    """Forget one worker. When it was the attempt's last, the attempt's other files
    (gang.json) go too and True is returned: the directory is empty and may be pruned."""
    for path in paths.worker_files(index):
        path.unlink(missing_ok=True)
    try:
        names = os.listdir(paths.directory)
    except FileNotFoundError:
        return True
    if any(_WORKER_RECORD.match(name) for name in names):
        return False
    for name in names:
        (paths.directory / name).unlink(missing_ok=True)
    return True


def prune(attempt_directory: Path) -> None:
    """Remove an empty attempt directory and then its job's, when that is empty too
    (rmdir refuses a directory that is not empty, so this never loses a record)."""
    try:
        attempt_directory.rmdir()
        attempt_directory.parent.rmdir()
    except OSError:
        pass
