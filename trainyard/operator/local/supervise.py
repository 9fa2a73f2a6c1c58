"""The supervisor of one local worker: run its argv, wait, write how it ended.

The local backend starts one of these per worker, as `python -I -S supervise.py STATUS
STARTED`, in a new session. It is what makes the worker survive the server (a server
crash or restart never kills running work) and still leaves an exit status behind for
the next server to read. It is started once per worker, so it is stdlib-only and
import-light (no json, no `signal` module: both pull in enum/re and would double the
start-up cost); the file formats it writes are plain `key=value` lines.

File descriptors given by the backend:
- 0: the control pipe. The backend writes the launch spec, NUL-separated, ending in
  `go`, only after it has written the worker's record file. A pipe that closes before
  `go` (the server died between spawning us and recording us) means: run nothing.
- 1: the notify pipe. One byte `S` once the worker runs, so the backend's watcher marks
  it RUNNING without polling; then closed. Writing to it after the server died is fine.
- 2: the worker's log, already opened (append, 0600) by the backend; the worker's
  stdout and stderr are dups of it, so anything the supervisor itself prints lands
  there too.

Lifecycle:
1. Read the spec up to `go` (else exit 0 having done nothing).
2. Become a child subreaper, so processes the worker orphans (torchrun's trainers, which
   torchrun starts in sessions of their own) are re-parented to us and not to init.
3. Spawn the worker in a process group of its own (pgid = its pid), stdin /dev/null,
   every signal disposition reset to default (the server may ignore SIGPIPE/SIGHUP).
   Write the STARTED marker (the worker's pid = pgid), then notify.
4. SIGTERM/SIGINT/SIGHUP sent to us are forwarded to the worker's group (a no-op-style
   handler: exec resets handlers, so the worker never inherits an ignored SIGTERM). A
   stop that arrives before the worker started cancels the start.
5. Wait for the worker; then kill what it left behind (orphans that became our children)
   and write STATUS atomically: `exit_code`, `signal`, `message`, `ended_at`.
"""

# ruff: noqa: SIM105 - contextlib.suppress would import collections and functools here
import _signal  # the C module; `import signal` costs an enum import per worker
import os
import sys
import time

SPEC_MAGIC = b"trainyard-supervise-1"
GO = b"go"
# Exit codes shells use for "found but not executable" and "not found".
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
# How long a worker's leftover processes get between SIGTERM and SIGKILL after it exited
# by itself (after a signal they are killed at once).
ORPHAN_GRACE_SECONDS = 5.0

_PR_SET_CHILD_SUBREAPER = 36
_SIGNAL_NAMES = {
    1: "SIGHUP",
    2: "SIGINT",
    3: "SIGQUIT",
    4: "SIGILL",
    6: "SIGABRT",
    7: "SIGBUS",
    8: "SIGFPE",
    9: "SIGKILL",
    11: "SIGSEGV",
    13: "SIGPIPE",
    14: "SIGALRM",
    15: "SIGTERM",
}
_FORWARDED = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP)


class _State:
    child: int = 0  # the worker's pid (= its process group) once spawned
    stop_requested: bool = False


def _forward(signum: int, _frame: object) -> None:
    _State.stop_requested = True
    if _State.child:
        try:
            os.killpg(_State.child, signum)
        except OSError:
            pass


def read_spec(fd: int) -> tuple[list[bytes], dict[bytes, bytes], bytes] | None:
    """(argv, env, cwd) from the control pipe, or None when it closed before `go`."""
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    fields = b"".join(chunks).split(b"\0")
    # magic, argc, argv..., envc, env..., cwd, "go", "" (every field is NUL-terminated)
    try:
        if fields[0] != SPEC_MAGIC or fields[-2:] != [GO, b""]:
            return None
        argc = int(fields[1])
        argv = fields[2 : 2 + argc]
        envc = int(fields[2 + argc])
        pairs = fields[3 + argc : 3 + argc + envc]
        cwd = fields[3 + argc + envc]
        if len(fields) != 3 + argc + envc + 3 or not argv:
            return None
    except (IndexError, ValueError):
        return None
    env = {}
    for pair in pairs:
        key, _, value = pair.partition(b"=")
        env[key] = value
    return argv, env, cwd


def encode_spec(argv: list[bytes], env: dict[bytes, bytes], cwd: bytes) -> bytes:
    """The control message `read_spec` parses (used by the backend; kept here so both
    ends of the protocol are in one place)."""
    fields = [SPEC_MAGIC, str(len(argv)).encode(), *argv, str(len(env)).encode()]
    fields += [key + b"=" + value for key, value in env.items()]
    fields += [cwd, GO]
    return b"".join(field + b"\0" for field in fields)


def write_atomic(path: str, text: str) -> None:
    """Write `text` to `path` via a temporary file and rename: readers never see half."""
    temporary = path + ".tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode("utf-8", "surrogateescape"))
    finally:
        os.close(fd)
    os.rename(temporary, path)


def _field(value: object) -> str:
    return "" if value is None else str(value).replace("\\", "\\\\").replace("\n", "\\n")


def write_status(path: str, *, exit_code: int | None, signum: int | None, message: str) -> None:
    write_atomic(
        path,
        f"exit_code={_field(exit_code)}\nsignal={_field(signum)}\n"
        f"message={_field(message)}\nended_at={time.time():.6f}\n",
    )


def _become_subreaper() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    except (OSError, AttributeError) as exc:
        os.write(2, f"trainyard supervisor: not a subreaper ({exc}); orphans may linger\n".encode())


def _resolve(program: bytes, env: dict[bytes, bytes]) -> bytes | None:
    """`program` looked up on the WORKER's PATH (not ours), like execvpe would."""
    if b"/" in program:
        return program
    for directory in env.get(b"PATH", os.defpath.encode()).split(b":"):
        candidate = os.path.join(directory or b".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _exec_failure(program: bytes, exc: OSError) -> tuple[int, str]:
    name = os.fsdecode(program)
    if isinstance(exc, FileNotFoundError):
        return EXIT_NOT_FOUND, f"executable not found: {name}"
    if isinstance(exc, PermissionError):
        return EXIT_NOT_EXECUTABLE, f"permission denied: {name}"
    return EXIT_NOT_EXECUTABLE, f"cannot execute {name}: {exc.strerror or exc}"


def _describe(wait_status: int) -> tuple[int, int | None, str]:
    """(exit code as a shell reports it, signal or None, words) of a wait status."""
    code = os.waitstatus_to_exitcode(wait_status)
    if code >= 0:
        return code, None, f"exited {code}"
    signum = -code
    name = _SIGNAL_NAMES.get(signum, f"signal {signum}")
    return 128 + signum, signum, f"killed by signal {signum} ({name})"


def _children() -> list[int]:
    """Our direct children, from /proc (only called when waitpid says there are some)."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            found.append(int(entry))
    return found


def _reap_orphans(hard: bool) -> None:
    """Kill and reap every process the worker left behind (they are our children now)."""
    deadline = time.monotonic() + (0.0 if hard else ORPHAN_GRACE_SECONDS)
    signalled_term = False
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # no children left: the common case costs one syscall
        if pid:
            continue
        now = time.monotonic()
        signum = _signal.SIGKILL if now >= deadline else _signal.SIGTERM
        if signum == _signal.SIGKILL or not signalled_term:
            for child in _children():
                try:
                    os.kill(child, signum)
                except OSError:
                    pass
            signalled_term = True
        time.sleep(0.05)


def _report(status_path: str, *, exit_code: int | None, signum: int | None, message: str) -> None:
    """write_status, but a full disk is said in the log instead of crashing us (the
    backend then reports the worker lost, with our exit code)."""
    try:
        write_status(status_path, exit_code=exit_code, signum=signum, message=message)
    except OSError as exc:
        os.write(2, f"trainyard supervisor: cannot write {status_path}: {exc}\n".encode())


def supervise(status_path: str, started_path: str) -> int:
    # Handlers first: a stop that arrives while we still read the spec cancels the start.
    for signum in _FORWARDED:
        _signal.signal(signum, _forward)
    spec = read_spec(0)
    if spec is None:
        return 0  # the server went away before recording us: run nothing
    argv, env, cwd = spec
    _become_subreaper()
    if cwd:
        try:
            os.chdir(cwd)
        except OSError as exc:
            _report(status_path, exit_code=None, signum=None, message=f"cwd {cwd!r}: {exc}")
            return EXIT_NOT_EXECUTABLE
    if _State.stop_requested:
        _report(status_path, exit_code=None, signum=None, message="stopped before start")
        return 0
    program = _resolve(argv[0], env)
    try:
        if program is None:
            raise FileNotFoundError(2, "not found", os.fsdecode(argv[0]))
        # Every standard signal back to its default (32+ are libc's or real-time ones).
        reset = {s for s in range(1, 32) if s not in (_signal.SIGKILL, _signal.SIGSTOP)}
        child = os.posix_spawn(
            program,
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, 2, 1),
            ],
            setpgroup=0,
            setsigmask=(),
            setsigdef=reset,
        )
    except OSError as exc:
        code, message = _exec_failure(argv[0], exc)
        os.write(2, f"trainyard: {message}\n".encode())
        _report(status_path, exit_code=code, signum=None, message=message)
        return code
    _State.child = child
    if _State.stop_requested:  # a stop raced the spawn: pass it on now
        _forward(_signal.SIGTERM, None)
    try:
        write_atomic(started_path, f"pid={child}\npgid={child}\nstarted_at={time.time():.6f}\n")
    except OSError as exc:  # a full disk: the worker runs anyway, the notify says so
        os.write(2, f"trainyard supervisor: cannot write {started_path}: {exc}\n".encode())
    try:
        os.write(1, b"S")
    except OSError:
        pass  # the server is gone; the marker file says it all
    devnull = os.open("/dev/null", os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    _, wait_status = os.waitpid(child, 0)
    code, signum, message = _describe(wait_status)
    _reap_orphans(hard=signum is not None or _State.stop_requested)
    _report(status_path, exit_code=code, signum=signum, message=message)
    # Our own exit code is the worker's too: a backend that is our parent still learns
    # it when the status file could not be written.
    return min(code, 255)


def _start_time(pid: int) -> int:
    """Clock ticks after boot at which `pid` started (0 when it is already gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return int(stat.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def serve_forks(sock_fd: int) -> int:
    """The fork server: fork a supervisor per request, already warm.

    A fresh interpreter per supervisor costs ~10-15 ms of CPU (most of a `true` job's
    cost on a small machine); a fork of this small, single-threaded process costs well
    under one. A request is one SOCK_SEQPACKET message `STATUS\0STARTED` carrying three
    descriptors (control read end, notify write end, log); the reply is `PID START_TIME`
    carrying the child's pidfd, opened before it could exit, so the backend's identity
    check never races a fast exit. Children reap themselves (SIGCHLD ignored here, set
    back to default in each child). EOF on the socket (the server closed it or died)
    ends the fork server; the supervisors it made live on.
    """
    import ctypes  # noqa: F401 - loaded once here, so children become subreapers for free
    import socket

    sock = socket.socket(fileno=sock_fd)
    _signal.signal(_signal.SIGCHLD, _signal.SIG_IGN)
    while True:
        try:
            message, fds, _flags, _address = socket.recv_fds(sock, 65536, 3)
        except InterruptedError:
            continue
        if not message:
            return 0
        paths = message.decode("utf-8", "surrogateescape").split("\0")
        if len(fds) != 3 or len(paths) != 2:
            for fd in fds:
                os.close(fd)
            sock.send(b"error: a request is two NUL-separated paths and 3 descriptors")
            continue
        pid = os.fork()
        if pid == 0:  # the supervisor
            code = 70
            try:
                sock.close()
                for target, fd in enumerate(fds):
                    os.dup2(fd, target)
                os.closerange(3, 65536)
                _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
                os.setsid()
                code = supervise(paths[0], paths[1])
            except BaseException as exc:
                os.write(2, f"trainyard supervisor failed: {exc!r}\n".encode())
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        try:
            socket.send_fds(sock, [f"{pid} {_start_time(pid)}".encode()], [pidfd])
        finally:
            os.close(pidfd)


if __name__ == "__main__":
    if sys.argv[1:] == ["--fork-server"]:
        os.closerange(3, 65536)  # the socket is fd 0; nothing else of the server's stays
        sys.exit(serve_forks(0))
    os.closerange(3, 65536)  # nothing of the server's leaks into the worker
    sys.exit(supervise(sys.argv[1], sys.argv[2]))
