"""The local backend with real processes: supervisors, workers, torchrun, restarts.

Nothing is mocked except GPUs (no GPU can run here): the GPU test puts a fake
`nvidia-smi` on PATH, and says so. Workers that must stay alive until the test lets
them go block on opening a FIFO, so every wait below is on a condition, never a sleep.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.servers import wait_for
from trainyard.layout import job_output_dir, worker_log_path
from trainyard.operator.backend import GangLaunch, LaunchError, WorkerLaunch, WorkerPhase
from trainyard.operator.launch import build_workers
from trainyard.operator.local import LAUNCH_ID_ENV, LOST_ON_RESTART, LocalBackend
from trainyard.operator.local import backend as local_backend
from trainyard.operator.local.procfs import processes_with_env, read_stat

# Ignores SIGTERM, says so, then waits forever.
STUBBORN = (
    "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    " print('ready', flush=True); signal.pause()"
)
# This file's loopback ports (the worker tests use 27000-27999, the API tests 18000-18099).
PORTS = range(28000, 29000)
REPO_ROOT = Path(__file__).resolve().parents[3]

# Prints what a worker sees, then blocks until the test opens the FIFO named in argv[1]
# (when given) and exits with the code written to it.
ECHO_AND_WAIT = textwrap.dedent(
    """
    import os, sys
    keys = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TRAINYARD_METRICS_PORT",
            "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "TRAINYARD_SECRET_OF_THE_SERVER")
    print("worker-env " + " ".join(f"{k}={os.environ.get(k, '<unset>')}" for k in keys))
    print(f"worker-pid {os.getpid()}", flush=True)
    if len(sys.argv) > 1:
        with open(sys.argv[1]) as fifo:
            sys.exit(int(fifo.read().strip() or 0))
    """
)


class Backends:
    """Creates LocalBackends on one home; at the end, stops and reaps everything left."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.made: list[LocalBackend] = []
        self.wakes = 0

    def new(self, **settings: object) -> LocalBackend:
        settings.setdefault("nvml", False)
        settings.setdefault("gpus", 0)
        backend = LocalBackend(self.home, port_range=PORTS, **settings)  # type: ignore[arg-type]
        backend.start(self._wake)
        self.made.append(backend)
        return backend

    def _wake(self) -> None:
        self.wakes += 1

    def cleanup(self) -> None:
        for backend in self.made:
            backend.close()
        sweeper = LocalBackend(self.home, port_range=PORTS, nvml=False, gpus=0)
        sweeper.start(lambda: None)
        try:
            for job in {worker.job_id for worker in sweeper.workers()}:
                sweeper.stop(job, grace_seconds=0, reason="test cleanup")
            wait_for(lambda: not _live(sweeper), timeout=30, what="test workers to end")
        finally:
            sweeper.close()


def _live(backend: LocalBackend) -> list:
    for job in {worker.job_id for worker in backend.workers()}:
        backend.stop(job, grace_seconds=0, reason="test cleanup")
    return list(backend.workers())


@pytest.fixture
def backends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backends]:
    # Workers import trainyard from this tree; the server's secrets must not reach them.
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    )
    monkeypatch.setenv("TRAINYARD_SECRET_OF_THE_SERVER", "hunter2")
    made = Backends(tmp_path / "home")
    yield made
    made.cleanup()


def _gang(
    backend: LocalBackend,
    job_id: str,
    argvs: Sequence[Sequence[str]],
    *,
    attempt: int = 1,
    gpus: int = 0,
    env: dict[str, str] | None = None,
) -> GangLaunch:
    node = backend.nodes()[0].name
    workers = tuple(
        WorkerLaunch(index=i, node=node, argv=tuple(argv), env=dict(env or {}), gpus=gpus)
        for i, argv in enumerate(argvs)
    )
    return GangLaunch(
        job_id=job_id, attempt=attempt, name=job_id, queue="q", owner="u", workers=workers
    )


def _python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def _of(backend: LocalBackend, job_id: str) -> dict[int, object]:
    return {w.index: w for w in backend.workers() if w.job_id == job_id}


def _all_exited(backend: LocalBackend, job_id: str, count: int) -> Callable[[], bool]:
    def check() -> bool:
        workers = _of(backend, job_id)
        return len(workers) == count and all(w.phase.exited for w in workers.values())  # type: ignore[attr-defined]

    return check


def _log(home: Path, job_id: str, index: int) -> str:
    path = worker_log_path(home, job_id, index)
    return path.read_text() if path.exists() else ""


def _output(home: Path, job_id: str, index: int) -> str:
    """What the worker wrote (the log without the backend's header lines, which quote
    the argv and so would match anything the program prints)."""
    lines = _log(home, job_id, index).splitlines()
    return "\n".join(line for line in lines if not line.startswith("==== trainyard:"))


def _log_has(home: Path, job_id: str, index: int, text: str) -> Callable[[], bool]:
    return lambda: text in _output(home, job_id, index)


def _fifo(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    os.mkfifo(path)
    return path


def _release(fifo: Path, code: int = 0) -> None:
    """Let the worker blocked on `fifo` go, exiting `code` (blocks until it opened it)."""
    with open(fifo, "w") as writer:
        writer.write(str(code))


def _run_dir(home: Path, job_id: str) -> Path:
    return home / "run" / job_id


def _started_pid(home: Path, job_id: str, index: int, attempt: int = 1) -> int:
    text = (_run_dir(home, job_id) / f"attempt-{attempt}" / f"worker-{index}.started").read_text()
    return int(dict(line.split("=", 1) for line in text.splitlines())["pid"])


def _record(home: Path, job_id: str, index: int, attempt: int = 1) -> dict:
    return json.loads(
        (_run_dir(home, job_id) / f"attempt-{attempt}" / f"worker-{index}.json").read_text()
    )


def _gone(pid: int) -> bool:
    stat_ = read_stat(pid)
    return stat_ is None or stat_.state in ("Z", "X")


def test_a_two_worker_command_gang_succeeds_with_its_env_and_logs(backends: Backends) -> None:
    backend = backends.new()
    node = backend.nodes()[0].name
    address, port = backend.rendezvous("job-ok", 1)
    spec = {
        "workers": 2,
        "workload": {"command": _python(ECHO_AND_WAIT)},
        "resources": {"cpu": "1"},
    }
    workers = build_workers(
        job_id="job-ok",
        name="ok",
        kind="training",
        spec=spec,
        attempt=1,
        placement={0: node, 1: node},
        rendezvous=(address, port),
        output_dir=str(job_output_dir(backends.home, "job-ok")),
        runtime=backend.runtime(),
    )
    backend.launch(GangLaunch("job-ok", 1, "ok", "q", "u", workers))

    wait_for(_all_exited(backend, "job-ok", 2), timeout=60, what="both workers to exit")
    statuses = _of(backend, "job-ok")
    metrics_ports = set()
    for index, status in statuses.items():
        assert status.phase == WorkerPhase.SUCCEEDED and status.exit_code == 0  # type: ignore[attr-defined]
        metrics_port = status.metrics_address.split(":")[1]  # type: ignore[attr-defined]
        metrics_ports.add(metrics_port)
        log = _log(backends.home, "job-ok", index)
        assert f"job job-ok attempt 1 worker {index}" in log.splitlines()[0]  # the header
        assert (
            f"RANK={index} WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT={port} "
            f"TRAINYARD_METRICS_PORT={metrics_port} CUDA_VISIBLE_DEVICES=<unset>"
        ) in log
        assert "hunter2" not in log  # the server's environment stays the server's
        assert "worker-pid" in backend.log_tail("job-ok", index, lines=1)
    assert len(metrics_ports) == 2  # a port block per worker
    assert backends.wakes > 0
    # The rendezvous is the attempt's, not the call's: stable for any backend on the home.
    assert backends.new().rendezvous("job-ok", 1) == (address, port)
    assert backend.rendezvous("job-ok", 2) != (address, port)

    backend.stop("job-ok", grace_seconds=5, reason="done")
    assert _of(backend, "job-ok") == {}
    attempt_dir = _run_dir(backends.home, "job-ok") / "attempt-1"
    assert not list(attempt_dir.glob("worker-*")) and not (attempt_dir / "gang.json").exists()
    wait_for(lambda: not attempt_dir.exists(), timeout=10, what="pruning")
    backend.stop("job-ok", grace_seconds=5, reason="done")  # idempotent
    assert "worker-pid" in backend.log_tail("job-ok", 0)  # logs outlive the records


def test_exit_code_3_is_a_failure_with_that_code(backends: Backends) -> None:
    backend = backends.new()
    backend.launch(_gang(backend, "job-three", [_python("raise SystemExit(3)")]))
    wait_for(_all_exited(backend, "job-three", 1), timeout=30, what="the worker to exit")
    status = _of(backend, "job-three")[0]
    assert status.phase == WorkerPhase.FAILED  # type: ignore[attr-defined]
    assert status.exit_code == 3 and status.message == "exited 3"  # type: ignore[attr-defined]


def test_an_executable_that_does_not_exist_fails_with_a_clear_message(
    backends: Backends, tmp_path: Path
) -> None:
    backend = backends.new()
    not_executable = tmp_path / "script.sh"
    not_executable.write_text("#!/bin/sh\necho hi\n")
    backend.launch(_gang(backend, "job-missing", [["trainyard-no-such-program", "--x"]]))
    backend.launch(_gang(backend, "job-denied", [[str(not_executable)]]))
    wait_for(_all_exited(backend, "job-missing", 1), timeout=30, what="the missing one to fail")
    wait_for(_all_exited(backend, "job-denied", 1), timeout=30, what="the denied one to fail")

    missing = _of(backend, "job-missing")[0]
    assert missing.phase == WorkerPhase.FAILED and missing.exit_code == 127  # type: ignore[attr-defined]
    assert missing.message == "executable not found: trainyard-no-such-program"  # type: ignore[attr-defined]
    assert "executable not found: trainyard-no-such-program" in backend.log_tail("job-missing", 0)
    denied = _of(backend, "job-denied")[0]  # no x bit: exec refuses it, even to root
    assert denied.message == f"permission denied: {not_executable}"  # type: ignore[attr-defined]
    assert denied.phase == WorkerPhase.FAILED and denied.exit_code == 126  # type: ignore[attr-defined]


def test_stop_kills_a_worker_that_ignores_sigterm_once_the_grace_is_over(
    backends: Backends,
) -> None:
    backend = backends.new()
    backend.launch(_gang(backend, "job-stubborn", [_python(STUBBORN)]))
    wait_for(_log_has(backends.home, "job-stubborn", 0, "ready"), timeout=30, what="ready")
    pid = _started_pid(backends.home, "job-stubborn", 0)

    stopped_at = time.monotonic()
    backend.stop("job-stubborn", grace_seconds=1.0, reason="cancelled")
    status = _of(backend, "job-stubborn")[0]
    assert status.stopping and status.phase == WorkerPhase.RUNNING  # type: ignore[attr-defined]
    assert _record(backends.home, "job-stubborn", 0)["stop"]["reason"] == "cancelled"
    assert not _gone(pid)  # SIGTERM did nothing to it

    wait_for(lambda: not _of(backend, "job-stubborn"), timeout=30, what="the stop to finish")
    assert time.monotonic() - stopped_at >= 1.0  # killed after the grace, not before
    assert _gone(pid)
    wait_for(lambda: not _run_dir(backends.home, "job-stubborn").exists(), timeout=10, what="prune")


def test_a_restarted_backend_still_kills_on_the_persisted_deadline(backends: Backends) -> None:
    first = backends.new()
    first.launch(_gang(first, "job-deadline", [_python(STUBBORN)]))
    wait_for(_log_has(backends.home, "job-deadline", 0, "ready"), timeout=30, what="ready")
    pid = _started_pid(backends.home, "job-deadline", 0)
    stopped_at = time.monotonic()
    first.stop("job-deadline", grace_seconds=1.5, reason="preempted")
    first.close()  # the server dies right after asking for the stop

    second = backends.new()
    assert _of(second, "job-deadline")[0].stopping  # type: ignore[attr-defined]
    wait_for(lambda: _gone(pid), timeout=30, what="the kill on the old deadline")
    assert time.monotonic() - stopped_at >= 1.5
    wait_for(lambda: not _of(second, "job-deadline"), timeout=30, what="the record to go")


@pytest.mark.slow
def test_stop_of_a_torchrun_gpt_training_checkpoints_and_leaves_no_process(
    backends: Backends,
) -> None:
    pytest.importorskip("torch", reason="needs the `worker` extra")
    backend = backends.new()
    node = backend.nodes()[0].name
    output = job_output_dir(backends.home, "job-gpt")
    spec = {
        "workers": 2,
        "resources": {"cpu": "1"},
        "env": {"OMP_NUM_THREADS": "1"},
        "precision": "fp32",
        "workload": {
            "builtin": "gpt",
            # Checkpoints only every 10^6 steps: one on disk can only come from SIGTERM.
            "args": {
                "steps": 1_000_000,
                "checkpoint_every": 1_000_000,
                "log_every": 1,
                "batch_size": 2,
                "n_layer": 1,
                "n_head": 2,
                "n_embd": 32,
                "block_size": 32,
            },
        },
    }
    workers = build_workers(
        job_id="job-gpt",
        name="gpt",
        kind="training",
        spec=spec,
        attempt=1,
        placement={0: node, 1: node},
        rendezvous=backend.rendezvous("job-gpt", 1),
        output_dir=str(output),
        runtime=backend.runtime(),
    )
    backend.launch(GangLaunch("job-gpt", 1, "gpt", "q", "u", workers))
    wait_for(
        _log_has(backends.home, "job-gpt", 0, "step 3 loss"),
        timeout=240,
        what="training steps in worker 0's log",
    )
    launch_ids = [_record(backends.home, "job-gpt", i)["launch_id"] for i in range(2)]

    backend.stop("job-gpt", grace_seconds=120, reason="cancelled")
    wait_for(lambda: not _of(backend, "job-gpt"), timeout=150, what="the gang to stop")

    from trainyard.worker.checkpoint import list_checkpoints

    checkpoints = list_checkpoints(output)
    assert checkpoints and checkpoints[0][0] >= 3
    summary = json.loads((output / "summary.json").read_text())
    assert summary["preempted"] is True and summary["world_size"] == 2
    assert "stopping at step" in _log(backends.home, "job-gpt", 0)
    for launch_id in launch_ids:  # torchrun's trainers included (they leave its group)
        assert processes_with_env(f"{LAUNCH_ID_ENV}={launch_id}") == []


def test_a_second_backend_adopts_running_workers_and_sees_them_exit(
    backends: Backends, tmp_path: Path
) -> None:
    first = backends.new()
    fifos = [_fifo(tmp_path, "a0"), _fifo(tmp_path, "a1")]
    first.launch(_gang(first, "job-adopt", [_python(ECHO_AND_WAIT, str(f)) for f in fifos]))
    wait_for(
        lambda: (
            all(w.phase == WorkerPhase.RUNNING for w in _of(first, "job-adopt").values())  # type: ignore[attr-defined]
            and len(_of(first, "job-adopt")) == 2
        ),
        timeout=30,
        what="both workers running",
    )
    supervisors = [_record(backends.home, "job-adopt", i)["pid"] for i in range(2)]
    first.close()  # the server is gone; its supervisors are not
    assert not any(_gone(pid) for pid in supervisors)

    backends.wakes = 0
    second = backends.new()
    adopted = _of(second, "job-adopt")
    assert {i: w.phase for i, w in adopted.items()} == {  # type: ignore[attr-defined]
        0: WorkerPhase.RUNNING,
        1: WorkerPhase.RUNNING,
    }
    _release(fifos[0], 0)
    _release(fifos[1], 7)
    wait_for(_all_exited(second, "job-adopt", 2), timeout=30, what="the adopted workers to exit")
    ended = _of(second, "job-adopt")
    assert ended[0].phase == WorkerPhase.SUCCEEDED  # type: ignore[attr-defined]
    assert ended[1].phase == WorkerPhase.FAILED and ended[1].exit_code == 7  # type: ignore[attr-defined]
    assert backends.wakes > 0
    # And a launch of the same attempt by the new server starts nothing again.
    second.launch(_gang(second, "job-adopt", [_python(ECHO_AND_WAIT)] * 2))
    assert _output(backends.home, "job-adopt", 0).count("worker-pid") == 1


def test_a_record_whose_processes_are_gone_without_status_is_lost(
    backends: Backends, tmp_path: Path
) -> None:
    first = backends.new()
    fifo = _fifo(tmp_path, "lost")
    first.launch(_gang(first, "job-lost", [_python(ECHO_AND_WAIT, str(fifo))]))
    wait_for(
        lambda: _log_has(backends.home, "job-lost", 0, "worker-pid")(), timeout=30, what="start"
    )
    worker_pid = _started_pid(backends.home, "job-lost", 0)
    first.close()
    # The supervisor dies without a trace (kill -9); its worker lives on, unsupervised.
    os.kill(_record(backends.home, "job-lost", 0)["pid"], signal.SIGKILL)
    wait_for(lambda: _gone(_record(backends.home, "job-lost", 0)["pid"]), timeout=10, what="kill")
    assert not _gone(worker_pid)

    second = backends.new()
    status = _of(second, "job-lost")[0]
    assert status.phase == WorkerPhase.FAILED  # type: ignore[attr-defined]
    assert status.message.startswith(LOST_ON_RESTART)  # type: ignore[attr-defined]
    wait_for(lambda: _gone(worker_pid), timeout=10, what="the unsupervised worker killed")
    second.stop("job-lost", grace_seconds=0, reason="lost")
    assert _of(second, "job-lost") == {}


def test_launching_twice_starts_one_set_of_processes(backends: Backends, tmp_path: Path) -> None:
    backend = backends.new()
    fifos = [_fifo(tmp_path, "t0"), _fifo(tmp_path, "t1")]
    gang = _gang(backend, "job-twice", [_python(ECHO_AND_WAIT, str(f)) for f in fifos])
    backend.launch(gang)
    records = [_record(backends.home, "job-twice", i) for i in range(2)]
    backend.launch(gang)
    backends.new().launch(gang)  # another server on the same home: still no second copy
    assert [_record(backends.home, "job-twice", i) for i in range(2)] == records
    for fifo in fifos:
        _release(fifo)
    wait_for(_all_exited(backend, "job-twice", 2), timeout=30, what="the workers to exit")
    for index in range(2):
        log = _log(backends.home, "job-twice", index)
        assert log.count("==== trainyard:") == 1
        assert _output(backends.home, "job-twice", index).count("worker-pid") == 1


def test_a_server_killed_mid_gang_then_relaunching_runs_each_worker_once(
    backends: Backends, tmp_path: Path
) -> None:
    """The fault hook kills a real server process right after its first spawn."""
    fifos = [_fifo(tmp_path, "c0"), _fifo(tmp_path, "c1")]
    argvs = [_python(ECHO_AND_WAIT, str(f)) for f in fifos]
    server = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from trainyard.operator.backend import GangLaunch, WorkerLaunch
        from trainyard.operator.local import LocalBackend
        backend = LocalBackend(Path({str(backends.home)!r}), nvml=False, gpus=0,
                               port_range=range({PORTS.start}, {PORTS.stop}))
        backend.start(lambda: None)
        node = backend.nodes()[0].name
        workers = tuple(WorkerLaunch(index=i, node=node, argv=tuple(a), env={{}})
                        for i, a in enumerate({argvs!r}))
        backend.launch(GangLaunch("job-crash", 1, "crash", "q", "u", workers))
        print("launched everything: the fault hook did not fire", flush=True)
        """
    )
    env = {**os.environ, "TRAINYARD_FAULT_KILL_AFTER_SPAWNS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", server], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == -signal.SIGKILL, result.stdout + result.stderr

    backend = backends.new()
    assert set(_of(backend, "job-crash")) == {0}  # worker 1 was never recorded
    backend.launch(_gang(backend, "job-crash", argvs))
    assert set(_of(backend, "job-crash")) == {0, 1}
    for fifo in fifos:
        _release(fifo)
    wait_for(_all_exited(backend, "job-crash", 2), timeout=30, what="the workers to exit")
    assert all(w.phase == WorkerPhase.SUCCEEDED for w in _of(backend, "job-crash").values())  # type: ignore[attr-defined]
    for index in range(2):
        assert _output(backends.home, "job-crash", index).count("worker-pid") == 1


def test_gpus_are_assigned_disjointly_from_a_fake_nvidia_smi(
    backends: Backends, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GPUs cannot run here: detection is mocked with a fake `nvidia-smi` on PATH. The
    assignment (and CUDA_VISIBLE_DEVICES in real worker processes) is real."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    lines = "\n".join(f"{i}, NVIDIA H100 80GB HBM3, GPU-{i:04d}" for i in range(4))
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{lines}\nEOF\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    backend = backends.new(gpus=None)
    node = backend.nodes()[0]
    assert node.gpus == 4 and node.gpu_product == "NVIDIA-H100-80GB-HBM3"

    hold = (
        "import os, signal; env = os.environ.get;"
        " print('CVD=' + env('CUDA_VISIBLE_DEVICES', '<unset>'),"
        " env('CUDA_DEVICE_ORDER', ''), flush=True); signal.pause()"
    )
    backend.launch(_gang(backend, "job-a", [_python(hold)] * 2, gpus=1))
    backend.launch(_gang(backend, "job-b", [_python(hold)], gpus=2))
    backend.launch(_gang(backend, "job-cpu", [_python(hold)], gpus=0))

    def seen(job: str, index: int) -> str:
        wait_for(_log_has(backends.home, job, index, "CVD="), timeout=30, what=f"{job} env")
        output = _output(backends.home, job, index).splitlines()
        line = next(x for x in output if x.startswith("CVD="))
        assert line.endswith(" PCI_BUS_ID")
        return line.split()[0].removeprefix("CVD=")

    a0, a1, b0 = seen("job-a", 0), seen("job-a", 1), seen("job-b", 0)
    sets = [set(a0.split(",")), set(a1.split(",")), set(b0.split(","))]
    assert [len(s) for s in sets] == [1, 1, 2]
    assert set.union(*sets) == {"0", "1", "2", "3"}  # disjoint and all four used
    assert seen("job-cpu", 0) == ""  # a CPU job sees no GPU at all

    with pytest.raises(LaunchError) as full:
        backend.launch(_gang(backend, "job-c", [_python(hold)], gpus=1))
    assert not full.value.permanent and "0 of this machine's 4 are free" in full.value.reason
    assert _of(backend, "job-c") == {}

    backend.stop("job-b", grace_seconds=5, reason="done")
    wait_for(lambda: not _of(backend, "job-b"), timeout=30, what="job-b to stop")
    backend.launch(_gang(backend, "job-c", [_python(hold)], gpus=2))
    assert set(seen("job-c", 0).split(",")) == sets[2]  # job-b's GPUs, now free


def test_an_unwritable_or_full_log_directory_fails_the_launch_not_the_backend(
    backends: Backends,
) -> None:
    backend = backends.new()
    # Root ignores permission bits, so "unwritable" is made portable: a file where the
    # job's log directory should be.
    logs = backends.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "job-nodir").write_text("not a directory")
    with pytest.raises(LaunchError) as blocked:
        backend.launch(_gang(backend, "job-nodir", [_python("print('never')")]))
    assert blocked.value.permanent and str(logs / "job-nodir") in blocked.value.reason

    # The same for the run directory, where the worker's record would go.
    (backends.home / "run" / "job-norun").write_text("not a directory")
    with pytest.raises(LaunchError) as no_run:
        backend.launch(_gang(backend, "job-norun", [_python("print('never')")]))
    assert (
        no_run.value.permanent and str(backends.home / "run" / "job-norun") in no_run.value.reason
    )
    with pytest.raises(LaunchError) as no_gang:
        backend.rendezvous("job-norun", 1)
    assert no_gang.value.permanent

    # A full disk: the kernel's /dev/full answers every write with ENOSPC.
    (logs / "job-full").mkdir(mode=0o700)
    (logs / "job-full" / "worker-0.log").symlink_to("/dev/full")
    with pytest.raises(LaunchError) as full:
        backend.launch(_gang(backend, "job-full", [_python("print('never')")]))
    assert full.value.permanent and "no space left on device" in full.value.reason
    assert "worker-0.log" in full.value.reason
    assert _of(backend, "job-nodir") == _of(backend, "job-norun") == _of(backend, "job-full") == {}
    assert not (_run_dir(backends.home, "job-full") / "attempt-1" / "worker-0.json").exists()

    backend.launch(_gang(backend, "job-fine", [_python("print('fine')")]))
    wait_for(_all_exited(backend, "job-fine", 1), timeout=30, what="the next job to run")
    assert _of(backend, "job-fine")[0].phase == WorkerPhase.SUCCEEDED  # type: ignore[attr-defined]


@pytest.mark.parametrize("fork_server", [True, False], ids=["fork-server", "fresh-interpreter"])
def test_both_ways_of_starting_supervisors_run_stop_and_report(
    backends: Backends, tmp_path: Path, fork_server: bool
) -> None:
    backend = backends.new(fork_server=fork_server)
    fifo = _fifo(tmp_path, "both")
    backend.launch(_gang(backend, "job-ways", [_python(ECHO_AND_WAIT, str(fifo))]))
    backend.launch(_gang(backend, "job-ways-stop", [_python(STUBBORN)]))
    wait_for(_log_has(backends.home, "job-ways-stop", 0, "ready"), timeout=30, what="ready")
    backend.stop("job-ways-stop", grace_seconds=0.2, reason="cancelled")
    _release(fifo, 5)
    wait_for(_all_exited(backend, "job-ways", 1), timeout=30, what="the worker to exit")
    assert _of(backend, "job-ways")[0].exit_code == 5  # type: ignore[attr-defined]
    wait_for(lambda: not _of(backend, "job-ways-stop"), timeout=30, what="the stop")


def test_a_dead_fork_server_is_replaced_and_launches_go_on(backends: Backends) -> None:
    backend = backends.new()
    backend.launch(_gang(backend, "job-fs-1", [_python("print('one')")]))
    fork_server = backend._fork_server
    assert fork_server is not None and fork_server._pid is not None
    old_pid = fork_server._pid
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: _gone(old_pid), timeout=10, what="the fork server to die")
    for n in (2, 3):  # the first falls back to a direct spawn, the next gets a new server
        backend.launch(_gang(backend, f"job-fs-{n}", [_python(f"print('n{n}')")]))
    for n in (1, 2, 3):
        wait_for(_all_exited(backend, f"job-fs-{n}", 1), timeout=30, what=f"job-fs-{n}")
        assert _of(backend, f"job-fs-{n}")[0].phase == WorkerPhase.SUCCEEDED  # type: ignore[attr-defined]
    assert fork_server._pid not in (None, old_pid)


def test_workers_whose_supervisors_die_while_watched_are_lost_and_their_processes_killed(
    backends: Backends, tmp_path: Path
) -> None:
    """Two supervisors SIGKILLed at once: both workers are reported lost and both
    leftover processes are killed (by one sweep of /proc after the watcher's batch, not
    a scan per worker while holding the backend's lock)."""
    backend = backends.new()
    fifos = [_fifo(tmp_path, f"orphan-{n}") for n in (1, 2)]
    for n, fifo in zip((1, 2), fifos, strict=True):
        backend.launch(_gang(backend, f"job-orphan-{n}", [_python(ECHO_AND_WAIT, str(fifo))]))
    for n in (1, 2):
        wait_for(_log_has(backends.home, f"job-orphan-{n}", 0, "worker-pid"), timeout=30)
    workers = [_started_pid(backends.home, f"job-orphan-{n}", 0) for n in (1, 2)]
    for n in (1, 2):
        os.kill(_record(backends.home, f"job-orphan-{n}", 0)["pid"], signal.SIGKILL)
    for n in (1, 2):
        wait_for(_all_exited(backend, f"job-orphan-{n}", 1), timeout=30, what=f"orphan {n}")
        status = _of(backend, f"job-orphan-{n}")[0]
        assert status.phase == WorkerPhase.FAILED  # type: ignore[attr-defined]
        assert "without an exit status" in status.message  # type: ignore[attr-defined]
    for pid in workers:
        wait_for(lambda pid=pid: _gone(pid), timeout=10, what="the unsupervised worker killed")


def test_close_returns_while_another_thread_holds_the_backend_lock(
    backends: Backends, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shutdown hang: close() used to wait on the backend's lock without a bound, so
    a watcher callback that did not return (it held the lock; here the test holds it in
    its place) kept the loop process from ever exiting. Now close() still stops the
    watcher and the fork server, gives up on the lock after a bound, and returns; the
    worker is not touched (the next backend adopts it)."""
    monkeypatch.setattr(local_backend, "CLOSE_WAIT_SECONDS", 0.2)
    backend = backends.new()
    fifo = _fifo(tmp_path, "held")
    backend.launch(_gang(backend, "job-held", [_python(ECHO_AND_WAIT, str(fifo))]))
    wait_for(_log_has(backends.home, "job-held", 0, "worker-pid"), timeout=30, what="start")
    fork_server = backend._fork_server
    assert fork_server is not None and fork_server._pid is not None
    fork_server_pid = fork_server._pid
    closer = threading.Thread(target=backend.close, name="closer", daemon=True)
    with backend._lock:  # a stuck holder of the lock, as the watcher's callback was
        closer.start()
        wait_for(lambda: not closer.is_alive(), timeout=30, what="close() to return")
    assert _gone(fork_server_pid)
    worker_pid = _started_pid(backends.home, "job-held", 0)
    assert not _gone(worker_pid)  # workers outlive their backend by design
    second = backends.new()
    assert _of(second, "job-held")[0].phase == WorkerPhase.RUNNING  # type: ignore[attr-defined]
    _release(fifo, 0)
    wait_for(_all_exited(second, "job-held", 1), timeout=30, what="the adopted worker")
