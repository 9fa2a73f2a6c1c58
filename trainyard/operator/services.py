"""Model services in the loop: per-replica reconciling, restarts with backoff, readiness.

A training gang lives and dies together (reconcile.py). A service (kind inference,
mode service) does not: its replicas are independent copies of one model, so a replica
that dies is restarted on its own, on the node the core placed it on, after a backoff
that doubles while it keeps dying; the others keep answering. Restarts never consume
`retries` (a service has no end to retry towards); a replica whose program cannot run
at all (exit 2: bad options, or a checkpoint that does not load; executable not found)
fails the job with the loader's words instead of looping. A service never SUCCEEDS:
it runs until cancelled.

Readiness is observed, not assumed: `HealthProber` asks each running replica's
`/healthz` from a thread of its own, and the loop publishes the ready addresses and the
endpoint to the store (`service_endpoints`), from where the API proxies `/predict`.

The restart book is in memory: a restarted loop starts counting afresh (it still
restarts every dead replica; only the backoff restarts from its base).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainyard.operator.backend import WorkerPhase, WorkerStatus
from trainyard.operator.reconcile import (
    Decision,
    RetryPolicy,
    _change,
    _request_stop,
    failure_message,
    is_permanent,
    reconcile_job,
)
from trainyard.operator.rollout import Replica, rollback_for
from trainyard.service_revisions import revision_of
from trainyard.store.scheduling import JobChange, LiveJob
from trainyard.store.states import JobState

log = logging.getLogger(__name__)

US = 1_000_000
# Exit status of `python -m trainyard.worker` for bad options or inputs (a checkpoint
# that does not load): restarting cannot help.
EXIT_BAD_INPUT = 2


def is_service(spec: Mapping[str, Any]) -> bool:
    return spec.get("kind") == "inference" and spec.get("mode") == "service"


def is_batch_inference(spec: Mapping[str, Any]) -> bool:
    return spec.get("kind") == "inference" and spec.get("mode", "batch") != "service"


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Backoff between restarts of one replica: base * 2^(restarts-1), capped; the count
    is forgotten once a replica has stayed up `healthy_seconds`."""

    base_seconds: float = 1.0
    max_seconds: float = 60.0
    healthy_seconds: float = 120.0
    crash_loop_after: int = 3  # restarts in a row before the reason says "crash-looping"

    def delay_us(self, restarts: int) -> int:
        return int(min(self.base_seconds * 2 ** max(restarts - 1, 0), self.max_seconds) * US)


@dataclass(slots=True)
class _Replica:
    restarts: int = 0
    restart_at: int | None = None  # set while a dead replica waits for its restart
    last_failure: str = ""
    up_since: int | None = None


@dataclass
class RestartBook:
    """Per (job, replica index): restarts in a row, and when the next one is due."""

    policy: RestartPolicy = field(default_factory=RestartPolicy)
    _replicas: dict[tuple[str, int], _Replica] = field(default_factory=dict)
    # Per job: what a rollout or a scaling step adds to the job's reason ("rolling to
    # revision 2", "replica 3 waits: ..."), set by service_control.py.
    status: dict[str, str] = field(default_factory=dict)

    def replica(self, job_id: str, index: int) -> _Replica:
        return self._replicas.setdefault((job_id, index), _Replica())

    def forget_job(self, job_id: str) -> None:
        for key in [k for k in self._replicas if k[0] == job_id]:
            del self._replicas[key]
        self.status.pop(job_id, None)

    def jobs(self) -> set[str]:
        return {job_id for job_id, _ in self._replicas}


def reconcile_service(
    job: LiveJob,
    spec: Mapping[str, Any],
    workers: Sequence[WorkerStatus],
    *,
    now_us: int,
    retry: RetryPolicy,
    book: RestartBook,
    log_tail: Any = None,
    launch_error: tuple[str, bool] | None = None,
    runtime_limit: float | None = None,
) -> Decision:
    """Decide for a service job. Stopping, pending, stale attempts and launch errors are
    the training table's rows (reconcile_job); what differs is an ADMITTED/RUNNING
    service's replicas: each dead one is restarted on its own, and none ever succeeds."""
    current = [w for w in workers if w.attempt == job.attempt]
    stale = any(w.attempt != job.attempt for w in workers)
    launch_failed = ""
    if launch_error is not None and job.state is JobState.RUNNING and not launch_error[1]:
        # A replica added to a running service (a surge, an autoscaled one, a restart)
        # could not be created this time: the others serve on, and the next cycle
        # tries again (it is still placed and missing). Never a reason to stop them.
        launch_failed, launch_error = launch_error[0], None
    if (
        job.stop_target is not None
        or job.state is JobState.PENDING
        or stale
        or launch_error is not None
    ):
        return reconcile_job(
            job,
            spec,
            workers,
            now_us=now_us,
            retry=retry,
            log_tail=log_tail,
            launch_error=launch_error,
            runtime_limit=runtime_limit,
        )
    holds = job.placement or {w.index: w.node for w in current if not w.phase.exited}
    # The replicas are the placed indexes (a rollout or autoscaling adds and removes
    # some, service_control.py); a worker whose index left the placement is on its way out.
    indexes = sorted(holds)
    expected = len(indexes)
    decision = Decision(holds=holds)
    change: JobChange | None = None
    by_index = {w.index: w for w in current}
    reasons: list[str] = []
    revision = revision_of(spec)
    revisions = job.replica_revisions or {}
    for index in indexes:
        worker = by_index.get(index)
        replica = book.replica(job.id, index)
        if worker is None:  # never started, or vanished: create it (launch makes what is missing)
            decision.launch = True
            continue
        if worker.phase is WorkerPhase.RUNNING:
            if replica.up_since is None:
                replica.up_since = now_us
            elif now_us - replica.up_since > book.policy.healthy_seconds * US:
                replica.restarts = 0
            continue
        if not worker.phase.exited:
            continue
        # A dead replica. A service replica exiting 0 is dead too: services do not end.
        replica.up_since = None
        if replica.restart_at is None:
            tail = log_tail(index) if log_tail is not None else ""
            words = failure_message(worker, tail)
            if worker.exit_code == EXIT_BAD_INPUT or is_permanent(worker):
                if revisions.get(index, 1) != revision:
                    continue  # being replaced by the current revision (service_control.py)
                rollback = rollback_for(
                    _replicas(indexes, by_index, revisions),
                    revision=revision,
                    failed=index,
                    reason=words,
                )
                if rollback is not None:  # older replicas serve on (service_control.py)
                    decision.rollback = rollback
                    continue
                return _request_stop(
                    job,
                    spec,
                    target=JobState.FAILED,
                    reason=f"replica cannot start: {words}",
                    retry=retry,
                    now_us=now_us,
                    holds=holds,
                    counts_as_failure=False,
                )
            replica.restarts += 1
            replica.restart_at = now_us + book.policy.delay_us(replica.restarts)
            replica.last_failure = failure_message(worker)
            change = change or _change(job)
            delay = (replica.restart_at - now_us) / US
            change.notes.append(
                f"replica {index} died ({replica.last_failure}); restart {replica.restarts} "
                f"in {delay:.0f}s"
            )
        if replica.restart_at <= now_us:
            replica.restart_at = None
            decision.restart.append(index)
            decision.launch = True
        if replica.restarts >= book.policy.crash_loop_after:
            reasons.append(
                f"replica {index} crash-looping: {replica.restarts} restarts in a row, "
                f"last: {replica.last_failure}"
            )
    running = [w for w in current if w.phase is WorkerPhase.RUNNING and w.index in holds]
    if job.state is JobState.ADMITTED and len(running) == expected:
        change = change or _change(job)
        nodes = sorted({w.node for w in running})
        change.transitions.append(
            (JobState.RUNNING, f"all {expected} replicas running on {', '.join(nodes)}")
        )
        change.attempt_running = job.attempt
    if launch_failed:
        reasons.append(f"launching a replica failed, retrying: {launch_failed}")
    if job.state is JobState.RUNNING:
        reason = "; ".join(reasons) or f"{len(running)} of {expected} replicas running"
        if book.status.get(job.id):
            reason = f"{reason}; {book.status[job.id]}"
        if reason != job.reason:
            change = change or _change(job)
            change.values["reason"] = reason
    decision.change = change
    return decision


def _replicas(
    indexes: Sequence[int], by_index: Mapping[int, WorkerStatus], revisions: Mapping[int, int]
) -> list[Replica]:
    return [
        Replica(
            index,
            revisions.get(index, 1),
            exited=index not in by_index or by_index[index].phase.exited,  # serves nothing
        )
        for index in indexes
    ]


# ---------------------------------------------------------------------------- batch


def batch_summary(output_dir: Path, workers: int) -> tuple[int, int] | None:
    """(predicted, errors) summed over the workers' summary files; None if none wrote one."""
    predicted = errors = 0
    found = False
    for index in range(workers):
        try:
            summary = json.loads((output_dir / summary_name(index)).read_text())
        except (OSError, ValueError):
            continue
        found = True
        predicted += int(summary.get("predicted", 0))
        errors += int(summary.get("errors", 0))
    return (predicted, errors) if found else None


def summary_name(index: int) -> str:
    return f"inference-summary-{index}.json"


def annotate_batch_success(change: JobChange, output_dir: Path, workers: int) -> None:
    """'all workers exited 0' -> '...: 98 records predicted, 2 errors' on SUCCEEDED."""
    counts = batch_summary(output_dir, workers)
    if counts is None:
        return
    predicted, errors = counts
    words = f"{predicted} records predicted, {errors} errors (see the output's error lines)"
    for position, (state, reason) in enumerate(change.transitions):
        if state is JobState.SUCCEEDED:
            change.transitions[position] = (state, f"{reason}: {words}")
            change.values["reason"] = words
    if change.attempt_end is not None:
        attempt, outcome, _ = change.attempt_end
        change.attempt_end = (attempt, outcome, words)


# ---------------------------------------------------------------------------- readiness


class HealthProber:
    """Probes replicas' `GET /healthz` from one daemon thread; `ready(addresses)` answers
    from the last results at once (the loop never waits on a replica)."""

    def __init__(
        self,
        *,
        interval_seconds: float = 0.25,
        timeout_seconds: float = 1.0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.interval_seconds = interval_seconds
        self.timeout_seconds = timeout_seconds
        self.on_change = on_change
        self._lock = threading.Lock()
        self._wanted: set[str] = set()
        self._ready: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def ready(self, addresses: Iterable[str]) -> list[str]:
        """The ready ones of `addresses` (which become the set probed from now on)."""
        wanted = set(addresses)
        with self._lock:
            self._wanted = wanted
            self._ready &= wanted
            ready = sorted(self._ready & wanted)
        if wanted and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="health-prober", daemon=True)
            self._thread.start()
        return ready

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            with self._lock:
                wanted = sorted(self._wanted)
            ready = {address for address in wanted if self._healthy(address)}
            with self._lock:
                ready &= self._wanted
                changed = ready != self._ready
                self._ready = ready
            if changed and self.on_change is not None:
                self.on_change()

    def _healthy(self, address: str) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://{address}/healthz", timeout=self.timeout_seconds
            ) as response:
                return bool(response.status == 200)
        except OSError:
            return False
        except Exception:  # an odd reply is "not ready", never a loop crash
            return False


@dataclass
class EndpointPublisher:
    """What the loop last wrote to `service_endpoints`, so it writes only on change."""

    published: dict[str, tuple[str | None, tuple[str, ...]]] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def changes(
        self, current: Mapping[str, tuple[str | None, tuple[str, ...]]]
    ) -> tuple[dict[str, tuple[str | None, tuple[str, ...]]], list[str]]:
        """(rows to write, job ids whose rows to drop)."""
        write = {job: value for job, value in current.items() if self.published.get(job) != value}
        drop = [job for job in self.published if job not in current]
        return write, drop

    def applied(self, write: Mapping[str, Any], drop: Iterable[str]) -> None:
        self.published.update(write)
        for job in drop:
            self.published.pop(job, None)


def service_endpoint(backend: Any, job: LiveJob, spec: Mapping[str, Any]) -> str | None:
    """Where users reach the service: the backend's answer (the Kubernetes Service's DNS
    name and port) or, locally, the control plane's proxy route."""
    endpoint = getattr(backend, "service_endpoint", None)
    if endpoint is not None:
        return endpoint(job.id, job.name, spec)  # type: ignore[no-any-return]
    return f"/v1/jobs/{job.id}/predict"
