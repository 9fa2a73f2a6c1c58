"""Starting a worker's supervisor, and the 'go' handshake that lets it run the worker.

A supervisor starts in a new session with three descriptors (see supervise.py): the
read end of the control pipe, the write end of the notify pipe, and the worker's log.
It then waits. The backend writes the worker's record and only then calls `send_go`;
if the backend dies first, the kernel closes the control pipe (only the backend ever
holds its write end) and the supervisor exits without running anything.

Two ways to start one, same supervisor code:
- `ForkServer` (the default): a long-lived `python -I -S supervise.py --fork-server`
  forks each supervisor, warm. A fresh interpreter costs ~10-15 ms of CPU per worker,
  which on a small machine is most of what a short job costs. A cycle's supervisors
  are requested together (`spawn_supervisors`): pipelined, not one round trip each.
- `spawn_supervisor` without one (the fallback when the fork server cannot run):
  posix_spawn of `python -I -S supervise.py STATUS STARTED`. posix_spawn (vfork + exec),
  not subprocess.Popen: it costs the same with a large server process, and leaves no
  Popen object behind whose garbage collection would reap the supervisor first.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from trainyard.operator.local import supervise
from trainyard.operator.local.procfs import read_stat

log = logging.getLogger(__name__)

SUPERVISOR = Path(supervise.__file__).resolve()
FORK_SERVER_TIMEOUT_SECONDS = 30.0
# Requests sent to the fork server ahead of the reply being read. Bounded so that its
# replies never fill our receive buffer while we block sending (each reply is a few
# bytes and one descriptor; the bound keeps both directions far from full).
PIPELINE_DEPTH = 32
# Signals back to their defaults in the supervisor (the server may ignore some).
_RESET_SIGNALS = frozenset(range(1, 32)) - {signal.SIGKILL, signal.SIGSTOP}


@dataclass(frozen=True, slots=True)
class Spawned:
    """A supervisor waiting for 'go'."""

    pid: int
    pidfd: int  # readable once it exits
    own_child: bool  # spawned directly by this process (else forked by the fork server)
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


class ForkServer:
    """The fork server process and the socket to it (see the module docstring).

    Not thread-safe on its own: the backend calls it under its lock. Any failure closes
    it; `spawn_supervisor` then falls back to a direct spawn and the next call starts a
    new fork server.
    """

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the fork server now rather than at the first spawn, so the first
        launch does not wait for an interpreter to start (it warms up meanwhile)."""
        with self._lock:
            if self._sock is None:
                self._start()

    def _start(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        their_fd = _above_stdio(theirs.detach())
        try:
            self._pid = os.posix_spawn(
                sys.executable,
                [sys.executable, "-I", "-S", str(SUPERVISOR), "--fork-server"],
                supervisor_environment(),
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, their_fd, 0),
                    (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
                ],
                setsid=True,
                setsigmask=(),
                setsigdef=_RESET_SIGNALS,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            os.close(their_fd)
        ours.settimeout(FORK_SERVER_TIMEOUT_SECONDS)
        self._sock = ours
        return ours

    def spawn(
        self, status_path: Path, started_path: Path, fds: Sequence[int]
    ) -> tuple[int, int, int]:
        """(pid, start time, pidfd) of a new supervisor holding `fds` as 0, 1, 2."""
        (outcome,) = self.spawn_many([(status_path, started_path, fds)])
        if isinstance(outcome, OSError):
            raise outcome
        return outcome

    def spawn_many(
        self, requests: Sequence[tuple[Path, Path, Sequence[int]]]
    ) -> list[tuple[int, int, int] | OSError]:
        """`spawn` for each request, in order, pipelined: up to PIPELINE_DEPTH requests
        are sent before the first reply is read, so this process and the fork server
        work at the same time instead of taking turns (one round trip per worker was
        most of a launch's wall time). After a failure the fork server is closed and
        every request without a reply gets the OSError; a supervisor it may have forked
        for one of those never gets 'go' (the caller closes the control pipe), so it
        exits having run nothing."""
        results: list[tuple[int, int, int] | OSError] = []
        with self._lock:
            sent = 0
            try:
                sock = self._sock or self._start()
                while len(results) < len(requests):
                    while sent < len(requests) and sent - len(results) < PIPELINE_DEPTH:
                        status_path, started_path, fds = requests[sent]
                        request = os.fsencode(status_path) + b"\0" + os.fsencode(started_path)
                        socket.send_fds(sock, [request], list(fds))
                        sent += 1
                    reply, pidfds, _flags, _address = socket.recv_fds(sock, 256, 1)
                    if not pidfds:
                        raise OSError(f"fork server: {reply.decode(errors='replace') or 'closed'}")
                    pid, start_time = (int(part) for part in reply.split())
                    results.append((pid, start_time, pidfds[0]))
            except OSError as exc:
                self._close_locked()
                results.extend([exc] * (len(requests) - len(results)))
        return results

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._sock is not None:
            self._sock.close()  # EOF: the fork server exits, its supervisors do not
            self._sock = None
        if self._pid is not None:
            _reap(self._pid, timeout=5.0)
            self._pid = None


def _reap(pid: int, *, timeout: float) -> None:
    """Wait for our child `pid`, SIGKILLing it when it does not exit in time."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return
        time.sleep(0.01)


def spawn_supervisor(
    *, status_path: Path, started_path: Path, log_fd: int, fork_server: ForkServer | None = None
) -> Spawned:
    """Start a supervisor for one worker. OSError when it cannot be started."""
    (outcome,) = spawn_supervisors(
        [SupervisorRequest(status_path, started_path, log_fd)], fork_server=fork_server
    )
    if isinstance(outcome, OSError):
        raise outcome
    return outcome


@dataclass(frozen=True, slots=True)
class SupervisorRequest:
    """One supervisor to start: where it writes its status and started marker, and the
    worker's log (the caller's descriptor: it stays the caller's to close)."""

    status_path: Path
    started_path: Path
    log_fd: int


def spawn_supervisors(
    requests: Sequence[SupervisorRequest], *, fork_server: ForkServer | None = None
) -> list[Spawned | OSError]:
    """Start one supervisor per request (same order): through the fork server, pipelined
    (`ForkServer.spawn_many`), each one it could not start directly instead. An OSError
    in the list is a supervisor that could not be started at all."""
    results: list[Spawned | OSError | None] = [None] * len(requests)
    if fork_server is not None and requests:
        pipes: list[_Pipes] = []
        for request in requests:
            try:
                pipes.append(_pipes(request.log_fd))
            except OSError:  # out of descriptors: the rest try the direct way (and say so)
                break
        try:
            outcomes = fork_server.spawn_many(
                [
                    (request.status_path, request.started_path, pipe.theirs)
                    for request, pipe in zip(requests, pipes, strict=False)
                ]
            )
        finally:
            for pipe in pipes:
                pipe.close_theirs()
        for index, (pipe, outcome) in enumerate(zip(pipes, outcomes, strict=True)):
            if isinstance(outcome, OSError):
                # Never reused: a supervisor forked before the failure may hold them,
                # and closing the control pipe is what makes it exit without running.
                pipe.close_ours()
                log.warning("fork server failed (%s); spawning this supervisor directly", outcome)
                continue
            pid, start_time, pidfd = outcome
            os.set_blocking(pipe.notify_read, False)
            results[index] = Spawned(
                pid=pid,
                pidfd=pidfd,
                own_child=False,
                start_time=start_time,
                control_fd=pipe.control_write,
                notify_fd=pipe.notify_read,
            )
    for index, request in enumerate(requests):
        if results[index] is not None:
            continue
        try:
            results[index] = _with_pipes(
                lambda fds, r=request: _spawn_directly(r.status_path, r.started_path, fds),
                request.log_fd,
            )
        except OSError as exc:
            results[index] = exc
    return [result for result in results if result is not None]


@dataclass(slots=True)
class _Pipes:
    """A supervisor's descriptors for one try: `theirs` go to it, the others stay here."""

    control_read: int
    control_write: int
    notify_read: int
    notify_write: int
    log_copy: int
    log_is_copy: bool

    @property
    def theirs(self) -> tuple[int, int, int]:
        return (self.control_read, self.notify_write, self.log_copy)

    def close_theirs(self) -> None:
        os.close(self.control_read)
        os.close(self.notify_write)
        if self.log_is_copy:
            os.close(self.log_copy)

    def close_ours(self) -> None:
        os.close(self.control_write)
        os.close(self.notify_read)


def _pipes(log_fd: int) -> _Pipes:
    """New pipes for one try (nothing left open when one cannot be made)."""
    made: list[int] = []
    try:
        for _ in range(2):
            made.extend(_above_stdio(fd) for fd in os.pipe())
        log_copy = log_fd if log_fd > 2 else _above_stdio(os.dup(log_fd))
    except BaseException:
        for fd in made:
            os.close(fd)
        raise
    control_read, control_write, notify_read, notify_write = made
    return _Pipes(
        control_read, control_write, notify_read, notify_write, log_copy, log_copy != log_fd
    )


def _with_pipes(
    start: Callable[[tuple[int, int, int]], tuple[int, int, int, bool]], log_fd: int
) -> Spawned:
    """One try at starting a supervisor, with pipes of its own: a failed try's pipes are
    never reused, since a half-started supervisor could still be holding them."""
    pipe = _pipes(log_fd)
    try:
        pid, start_time, pidfd, own_child = start(pipe.theirs)
    except BaseException:
        pipe.close_ours()
        raise
    finally:
        pipe.close_theirs()
    os.set_blocking(pipe.notify_read, False)
    return Spawned(
        pid=pid,
        pidfd=pidfd,
        own_child=own_child,
        start_time=start_time,
        control_fd=pipe.control_write,
        notify_fd=pipe.notify_read,
    )


def _spawn_directly(
    status_path: Path, started_path: Path, fds: tuple[int, int, int]
) -> tuple[int, int, int, bool]:
    control_read, notify_write, log_fd = fds
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
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        # Cannot happen for our own unreaped child; keep the invariant "no leaked child".
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    stat = read_stat(pid)
    return pid, stat.start_time if stat else 0, pidfd, True


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
    """Make a supervisor that has not had 'go' exit without running anything (and reap
    it when it is our child)."""
    os.close(spawned.control_fd)
    if spawned.own_child:
        os.waitpid(spawned.pid, 0)
    os.close(spawned.pidfd)
    os.close(spawned.notify_fd)
