"""The loop's process: build the backend and leadership, then cycle until told to stop.

`trainyard serve` starts this as a child process (`python -m trainyard.operator`) so a
cycle's CPU work (the core at 10,000 pending jobs takes ~100 ms) never holds the API's
GIL, and so the API keeps answering while the loop waits on a slow cluster. The child
dies with its parent (PR_SET_PDEATHSIG); workers do not (they run in their own
sessions and are adopted by the next loop).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from trainyard.config import Settings
from trainyard.observability.cycles import CycleRecorder
from trainyard.operator.backend import Backend, Leadership
from trainyard.operator.collector import CollectionPacing
from trainyard.operator.config import retry_policy, scheduler_config_source
from trainyard.operator.estimates import LearnedInputs
from trainyard.operator.lease import StoreLease
from trainyard.operator.loop import SchedulingLoop
from trainyard.operator.retention import CheckpointRetention
from trainyard.operator.wakeup import Wakeup
from trainyard.store import make_engine, migrate

log = logging.getLogger("trainyard.loop")
# Cycles closer together than this are merged: a burst of 1,000 submits becomes a few
# cycles that each admit many jobs, not 1,000 cycles.
MIN_GAP_SECONDS = 0.02


def build_backend(settings: Settings) -> Backend:
    """The configured backend (imported lazily: each pulls its own dependencies)."""
    if settings.backend == "kubernetes":
        from trainyard.operator.kubernetes import KubernetesBackend

        return KubernetesBackend.from_settings(settings)
    from trainyard.operator.local import LocalBackend

    return LocalBackend(
        settings.home,
        cpu_millicores=None if settings.local_cpus is None else settings.local_cpus * 1000,
        memory_bytes=settings.local_memory_bytes,
        gpus=settings.local_gpus,
    )


def build_leadership(settings: Settings, engine: Any, wakeup: Wakeup) -> Leadership:
    store = StoreLease(engine, ttl_seconds=settings.lease_ttl_seconds, wake_address=wakeup.address)
    if settings.backend == "kubernetes":
        # Replicas on one cluster elect through a coordination.k8s.io Lease; the store's
        # row follows the Lease's holder.
        from trainyard.operator.kubernetes import leadership_from_settings

        return leadership_from_settings(settings, store)
    return store


def extra_env_for(settings: Settings) -> Any:
    """The backend-specific environment a worker gets beyond the launch contract's.

    Local backend: `env_from_secret` values read at launch from files under
    $TRAINYARD_HOME/secrets that only the service can read (the store never holds them).
    A missing or unsafe secret fails the launch with the secret and key named; it is not
    retried (someone has to create the file). The Kubernetes backend turns the same field
    into secretKeyRefs in the pod instead.
    """
    if settings.backend != "local":
        return None
    from trainyard.operator.backend import LaunchError
    from trainyard.secrets import SecretError, resolve_local_secret_env

    def secrets_for(spec: Any) -> dict[str, str]:
        try:
            return resolve_local_secret_env(settings.home, spec)
        except SecretError as exc:
            raise LaunchError(f"env_from_secret: {exc}", permanent=True) from exc

    return secrets_for


def run_loop(settings: Settings, stop: threading.Event) -> None:
    """Cycle until `stop` is set: on every wake-up and at least every period."""
    engine = make_engine(settings.resolved_database_url())
    migrate(engine)
    wakeup = Wakeup()
    backend = build_backend(settings)
    leadership = build_leadership(settings, engine, wakeup)
    config = scheduler_config_source(settings)  # quotas re-read when their file changes
    learned = LearnedInputs(engine, config)
    loop = SchedulingLoop(
        engine,
        backend,
        scheduler_config=config,
        retry=retry_policy(settings),
        stop_grace_seconds=settings.stop_grace_seconds,
        leadership=leadership,
        home=settings.home,
        extra_env=extra_env_for(settings),
        learned=learned,
    )
    retention = CheckpointRetention(
        engine,
        backend,
        home=settings.home,
        retention_seconds=settings.checkpoint_retention_seconds,
    )
    backend.start(wakeup.set)
    leadership.start()
    recorder = CycleRecorder(engine)  # the loop's metrics, into the store (~1 write/s)
    failures = 0
    swept_at = 0.0
    collector = CollectionPacing()  # garbage collection between cycles (collector.py)
    collector.start()
    try:
        while not stop.is_set():
            started = time.monotonic()
            deferred = 0
            if leadership.is_leader() and started - swept_at >= settings.retention_sweep_seconds:
                swept_at = started
                try:
                    retention.sweep()
                except Exception:  # retried at the next sweep; scheduling goes on
                    log.exception("checkpoint retention sweep failed")
            if leadership.is_leader():
                try:
                    report = loop.cycle()
                    failures = 0
                    deferred = report.launch_deferred
                    if report.leader:
                        _record(recorder, report)
                    if report.admitted or report.transitions:
                        log.info(
                            "cycle: %d live, %d admitted, %d transitions in %.0f ms",
                            report.live_jobs,
                            len(report.admitted),
                            report.transitions,
                            report.total_s * 1000,
                        )
                except Exception:
                    # The store or the cluster is unreachable, or a bug: back off and retry;
                    # the API keeps serving meanwhile.
                    failures += 1
                    log.exception("scheduling cycle failed (%d in a row)", failures)
                    collector.after_cycle()
                    stop.wait(min(0.5 * 2**failures, 30.0))
                    continue
            collector.after_cycle()  # also as a follower: other threads make garbage too
            elapsed = time.monotonic() - started
            if elapsed < MIN_GAP_SECONDS:
                stop.wait(MIN_GAP_SECONDS - elapsed)
            if deferred:
                continue  # gangs admitted but not launched yet: the next cycle launches them
            wakeup.wait(settings.loop_period_seconds)
    finally:
        collector.stop()
        _flush(recorder)
        learned.close()
        leadership.stop()
        backend.close()
        wakeup.close()
        engine.dispose()


def _record(recorder: CycleRecorder, report: Any) -> None:
    try:
        recorder.record_report(report)
    except Exception:  # the metrics must never cost the loop a cycle
        log.exception("could not record the cycle's metrics")


def _flush(recorder: CycleRecorder) -> None:
    try:
        recorder.flush()
    except Exception:
        log.exception("could not record the last cycles' metrics")


def main() -> None:
    """`python -m trainyard.operator`: the loop alone, configured by TRAINYARD_*."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    _die_with_parent()
    stop = threading.Event()
    _stop_on_signals(stop)
    run_loop(Settings(), stop)
    _exit_if_shutdown_hangs()


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM/SIGINT set `stop`, from a thread of their own, never from a handler.

    A Python signal handler runs in the main thread between two bytecodes of whatever it
    interrupted. One that called `stop.set()` took the Event's lock there, and a second
    SIGTERM arriving while the first handler held it (the serve's terminate and the
    parent-death signal come together) ran a nested handler that waited on that lock
    forever: the orphaned loop stuck "in shutdown" (seen with py-spy: four nested
    request_stop frames blocked in Condition.__enter__, so even the shutdown deadline,
    started after stop.set(), never began). Here the C-level handler only writes the
    signal number to a pipe (signal.set_wakeup_fd); the Python-level handler does
    nothing; a thread reads the pipe and does the rest, however many signals come."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _ignore_here)

    def on_signal() -> None:
        os.read(read_fd, 1)
        stop.set()
        _exit_if_shutdown_hangs()

    threading.Thread(target=on_signal, name="signals", daemon=True).start()


def _ignore_here(*_: object) -> None:
    """The Python-level handler: the wakeup fd carries the signal (see _stop_on_signals)."""


SHUTDOWN_DEADLINE_SECONDS = 15.0


def _exit_if_shutdown_hangs() -> None:
    """A safety net: leave the process after SHUTDOWN_DEADLINE_SECONDS even if an orderly
    shutdown hangs (the orphaned loops once seen were a signal handler deadlocked on a
    lock, see _stop_on_signals; this stays against any other hang). Exiting loses nothing:
    workers outlive the loop by design and are adopted by the next one; the lease expires."""

    def exit_now() -> None:
        time.sleep(SHUTDOWN_DEADLINE_SECONDS)
        log.error("shutdown did not finish in %.0f s; exiting", SHUTDOWN_DEADLINE_SECONDS)
        os._exit(0)

    threading.Thread(target=exit_now, name="shutdown-deadline", daemon=True).start()


def _die_with_parent() -> None:
    """Ask the kernel to SIGTERM this process when the `serve` that started it dies."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except OSError:
        pass
    # The request only covers a parent that dies from now on: one that died while this
    # interpreter was starting (a `serve` stopping as it restarted us) sends nothing.
    parent = os.environ.get(PARENT_ENV)
    if parent and parent.isdigit() and os.getppid() != int(parent):
        os._exit(0)


PARENT_ENV = "TRAINYARD_LOOP_PARENT_PID"
