"""The local backend: every worker is a process group on this machine, one node.

Each worker runs under its own small supervisor process (supervise.py) in a session of
its own, so workers outlive the server by design: a server crash or restart never
kills work, and the next server adopts what is still running. The crash-safety rests on
one ordering: the worker's record file is written BEFORE its supervisor is allowed to
run it (the 'go' over a pipe). Hence:

- a worker runs only if its record exists, and a launch repeated after a crash finds
  the record and starts no second copy;
- a server that died between spawning a supervisor and recording it leaves nothing
  running (the supervisor sees its pipe close without 'go');
- a restarted server reads every record: a supervisor still alive (same pid, same
  start time, same boot) is watched again; one that is gone left its exit status in a
  status file, or it is reported "lost on restart: no exit status".

The view `workers()` returns is a cache: a watcher thread blocks on the supervisors'
pidfds (and, while workers start, their notify pipes), reaps our own children, reads
status files as workers end, enforces stop deadlines and calls `wake()`.

Test hook: TRAINYARD_FAULT_KILL_AFTER_SPAWNS=N makes the backend SIGKILL its own process
right after the N-th supervisor was spawned, recorded and sent 'go', so the crash test
can kill a server in the middle of launching a gang. Never set it in production.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import resource
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trainyard.layout import PRIVATE_FILE, ensure_private_dir, logs_dir, worker_log_path
from trainyard.machine import Machine
from trainyard.operator.backend import (
    GangLaunch,
    LaunchError,
    WorkerLaunch,
    WorkerPhase,
    WorkerStatus,
)
from trainyard.operator.launch import Runtime
from trainyard.operator.local import ports as port_picker
from trainyard.operator.local import spawn
from trainyard.operator.local.procfs import (
    boot_id,
    is_same_process,
    processes_with_any_env,
    processes_with_env,
    read_stat,
)
from trainyard.operator.local.records import (
    AttemptPaths,
    ExitStatus,
    RecordError,
    StopRequest,
    WorkerRecord,
    gang_ports,
    prune,
    read_gang_port,
    read_started,
    read_status,
    remove_worker_files,
    safe_job_id,
    scan,
    write_atomic,
)
from trainyard.operator.local.watcher import FdWatcher
from trainyard.scheduler.types import Node

log = logging.getLogger(__name__)

FAULT_KILL_AFTER_SPAWNS = "TRAINYARD_FAULT_KILL_AFTER_SPAWNS"
LAUNCH_ID_ENV = "TRAINYARD_LAUNCH_ID"
LOST_ON_RESTART = "lost on restart: no exit status"
# The server's environment is NOT passed to workers (it holds the database URL and
# tokens): only these variables, and every LC_*, under the job's own `env`.
INHERITED_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "LD_LIBRARY_PATH",
    "CUDA_HOME",
    "CUDA_PATH",
)
# After the hard kill, how long a supervisor may take to report before it is killed too.
SUPERVISOR_KILL_AFTER_SECONDS = 10.0
# How often a worker adopted while starting (its notify pipe died with the old server)
# is checked for its started marker.
ADOPTED_START_POLL_SECONDS = 0.25
# How long close() waits for the watcher's current callback and for the backend's lock.
CLOSE_WAIT_SECONDS = 5.0

Key = tuple[str, int, int]  # (job id, attempt, worker index)


@dataclass
class _Worker:
    """One worker as the backend tracks it (mutable; guarded by the backend's lock)."""

    record: WorkerRecord
    paths: AttemptPaths
    phase: WorkerPhase
    pidfd: int | None = None
    notify_fd: int | None = None  # while starting: the supervisor's "S" arrives here
    own_child: bool = False  # spawned by this process: ours to waitpid
    worker_pgid: int | None = None
    exit_code: int | None = None
    message: str = ""
    term_sent: bool = False
    kill_stage: int = 0  # 0: none, 1: worker group SIGKILLed, 2: supervisor SIGKILLed
    poll_started: bool = False  # adopted while STARTING: no notify pipe to wait on

    @property
    def key(self) -> Key:
        return (self.record.job_id, self.record.attempt, self.record.index)

    @property
    def stopping(self) -> bool:
        return self.record.stop is not None

    def status(self) -> WorkerStatus:
        port = self.record.metrics_port
        return WorkerStatus(
            job_id=self.record.job_id,
            attempt=self.record.attempt,
            index=self.record.index,
            node=self.record.node,
            phase=self.phase,
            exit_code=self.exit_code,
            message=self.message,
            stopping=self.stopping,
            metrics_address=f"127.0.0.1:{port}" if port else None,
        )


@dataclass
class _Counters:
    spawns: int = 0
    kill_after: int | None = field(default=None)


@dataclass(slots=True)
class _Plan:
    """One worker of a batch, prepared and holding its GPUs and ports, not yet started."""

    number: int  # which gang of the batch
    gang: GangLaunch
    paths: AttemptPaths
    worker: WorkerLaunch
    gpus: tuple[int, ...]
    metrics_port: int
    env: dict[str, str]
    launch_id: str
    launched_at: float
    log_path: Path
    log_fd: int | None
    started: bool = False  # recorded and sent 'go' (or given up and released)


def _launch_error(what: str, path: Path, exc: OSError) -> LaunchError:
    """A clear, permanent LaunchError for a filesystem failure, naming the path."""
    if exc.errno == errno.ENOSPC:
        cause = "no space left on device"
    elif exc.errno == errno.EDQUOT:
        cause = "disk quota exceeded"
    else:
        cause = exc.strerror or str(exc)
    return LaunchError(f"cannot {what} {path}: {cause}", permanent=True)


def _phase_of(status: ExitStatus) -> WorkerPhase:
    return WorkerPhase.SUCCEEDED if status.exit_code == 0 else WorkerPhase.FAILED


class LocalBackend:
    """This machine as the only node; workers are supervised local process groups."""

    name = "local"
    # The loop hands a cycle's gangs over in batches of this size (see
    # loop.LAUNCH_BUDGET_SECONDS): a batch's supervisors start in one pipelined exchange.
    launch_batch_size = 64

    def __init__(
        self,
        home: Path,
        *,
        node_name: str | None = None,
        cpu_millicores: int | None = None,
        memory_bytes: int | None = None,
        gpus: int | None = None,
        nvml: bool = True,
        nvidia_smi: str | None = None,
        port_range: range = port_picker.DEFAULT_PORT_RANGE,
        inherit_env: Sequence[str] = INHERITED_ENV,
        fork_server: bool = True,
    ) -> None:
        """`cpu_millicores`, `memory_bytes` and `gpus` override what is detected (tests,
        or an administrator reserving part of the machine); `nvml=False` skips NVML and
        asks nvidia-smi (`nvidia_smi`: its path, else found on PATH); `fork_server=False`
        starts every supervisor as a fresh interpreter (see spawn.py)."""
        self.home = Path(home)
        self.machine = Machine.detect(
            name=node_name,
            cpu_millicores=cpu_millicores,
            memory_bytes=memory_bytes,
            gpu_count=gpus,
            nvml=nvml,
            nvidia_smi=nvidia_smi,
        )
        self._node = self.machine.node()
        self._ports = port_picker.usable_range(port_range)
        self._inherit_env = tuple(inherit_env)
        self._rng = random.Random()
        self._lock = threading.Lock()
        self._workers: dict[Key, _Worker] = {}
        self._by_job: dict[str, set[Key]] = {}
        # Directories known to exist (created by us, private): mkdir costs milliseconds.
        self._made_dirs: set[Path] = set()
        # Live workers the watcher's tick must look at (stopping, or adopted while
        # starting): a tick costs O(these), not O(every worker).
        self._attention: set[Key] = set()
        self._rendezvous: dict[tuple[str, int], int] = {}
        # What live workers hold, kept up to date as they start and end, so a launch
        # costs O(its workers), not O(every worker): GPU index -> holder, and every port
        # handed out (metrics blocks and rendezvous) -> holder.
        self._held_gpus: dict[int, Key] = {}
        self._held_ports: dict[int, object] = {}
        # Empty attempt directories to remove off the loop's path (rmdir can take
        # milliseconds on a journaled filesystem).
        self._prune: set[Path] = set()
        # Launch ids of workers lost without their supervisor, to kill leftovers of.
        self._sweep: set[str] = set()
        self._snapshot: tuple[WorkerStatus, ...] | None = ()
        self._wake: Callable[[], None] = lambda: None
        self._dirty = False
        self._watcher: FdWatcher | None = None
        self._fork_server = spawn.ForkServer() if fork_server else None
        self._closed = False
        raw = os.environ.get(FAULT_KILL_AFTER_SPAWNS, "").strip()
        self._counters = _Counters(kill_after=int(raw) if raw.isdigit() else None)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, wake: Callable[[], None]) -> None:
        """Adopt what a previous server left (one scan of run/), then start watching."""
        if self._watcher is not None:
            raise RuntimeError("LocalBackend.start() was already called")
        self._wake = wake
        _raise_open_file_limit()
        ensure_private_dir(self.home / "run")
        self._watcher = FdWatcher(self._tick, name="local-backend-watcher")
        with self._lock:
            for (job_id, attempt), port in gang_ports(self.home).items():
                self._rendezvous[(job_id, attempt)] = port
                self._held_ports[port] = (job_id, attempt)
            for job_id, attempt, index, path in scan(self.home):
                self._adopt(job_id, attempt, index, path)
            self._changed()
        self._watcher.start()
        if self._fork_server is not None:
            try:  # warm before the first launch needs it (it would start one then)
                self._fork_server.start()
            except OSError as exc:
                log.warning("cannot start the fork server now (%s); retried at launch", exc)

    def close(self) -> None:
        """Stop watching. Workers keep running: the next server adopts them.

        Never waits on anything without a bound: the watcher is stopped after the
        callback it runs now (if that one does not return in time, the watcher frees
        its own descriptors when it does), the fork server is closed (it needs none of
        our locks), and the descriptors of watched workers are closed only if the
        backend's lock comes free in time (a process that closes its backend is about
        to exit, which closes them anyway)."""
        if self._closed:
            return
        self._closed = True
        stopped = True
        if self._watcher is not None:
            stopped = self._watcher.close(timeout=CLOSE_WAIT_SECONDS)
        if self._fork_server is not None:
            self._fork_server.close()
        if not stopped:
            log.warning("the watcher is still in a callback; leaving its descriptors open")
            return
        if not self._lock.acquire(timeout=CLOSE_WAIT_SECONDS):
            log.warning("the backend's lock is held; leaving the workers' descriptors open")
            return
        try:
            for worker in self._workers.values():
                for fd in (worker.pidfd, worker.notify_fd):
                    if fd is not None:
                        os.close(fd)
                worker.pidfd = worker.notify_fd = None
        finally:
            self._lock.release()

    # -- the contract ----------------------------------------------------------------

    def nodes(self) -> Sequence[Node]:
        return (self._node,)

    def workers(self) -> Sequence[WorkerStatus]:
        with self._lock:
            if self._snapshot is None:
                self._snapshot = tuple(worker.status() for worker in self._workers.values())
            return self._snapshot

    def runtime(self) -> Runtime:
        """Workers use the server's own interpreter (and so its virtualenv)."""
        return Runtime(
            python=(sys.executable,), torchrun=(sys.executable, "-m", "torch.distributed.run")
        )

    def rendezvous(self, job_id: str, attempt: int) -> tuple[str, int]:
        """("127.0.0.1", port), chosen on the first call and kept in gang.json."""
        paths = self._paths(job_id, attempt)
        with self._lock:
            port = self._rendezvous.get((job_id, attempt))
            if port is None:
                port = self._choose_rendezvous(paths, job_id, attempt)
            return ("127.0.0.1", port)

    def launch(self, gang: GangLaunch) -> None:
        """Start the gang's workers that have no record yet (see the module docstring).

        Raises LaunchError: permanent for what retrying cannot fix (an unwritable or
        full log/run directory, a bad worker spec), transient for what may pass (no
        free GPU or port right now, process limits).
        """
        (outcome,) = self.launch_many([gang])
        if outcome is not None:
            raise outcome

    def launch_many(self, gangs: Sequence[GangLaunch]) -> list[Exception | None]:
        """`launch` for each gang (one outcome each: None or its LaunchError), with every
        supervisor of the batch started in one pipelined exchange with the fork server.

        Per gang, nothing of it is started unless all its missing workers could be
        prepared (ports, GPUs, logs); a worker whose supervisor or record fails is
        aborted before its 'go', and so are the gang's workers after it (those before
        it run and are shown, as `launch` always did: the loop then stops the gang).
        """
        if self._watcher is None or self._closed:
            raise RuntimeError("LocalBackend.launch() needs start() first (and not close())")
        outcomes: list[Exception | None] = [None] * len(gangs)
        with self._lock:
            plans: list[_Plan] = []
            try:
                for number, gang in enumerate(gangs):
                    try:
                        plans.extend(self._plan(number, gang))
                    except Exception as exc:  # that gang's outcome, not the batch's
                        outcomes[number] = exc
                self._start_planned(plans, outcomes)
            except BaseException:
                for plan in plans:
                    if not plan.started:
                        self._unplan(plan)
                raise
            finally:  # workers launched before a failure are real: show them
                self._invalidate()
        return outcomes

    def _plan(self, number: int, gang: GangLaunch) -> list[_Plan]:
        """Everything a gang's missing workers need before their supervisors start,
        with their GPUs and ports held (released again if this raises)."""
        paths = self._paths(gang.job_id, gang.attempt)
        missing = [
            worker
            for worker in gang.workers
            if (gang.job_id, gang.attempt, worker.index) not in self._workers
            and not paths.record(worker.index).exists()
        ]
        if not missing:
            return []
        for worker in missing:
            self._check_worker(gang, worker)
        gpus = self._assign_gpus(gang, missing)
        self._ensure_dirs(paths, gang.job_id)
        plans: list[_Plan] = []
        try:
            for worker in missing:
                plans.append(self._plan_one(number, gang, paths, worker, gpus[worker.index]))
        except BaseException:
            for plan in plans:
                self._unplan(plan)
            raise
        return plans

    def _plan_one(
        self,
        number: int,
        gang: GangLaunch,
        paths: AttemptPaths,
        worker: WorkerLaunch,
        gpus: tuple[int, ...],
    ) -> _Plan:
        index = worker.index
        key = (gang.job_id, gang.attempt, index)
        log_path = worker_log_path(self.home, gang.job_id, index)
        ranks = max(len(gpus), 1)  # torchrun's --nproc_per_node: one metrics port each
        try:
            metrics_port = port_picker.free_block(self._ports, ranks, self._held_ports, self._rng)
        except OSError as exc:
            raise LaunchError(
                f"metrics port for worker {index} of job {gang.job_id}: {exc}"
            ) from exc
        launch_id = uuid.uuid4().hex
        launched_at = time.time()
        log_fd = self._open_log(log_path)
        # Held from now on, so the next worker of this batch gets other GPUs and ports.
        for gpu in gpus:
            self._held_gpus[gpu] = key
        for port in range(metrics_port, metrics_port + ranks):
            self._held_ports[port] = key
        return _Plan(
            number=number,
            gang=gang,
            paths=paths,
            worker=worker,
            gpus=gpus,
            metrics_port=metrics_port,
            env=self._worker_env(worker, gpus, metrics_port, launch_id),
            launch_id=launch_id,
            launched_at=launched_at,
            log_path=log_path,
            log_fd=log_fd,
        )

    def _unplan(self, plan: _Plan) -> None:
        """Give back what a plan that will not start holds (its log stays: it says
        when the launch was tried)."""
        key = (plan.gang.job_id, plan.gang.attempt, plan.worker.index)
        for gpu in plan.gpus:
            if self._held_gpus.get(gpu) == key:
                del self._held_gpus[gpu]
        for port in range(plan.metrics_port, plan.metrics_port + max(len(plan.gpus), 1)):
            if self._held_ports.get(port) == key:
                del self._held_ports[port]
        if plan.log_fd is not None:
            os.close(plan.log_fd)
            plan.log_fd = None

    def _start_planned(self, plans: Sequence[_Plan], outcomes: list[Exception | None]) -> None:
        """Start the planned supervisors (one batch), then per worker: record, 'go',
        watch. A failure fails its gang and aborts that gang's later workers."""
        try:
            self._start_spawned(plans, outcomes)
        finally:
            for plan in plans:
                if plan.log_fd is not None:
                    os.close(plan.log_fd)
                    plan.log_fd = None

    def _start_spawned(self, plans: Sequence[_Plan], outcomes: list[Exception | None]) -> None:
        spawned = spawn.spawn_supervisors(
            [
                spawn.SupervisorRequest(
                    plan.paths.status(plan.worker.index),
                    plan.paths.started(plan.worker.index),
                    plan.log_fd,
                )
                for plan in plans
                if plan.log_fd is not None
            ],
            fork_server=self._fork_server,
        )
        for plan, started in zip(plans, spawned, strict=True):
            gang, index = plan.gang, plan.worker.index
            plan.started = True  # from here on it is started or released below
            if outcomes[plan.number] is not None:  # an earlier worker of the gang failed
                if not isinstance(started, OSError):
                    spawn.abort(started)
                self._unplan(plan)
                continue
            if isinstance(started, OSError):
                self._unplan(plan)
                outcomes[plan.number] = LaunchError(
                    f"cannot start the supervisor of worker {index} of job {gang.job_id}: {started}"
                )
                continue
            try:
                self._start_one(plan, started)
            except LaunchError as exc:
                self._unplan(plan)
                outcomes[plan.number] = exc

    def _start_one(self, plan: _Plan, spawned: spawn.Spawned) -> None:
        """Record the worker, then let it run ('go'): the order the crash-safety rests on."""
        gang, paths, index = plan.gang, plan.paths, plan.worker.index
        record = WorkerRecord(
            job_id=gang.job_id,
            attempt=gang.attempt,
            index=index,
            node=self._node.name,
            launch_id=plan.launch_id,
            pid=spawned.pid,
            pgid=spawned.pid,
            start_time=spawned.start_time,
            boot_id=boot_id(),
            argv=tuple(plan.worker.argv),
            log_path=str(plan.log_path),
            gpus=plan.gpus,
            metrics_port=plan.metrics_port,
            launched_at=plan.launched_at,
        )
        try:
            self._write_log_header(plan)
        except LaunchError:
            spawn.abort(spawned)
            raise
        try:
            write_atomic(paths.record(index), record.to_json())
        except OSError as exc:
            spawn.abort(spawned)
            raise _launch_error("write the worker record", paths.record(index), exc) from exc
        entry = _Worker(
            record=record,
            paths=paths,
            phase=WorkerPhase.STARTING,
            pidfd=spawned.pidfd,
            own_child=spawned.own_child,
        )
        self._add(entry)
        self._hold(entry)
        try:
            spawn.send_go(spawned, plan.worker.argv, plan.env)
        except OSError as exc:  # the supervisor died already; its exit is watched below
            log.warning("worker %s: supervisor gone before 'go' (%s)", entry.key, exc)
        self._watch(entry, notify_fd=spawned.notify_fd)
        self._counters.spawns += 1
        if self._counters.spawns == self._counters.kill_after:
            log.critical(
                "%s=%d reached: killing this process",
                FAULT_KILL_AFTER_SPAWNS,
                self._counters.spawns,
            )
            os.kill(os.getpid(), signal.SIGKILL)

    def stop(self, job_id: str, *, grace_seconds: float, reason: str) -> None:
        """SIGTERM every live worker of the job (once), SIGKILL its group when the grace
        is over (the watcher enforces the persisted deadline), and forget exited ones."""
        now = time.time()
        with self._lock:
            for key in list(self._by_job.get(job_id, ())):
                worker = self._workers[key]
                if worker.phase.exited:
                    self._forget(worker)
                    continue
                kill_at = now + max(grace_seconds, 0.0)
                if worker.record.stop is not None:
                    kill_at = min(kill_at, worker.record.stop.kill_at)
                if worker.record.stop is None or kill_at < worker.record.stop.kill_at:
                    requested = worker.record.stop.requested_at if worker.record.stop else now
                    worker.record = worker.record.with_stop(StopRequest(reason, requested, kill_at))
                    self._persist(worker)
                self._attention.add(worker.key)
                if not worker.term_sent:
                    worker.term_sent = True
                    self._signal_supervisor(worker, signal.SIGTERM)
            self._invalidate()
        if self._watcher is not None:
            self._watcher.poke()

    def forget_worker(self, job_id: str, attempt: int, index: int) -> bool:
        """Drop one EXITED worker's record, so the next `launch` of its gang starts that
        index anew (a service replica restarted on its own, the others untouched).
        A live worker is left alone and False returned."""
        with self._lock:
            worker = self._workers.get((job_id, attempt, index))
            if worker is None:
                return True
            if not worker.phase.exited:
                return False
            self._forget(worker)
            return True

    def stop_worker(
        self, job_id: str, attempt: int, index: int, *, grace_seconds: float, reason: str
    ) -> bool:
        """Stop ONE worker (a model service replica a rolling update or a scale-down
        retires): SIGTERM once, SIGKILL after the grace, its record dropped once it has
        exited. True when nothing of it is left."""
        now = time.time()
        with self._lock:
            worker = self._workers.get((job_id, attempt, index))
            if worker is None:
                return True
            if worker.phase.exited:
                self._forget(worker)
                return True
            if worker.record.stop is None:
                stop = StopRequest(reason, now, now + max(grace_seconds, 0.0))
                worker.record = worker.record.with_stop(stop)
                self._persist(worker)
            self._attention.add(worker.key)
            if not worker.term_sent:
                worker.term_sent = True
                self._signal_supervisor(worker, signal.SIGTERM)
            self._invalidate()
        if self._watcher is not None:
            self._watcher.poke()
        return False

    def log_tail(self, job_id: str, index: int, *, lines: int = 20) -> str:
        try:
            path = worker_log_path(self.home, safe_job_id(job_id), index)
        except ValueError:
            return ""
        return _tail(path, lines)

    # -- launching -------------------------------------------------------------------

    def _paths(self, job_id: str, attempt: int) -> AttemptPaths:
        try:
            return AttemptPaths.of(self.home, job_id, attempt)
        except ValueError as exc:
            raise LaunchError(str(exc), permanent=True) from exc

    def _check_worker(self, gang: GangLaunch, worker: WorkerLaunch) -> None:
        if worker.node != self._node.name:
            raise LaunchError(
                f"worker {worker.index} is placed on node {worker.node!r}; this machine is "
                f"{self._node.name!r}"
            )
        if not worker.argv:
            raise LaunchError(f"worker {worker.index} has an empty argument list", permanent=True)
        for text in (*worker.argv, *worker.env.keys(), *worker.env.values()):
            if "\0" in text:
                raise LaunchError(
                    f"worker {worker.index}: arguments and environment may not contain NUL",
                    permanent=True,
                )

    def _assign_gpus(
        self, gang: GangLaunch, missing: Sequence[WorkerLaunch]
    ) -> dict[int, tuple[int, ...]]:
        """GPU indices per worker: free ones, i.e. held by no live worker of any job."""
        free = [index for index in self.machine.gpu_indices if index not in self._held_gpus]
        wanted = sum(worker.gpus for worker in missing)
        if wanted > len(free):
            raise LaunchError(
                f"job {gang.job_id} needs {wanted} GPU(s) for {len(missing)} worker(s); "
                f"{len(free)} of this machine's {len(self.machine.gpus)} are free"
            )
        assigned = {}
        for worker in missing:
            assigned[worker.index] = tuple(free[: worker.gpus])
            free = free[worker.gpus :]
        return assigned

    def _ensure_dirs(self, paths: AttemptPaths, job_id: str) -> None:
        for directory in (logs_dir(self.home, job_id), paths.directory):
            if directory in self._made_dirs:
                continue
            try:
                ensure_private_dir(directory)
            except OSError as exc:
                raise _launch_error("create the directory", directory, exc) from exc
            self._made_dirs.add(directory)

    def _choose_rendezvous(self, paths: AttemptPaths, job_id: str, attempt: int) -> int:
        port = read_gang_port(paths)  # another backend object on this home chose it already
        if port is not None:
            self._rendezvous[(job_id, attempt)] = port
            self._held_ports[port] = (job_id, attempt)
            return port
        self._ensure_dirs(paths, job_id)
        try:
            port = port_picker.free_block(self._ports, 1, self._held_ports, self._rng)
        except OSError as exc:
            raise LaunchError(f"rendezvous for job {job_id}: {exc}") from exc
        try:
            write_atomic(paths.gang, f'{{"address": "127.0.0.1", "port": {port}}}\n')
        except OSError as exc:
            raise _launch_error("write", paths.gang, exc) from exc
        self._rendezvous[(job_id, attempt)] = port
        self._held_ports[port] = (job_id, attempt)
        return port

    def _worker_env(
        self, worker: WorkerLaunch, gpus: tuple[int, ...], metrics_port: int, launch_id: str
    ) -> dict[str, str]:
        env = {
            name: value
            for name, value in os.environ.items()
            if name in self._inherit_env or name.startswith("LC_")
        }
        env.setdefault("PATH", os.defpath)
        env.update(worker.env)
        env.setdefault("TRAINYARD_METRICS_ADDR", "127.0.0.1")
        env["TRAINYARD_METRICS_PORT"] = str(metrics_port)
        if env.get("TRAINYARD_SERVE") == "1":
            # A model service replica: its own loopback port, shared by /predict,
            # /healthz and /metrics (so `metrics_address` is also where it serves).
            env["TRAINYARD_SERVE_HOST"] = "127.0.0.1"
            env["TRAINYARD_SERVE_PORT"] = str(metrics_port)
        env[LAUNCH_ID_ENV] = launch_id
        if self.machine.gpus:
            # Exactly the assigned GPUs (none for a CPU job), numbered as NVML numbers them.
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in gpus)
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        return env

    def _open_log(self, path: Path) -> int:
        """The worker's log, opened for appending (so an unwritable directory fails the
        launch, not the worker later; the header is written just before its record)."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            try:
                return os.open(path, flags, PRIVATE_FILE)
            except FileNotFoundError:  # its directory was removed behind our back
                ensure_private_dir(path.parent)
                return os.open(path, flags, PRIVATE_FILE)
        except OSError as exc:
            raise _launch_error("open the worker log", path, exc) from exc

    def _write_log_header(self, plan: _Plan) -> None:
        """This attempt's header in the worker's log (a full disk fails the launch here,
        before the record, so nothing runs). Written only for a worker about to be
        recorded: a launch cut short by a crash leaves no header for workers it never
        started, and the relaunch writes theirs once."""
        assert plan.log_fd is not None
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(plan.launched_at))
        # No argv here: the log is the program's output, and a header quoting its
        # arguments would match every grep for them (the record has the argv).
        header = (
            f"==== trainyard: job {plan.gang.job_id} attempt {plan.gang.attempt} worker "
            f"{plan.worker.index} on {self._node.name} at {stamp} ====\n"
        )
        try:
            os.write(plan.log_fd, header.encode())
        except OSError as exc:
            raise _launch_error("write the worker log", plan.log_path, exc) from exc

    # -- watching --------------------------------------------------------------------

    def _watch(self, worker: _Worker, *, notify_fd: int | None) -> None:
        assert self._watcher is not None and worker.pidfd is not None
        key = worker.key
        self._watcher.add(worker.pidfd, lambda: self._on_exit(key))
        if notify_fd is not None:
            worker.notify_fd = notify_fd
            self._watcher.add(notify_fd, lambda: self._on_notify(key))

    def _on_notify(self, key: Key) -> None:
        with self._lock:
            worker = self._workers.get(key)
            if worker is None or worker.notify_fd is None:
                return
            try:
                data = os.read(worker.notify_fd, 64)
            except OSError:
                data = b""
            os.close(worker.notify_fd)
            worker.notify_fd = None
            # No "S" (closed without starting): the exit is reported through the pidfd.
            if b"S" in data and worker.phase == WorkerPhase.STARTING:
                worker.worker_pgid = read_started(worker.paths.started(worker.record.index))
                worker.phase = WorkerPhase.RUNNING
                self._changed()

    def _on_exit(self, key: Key) -> None:
        with self._lock:
            worker = self._workers.get(key)
            if worker is None or worker.pidfd is None:
                return
            os.close(worker.pidfd)
            worker.pidfd = None
            supervisor_status = None
            if worker.own_child:
                with contextlib.suppress(ChildProcessError):
                    _, supervisor_status = os.waitpid(worker.record.pid, os.WNOHANG)
            status = read_status(worker.paths.status(worker.record.index))
            self._finish(worker, status, supervisor_status)

    def _finish(
        self, worker: _Worker, status: ExitStatus | None, supervisor_status: int | None
    ) -> None:
        """Record how an exited worker ended; forget it at once if it was being stopped."""
        self._release(worker)
        if status is not None:
            worker.phase = _phase_of(status)
            worker.exit_code = status.exit_code
            worker.message = status.message
        else:
            worker.phase = WorkerPhase.FAILED
            if supervisor_status is not None:
                # The supervisor exits with the worker's code when it cannot write it down.
                code = os.waitstatus_to_exitcode(supervisor_status)
                worker.exit_code = code if code >= 0 else 128 - code
                how = _wait_words(supervisor_status)
                worker.message = f"lost: its supervisor {how} without an exit status"
            else:
                worker.message = "lost: its supervisor exited without an exit status"
            # Killed by the next tick, outside the lock, with one /proc scan for all
            # the workers lost meanwhile (a scan per worker held the lock for seconds).
            if worker.record.launch_id:
                self._sweep.add(worker.record.launch_id)
                if self._watcher is not None:
                    self._watcher.poke()
        if worker.stopping:
            self._forget(worker)
        self._changed()

    def _kill_unsupervised(self, worker: _Worker) -> int:
        """SIGKILL what is left of a worker whose supervisor is gone (found by its launch
        id in the environment); returns how many processes were killed."""
        if not worker.record.launch_id:
            return 0
        pids = processes_with_env(f"{LAUNCH_ID_ENV}={worker.record.launch_id}")
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if pids:
            log.warning("worker %s: killed %d unsupervised process(es)", worker.key, len(pids))
        return len(pids)

    def _tick(self) -> float | None:
        """Enforce stop deadlines and look for adopted workers' start markers; returns
        the seconds until the next deadline."""
        self._prune_directories()
        self._sweep_unsupervised()
        now = time.time()
        next_due: float | None = None
        with self._lock:
            for key in list(self._attention):
                worker = self._workers.get(key)
                if worker is None or worker.phase.exited:
                    self._attention.discard(key)
                    continue
                if worker.poll_started and worker.phase == WorkerPhase.STARTING:
                    pgid = read_started(worker.paths.started(worker.record.index))
                    if pgid is not None:
                        worker.worker_pgid, worker.phase = pgid, WorkerPhase.RUNNING
                        worker.poll_started = False
                        self._changed()
                    else:
                        next_due = _earliest(next_due, now + ADOPTED_START_POLL_SECONDS)
                due = self._enforce_deadline(worker, now) if worker.stopping else None
                if due is not None:
                    next_due = _earliest(next_due, due)
                elif not (worker.poll_started and worker.phase == WorkerPhase.STARTING):
                    self._attention.discard(key)
            dirty, self._dirty = self._dirty, False
        if dirty:
            try:
                self._wake()
            except Exception:
                log.exception("the wake callback failed")
        return None if next_due is None else next_due - now

    def _sweep_unsupervised(self) -> None:
        """SIGKILL what is left of the workers lost since the last tick (see `_finish`)."""
        with self._lock:
            launch_ids, self._sweep = self._sweep, set()
        if not launch_ids:
            return
        found = processes_with_any_env([f"{LAUNCH_ID_ENV}={launch_id}" for launch_id in launch_ids])
        for marker, pids in found.items():
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            log.warning("%s: killed %d unsupervised process(es)", marker, len(pids))

    def _enforce_deadline(self, worker: _Worker, now: float) -> float | None:
        """Escalate a stop that is due; returns when this worker next needs a look."""
        assert worker.record.stop is not None
        kill_at = worker.record.stop.kill_at
        if worker.kill_stage == 0:
            if now < kill_at:
                return kill_at
            worker.kill_stage = 1
            pgid = worker.worker_pgid or read_started(worker.paths.started(worker.record.index))
            log.info("worker %s: grace period over, SIGKILL", worker.key)
            if pgid is not None:
                worker.worker_pgid = pgid
                with contextlib.suppress(OSError):
                    os.killpg(pgid, signal.SIGKILL)
            else:
                self._signal_supervisor(worker, signal.SIGKILL)
            return kill_at + SUPERVISOR_KILL_AFTER_SECONDS
        if worker.kill_stage == 1 and now >= kill_at + SUPERVISOR_KILL_AFTER_SECONDS:
            worker.kill_stage = 2
            log.warning("worker %s: supervisor did not report; SIGKILL it", worker.key)
            self._signal_supervisor(worker, signal.SIGKILL)
            self._kill_unsupervised(worker)
            return None
        return kill_at + SUPERVISOR_KILL_AFTER_SECONDS if worker.kill_stage == 1 else None

    def _signal_supervisor(self, worker: _Worker, signum: int) -> None:
        """Signal the supervisor through its pidfd (never a reused pid); it forwards
        SIGTERM to the worker's process group, or cancels a worker not yet started."""
        if worker.pidfd is None:
            return
        with contextlib.suppress(ProcessLookupError):  # exited: the watcher reports it
            signal.pidfd_send_signal(worker.pidfd, signum)

    # -- adoption --------------------------------------------------------------------

    def _adopt(self, job_id: str, attempt: int, index: int, path: Path) -> None:
        paths = AttemptPaths(path.parent)
        try:
            record = WorkerRecord.from_json(path.read_text())
        except (OSError, RecordError) as exc:
            log.error("worker record %s is unreadable (%s): reported as lost", path, exc)
            record = _placeholder_record(self.home, job_id, attempt, index, self._node.name)
            entry = _Worker(record, paths, WorkerPhase.FAILED, message=f"{LOST_ON_RESTART} ({exc})")
            self._add(entry)
            return
        entry = _Worker(record=record, paths=paths, phase=WorkerPhase.STARTING)
        entry.term_sent = record.stop is not None  # the stop was persisted before its SIGTERM
        pidfd = _open_if_same(record)
        if pidfd is not None:
            entry.pidfd = pidfd
            entry.worker_pgid = read_started(paths.started(index))
            if entry.worker_pgid is not None:
                entry.phase = WorkerPhase.RUNNING
            else:
                entry.poll_started = True
            self._add(entry)
            self._hold(entry)
            if entry.poll_started or entry.stopping:
                self._attention.add(entry.key)
            self._watch(entry, notify_fd=None)
            return
        # Reap it if it is a zombie child of this very process (an earlier backend object
        # in it), checked to be that process so no other child's exit is ever taken.
        stat = read_stat(record.pid)
        if (
            stat
            and stat.state == "Z"
            and stat.ppid == os.getpid()
            and stat.start_time == record.start_time
        ):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(record.pid, os.WNOHANG)
        status = read_status(paths.status(index))
        if status is None:
            killed = self._kill_unsupervised(entry)
            entry.phase = WorkerPhase.FAILED
            entry.message = LOST_ON_RESTART + (
                f" (killed {killed} unsupervised process(es))" if killed else ""
            )
        else:
            entry.phase, entry.exit_code, entry.message = (
                _phase_of(status),
                status.exit_code,
                status.message,
            )
        if entry.stopping:
            if remove_worker_files(paths, index):
                self._drop_attempt(paths, job_id, attempt)
            return
        self._add(entry)

    # -- bookkeeping -----------------------------------------------------------------

    def _persist(self, worker: _Worker) -> None:
        try:
            write_atomic(worker.paths.record(worker.record.index), worker.record.to_json())
        except OSError as exc:
            # The stop still happens (this server enforces it); only a restart forgets it.
            log.error("worker %s: cannot persist the stop request: %s", worker.key, exc)

    def _add(self, worker: _Worker) -> None:
        self._workers[worker.key] = worker
        self._by_job.setdefault(worker.record.job_id, set()).add(worker.key)

    def _forget(self, worker: _Worker) -> None:
        self._workers.pop(worker.key, None)
        keys = self._by_job.get(worker.record.job_id)
        if keys is not None:
            keys.discard(worker.key)
            if not keys:
                del self._by_job[worker.record.job_id]
        self._attention.discard(worker.key)
        self._release(worker)
        try:
            if remove_worker_files(worker.paths, worker.record.index):
                self._drop_attempt(worker.paths, worker.record.job_id, worker.record.attempt)
        except OSError as exc:
            log.warning("worker %s: cannot remove its files: %s", worker.key, exc)
        self._invalidate()

    def _drop_attempt(self, paths: AttemptPaths, job_id: str, attempt: int) -> None:
        """The attempt has no worker left: free its rendezvous port, prune its directory."""
        port = self._rendezvous.pop((job_id, attempt), None)
        if port is not None and self._held_ports.get(port) == (job_id, attempt):
            del self._held_ports[port]
        self._prune.add(paths.directory)
        if self._watcher is not None:
            self._watcher.poke()

    def _hold(self, worker: _Worker) -> None:
        for gpu in worker.record.gpus:
            self._held_gpus[gpu] = worker.key
        for port in _metrics_block(worker.record):
            self._held_ports[port] = worker.key

    def _release(self, worker: _Worker) -> None:
        for gpu in worker.record.gpus:
            if self._held_gpus.get(gpu) == worker.key:
                del self._held_gpus[gpu]
        for port in _metrics_block(worker.record):
            if self._held_ports.get(port) == worker.key:
                del self._held_ports[port]

    def _prune_directories(self) -> None:
        """Remove emptied attempt directories, one per lock hold (see `_prune`)."""
        while True:
            with self._lock:
                if not self._prune:
                    return
                # Under the lock: launch() and rendezvous() create and fill directories
                # under it too, so an empty one here is really unused.
                directory = self._prune.pop()
                self._made_dirs.discard(directory)
                prune(directory)

    def _invalidate(self) -> None:
        """The cache changed by the loop's own call: rebuild the snapshot on next read."""
        self._snapshot = None

    def _changed(self) -> None:
        """The cache changed by something observed: rebuild the snapshot and wake the
        loop (after the watcher's current batch, once)."""
        self._snapshot = None
        self._dirty = True


def _metrics_block(record: WorkerRecord) -> range:
    """The ports a worker's ranks serve metrics on: base + local rank."""
    if not record.metrics_port:
        return range(0)
    return range(record.metrics_port, record.metrics_port + max(len(record.gpus), 1))


def _earliest(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)


def _wait_words(wait_status: int) -> str:
    code = os.waitstatus_to_exitcode(wait_status)
    return f"exited {code}" if code >= 0 else f"was killed by signal {-code}"


def _open_if_same(record: WorkerRecord) -> int | None:
    """A pidfd for the record's supervisor when it is still that process, else None."""
    if not is_same_process(record.pid, record.start_time, record.boot_id):
        return None
    try:
        pidfd = os.pidfd_open(record.pid)
    except ProcessLookupError:
        return None
    # The pid could have been reused between the check and the open: check again.
    if not is_same_process(record.pid, record.start_time, record.boot_id):
        os.close(pidfd)
        return None
    return pidfd


def _placeholder_record(
    home: Path, job_id: str, attempt: int, index: int, node: str
) -> WorkerRecord:
    return WorkerRecord(
        job_id=job_id,
        attempt=attempt,
        index=index,
        node=node,
        launch_id="",
        pid=0,
        pgid=0,
        start_time=0,
        boot_id="",
        argv=(),
        log_path=str(worker_log_path(home, job_id, index)),
    )


def _raise_open_file_limit() -> None:
    """One pidfd per live worker: lift the soft descriptor limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _tail(path: Path, lines: int) -> str:
    """The last `lines` lines of a file, read backwards in blocks (logs can be large)."""
    if lines <= 0:
        return ""
    try:
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            position = file.tell()
            data = b""
            while position > 0 and data.count(b"\n") <= lines:
                step = min(65536, position)
                position -= step
                file.seek(position)
                data = file.read(step) + data
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


__all__ = ["LAUNCH_ID_ENV", "LOST_ON_RESTART", "LocalBackend"]
