"""The supervisor's protocol, and its one promise: no 'go', nothing runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import wait_for
from trainyard.operator.local import spawn, supervise


def test_the_spec_round_trips_and_a_truncated_one_is_refused() -> None:
    argv = [b"python", b"-c", b"print('x=1')"]
    env = {b"A": b"1=2", b"EMPTY": b""}
    message = supervise.encode_spec(argv, env, b"")
    read, write = os.pipe()
    os.write(write, message)
    os.close(write)
    assert supervise.read_spec(read) == (argv, env, b"")
    os.close(read)
    for broken in (message[:-3], message.replace(b"go\0", b"no\0"), b""):
        read, write = os.pipe()
        os.write(write, broken)
        os.close(write)
        assert supervise.read_spec(read) is None
        os.close(read)


def test_a_supervisor_whose_pipe_closes_before_go_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    log = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    spawned = spawn.spawn_supervisor(
        status_path=tmp_path / "status", started_path=tmp_path / "started", log_fd=log
    )
    os.close(log)
    # Half a spec, then the "server" dies (the pipe closes): the worker must not run.
    os.write(
        spawned.control_fd, supervise.encode_spec([b"touch", str(marker).encode()], {}, b"")[:-3]
    )
    spawn.abort(spawned)
    assert not marker.exists()
    assert not (tmp_path / "status").exists() and not (tmp_path / "started").exists()


def test_the_supervisor_imports_only_light_stdlib_modules() -> None:
    """It starts once per worker: json, enum and re would double its start-up cost."""
    directory = str(Path(spawn.SUPERVISOR).parent)
    code = (
        f"import sys; sys.path.insert(0, {directory!r}); import supervise;"
        " print(' '.join(sorted(sys.modules)))"
    )
    modules = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not {"json", "enum", "re", "subprocess", "trainyard"} & set(modules)


def _catches_sigterm(pid: int) -> bool:
    """The supervisor installed its SIGTERM handler (bit 15 of SigCgt in /proc status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


@pytest.mark.parametrize("use_fork_server", [True, False], ids=["fork-server", "fresh"])
def test_a_stop_before_go_cancels_the_start(tmp_path: Path, use_fork_server: bool) -> None:
    fork_server = spawn.ForkServer() if use_fork_server else None
    marker = tmp_path / "ran"
    log = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        spawned = spawn.spawn_supervisor(
            status_path=tmp_path / "status",
            started_path=tmp_path / "started",
            log_fd=log,
            fork_server=fork_server,
        )
        os.close(log)
        wait_for(lambda: _catches_sigterm(spawned.pid), timeout=30, what="its handler")
        signal.pidfd_send_signal(spawned.pidfd, signal.SIGTERM)
        spawn.send_go(spawned, ["touch", str(marker)], {"PATH": os.defpath})
        wait_for(lambda: (tmp_path / "status").exists(), timeout=30, what="its status")
        assert "message=stopped before start" in (tmp_path / "status").read_text()
        assert not marker.exists()
        os.close(spawned.notify_fd)
        os.close(spawned.pidfd)
        if spawned.own_child:
            os.waitpid(spawned.pid, 0)
    finally:
        if fork_server is not None:
            fork_server.close()
