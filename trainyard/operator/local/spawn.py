"""Starting a worker's supervisor, and the 'go' handshake that lets it run the worker.

`spawn_supervisor` starts `python -I -S supervise.py` in a new session with three
descriptors (see supervise.py): the read end of the control pipe, the write end of the
notify pipe, and the worker's log. The supervisor then waits. The backend writes the
worker's record and only then calls `send_go`; if the backend dies first, the kernel
closes the control pipe and the supervisor exits without running anything.

posix_spawn (vfork + exec), not subprocess.Popen: it costs the same with a large server
process, and it leaves no Popen object behind whose garbage collection would reap the
supervisor before the backend's own waitpid could.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from trainyard.operator.local import supervise
from trainyard.operator.local.procfs import read_stat

SUPERVISOR = Path(supervise.__file__).resolve()
# Signals back to their defaults in the supervisor (the server may ignore some).
_RESET_SIGNALS = frozenset(range(1, 32)) - {signal.SIGKILL, signal.SIGSTOP}


@dataclass(frozen=True, slots=True)
class Spawned:
    """A supervisor waiting for 'go'."""

    pid: int
    pidfd: int  # readable once it exits
    start_time: int  # clock ticks after boot: its identity with the pid
    control_fd: int  # write end of the control pipe (spec + go)
    notify_fd: int  # read end of the notify pipe ("S" once the worker runs)


def _above_stdio(fd: int) -> int:
    """`fd` moved to a number >= 3 (a server with a closed stdin can get 0-2 from pipe())."""
    if fd > 2:
        return fd
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return moved


def supervisor_environment() -> dict[str, str]:
    """The supervisor's own environment: just enough for an isolated interpreter (the
    worker's environment travels over the control pipe, never through ours)."""
    return {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C.UTF-8"}


def spawn_supervisor(*, status_path: Path, started_path: Path, log_fd: int) -> Spawned:
    """Start a supervisor for one worker. OSError when it cannot be started."""
    control_read, control_write = (_above_stdio(fd) for fd in os.pipe())
    notify_read, notify_write = (_above_stdio(fd) for fd in os.pipe())
    log_fd = log_fd if log_fd > 2 else _above_stdio(os.dup(log_fd))
    try:
        pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-I", "-S", str(SUPERVISOR), str(status_path), str(started_path)],
            supervisor_environment(),
            file_actions=[
                (os.POSIX_SPAWN_DUP2, control_read, 0),
                (os.POSIX_SPAWN_DUP2, notify_write, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
            ],
            setsid=True,
            setsigmask=(),
            setsigdef=_RESET_SIGNALS,
        )
    except BaseException:
        for fd in (control_write, notify_read):
            os.close(fd)
        raise
    finally:
        os.close(control_read)
        os.close(notify_write)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        # Cannot happen for our own unreaped child; keep the invariant "no leaked child".
        os.close(control_write)
        os.waitpid(pid, 0)
        os.close(notify_read)
        raise
    stat = read_stat(pid)
    os.set_blocking(notify_read, False)
    return Spawned(
        pid=pid,
        pidfd=pidfd,
        start_time=stat.start_time if stat else 0,
        control_fd=control_write,
        notify_fd=notify_read,
    )


def send_go(spawned: Spawned, argv: Sequence[str], env: Mapping[str, str], cwd: str = "") -> None:
    """Hand the supervisor its worker and let it run. OSError (EPIPE) when the
    supervisor is already gone; the control pipe is closed either way."""
    message = supervise.encode_spec(
        [os.fsencode(part) for part in argv],
        {os.fsencode(key): os.fsencode(value) for key, value in env.items()},
        os.fsencode(cwd),
    )
    try:
        view = memoryview(message)
        while view:
            view = view[os.write(spawned.control_fd, view) :]
    finally:
        os.close(spawned.control_fd)


def abort(spawned: Spawned) -> None:
    """Make a supervisor that has not had 'go' exit without running anything, and reap it."""
    os.close(spawned.control_fd)
    os.waitpid(spawned.pid, 0)
    os.close(spawned.pidfd)
    os.close(spawned.notify_fd)
