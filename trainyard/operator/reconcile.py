"""What to do with one job this cycle: store state x what the backend sees -> actions.

A pure function (`reconcile_job`): it reads the job's stored columns, its document and
the workers the backend reports, and returns the store change to persist and the
backend action to take after persisting. It is the table in LOOP.md, row by row:

| store                    | backend                        | action                          |
|--------------------------|--------------------------------|---------------------------------|
| stop requested           | workers left                   | stop them (grace)               |
| stop requested           | none left                      | -> the requested state          |
| PENDING                  | workers of an earlier attempt  | stop them; not offered          |
| PENDING                  | nothing                        | offer to the core (after backoff)|
| ADMITTED / RUNNING       | a worker failed or vanished    | request stop -> retry or FAILED |
| ADMITTED                 | missing workers                | create them                     |
| ADMITTED                 | all running                    | -> RUNNING                      |
| ADMITTED / RUNNING       | all exited 0                   | -> (RUNNING ->) SUCCEEDED       |
| RUNNING                  | past max_runtime               | request stop -> FAILED          |

Every decision names what was observed in its reason ("worker 1 exited 1 on node n").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trainyard.operator.backend import WorkerPhase, WorkerStatus
from trainyard.store.scheduling import JobChange, LiveJob
from trainyard.store.states import JobState

US = 1_000_000


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff between attempts: base * 2^(failures-1), capped."""

    backoff_seconds: float = 10.0
    backoff_max_seconds: float = 300.0

    def delay_us(self, failures: int) -> int:
        delay = self.backoff_seconds * (2 ** max(failures - 1, 0))
        return int(min(delay, self.backoff_max_seconds) * US)


@dataclass(slots=True)
class Decision:
    """The outcome of reconciling one job."""

    change: JobChange | None = None
    launch: bool = False  # create this attempt's missing workers
    stop: bool = False  # stop every worker of the job (any attempt)
    offer: bool = False  # a candidate for the core this cycle
    # Nodes whose resources the job holds for this cycle's snapshot, per worker, and
    # whether it is on its way out (a stopping job is the cheapest victim there is).
    holds: Mapping[int, str] | None = None
    stopping: bool = False
    notes: list[str] = field(default_factory=list)
    # Service replicas (indices) whose exited worker is forgotten before `launch`, so
    # each is started anew on its own (services.py); empty for training gangs.
    restart: list[int] = field(default_factory=list)
    # A service's new revision that cannot run, to roll back (rollout.Rollback).
    rollback: Any = None


def _change(job: LiveJob) -> JobChange:
    return JobChange(job_id=job.id, version=job.version, state=job.state)


def failure_message(worker: WorkerStatus, tail: str = "") -> str:
    """'worker 1 exited 1 on node n: <last lines>' for a reason."""
    what = worker.message or (
        f"exited {worker.exit_code}" if worker.exit_code is not None else "failed"
    )
    text = f"worker {worker.index} {what} on node {worker.node}"
    tail = tail.strip()
    if tail:
        text += f"; last output: {tail[-1500:]}"
    return text


def is_permanent(worker: WorkerStatus) -> bool:
    """A failure that a retry cannot cure (the program does not exist, cannot run)."""
    message = worker.message.lower()
    return message.startswith(("executable not found", "permission denied", "exec format"))


def reconcile_job(
    job: LiveJob,
    spec: Mapping[str, Any],
    workers: Sequence[WorkerStatus],
    *,
    now_us: int,
    retry: RetryPolicy,
    log_tail: Any = None,
    launch_error: tuple[str, bool] | None = None,
    runtime_limit: float | None = None,
) -> Decision:
    """Decide for `job` (see the module table). `log_tail(index) -> str` gives a failed
    worker's last lines; `launch_error` is (reason, permanent) from the last launch."""
    if job.stop_target is not None:
        return _finish_stop(job, workers, retry=retry, now_us=now_us)
    if job.state is JobState.PENDING:
        if workers:
            return Decision(stop=True, holds=_observed(workers), stopping=True)
        if job.not_before is not None and job.not_before > now_us:
            return Decision()
        return Decision(offer=True)
    expected = int(spec.get("workers", 1))
    holds = job.placement or _observed(workers)
    if (
        job.state is JobState.RUNNING
        and launch_error is None
        and workers
        and len(workers) == expected
        and all(w.attempt == job.attempt and w.phase is WorkerPhase.RUNNING for w in workers)
        and len({w.index for w in workers}) == expected
    ):
        # The common case of every running job, every cycle: the whole gang of this
        # attempt runs. The same outcome as the general path below, in one pass.
        return _running_within_limit(job, spec, now_us, retry, holds, runtime_limit)
    current = [w for w in workers if w.attempt == job.attempt]
    stale = [w for w in workers if w.attempt != job.attempt]
    if stale:
        # Workers of an earlier attempt alongside this one: not a state the loop makes
        # (it waits for a gang to be gone before retrying); after a crash, restart clean.
        return _request_stop(
            job,
            spec,
            target=None,
            reason=f"workers of attempt {stale[0].attempt} were still running",
            retry=retry,
            now_us=now_us,
            holds=holds,
        )
    if launch_error is not None:
        reason, permanent = launch_error
        return _request_stop(
            job,
            spec,
            target=JobState.FAILED if permanent else JobState.PENDING,
            reason=f"launch failed: {reason}",
            retry=retry,
            now_us=now_us,
            holds=holds,
            counts_as_failure=False,
        )
    failed = sorted((w for w in current if w.phase is WorkerPhase.FAILED), key=lambda w: w.index)
    if failed:
        first = failed[0]
        tail = log_tail(first.index) if log_tail is not None else ""
        target = JobState.FAILED if is_permanent(first) else None
        return _request_stop(
            job,
            spec,
            target=target,
            reason=failure_message(first, tail),
            retry=retry,
            now_us=now_us,
            holds=holds,
        )
    indices = {w.index for w in current}
    if job.state is JobState.RUNNING and len(indices) < expected:
        missing = sorted(set(range(expected)) - indices)
        return _request_stop(
            job,
            spec,
            target=None,
            reason=f"worker {missing[0]} vanished (its process or pod is gone)",
            retry=retry,
            now_us=now_us,
            holds=holds,
        )
    if len(indices) < expected:  # ADMITTED, gang not complete yet
        return Decision(launch=True, holds=holds)
    if all(w.phase is WorkerPhase.SUCCEEDED for w in current):
        change = _change(job)
        if job.state is JobState.ADMITTED:
            change.transitions.append((JobState.RUNNING, "all workers started"))
            change.attempt_running = job.attempt
        change.transitions.append((JobState.SUCCEEDED, "all workers exited 0"))
        change.attempt_end = (job.attempt, JobState.SUCCEEDED.value, None)
        change.values["placement"] = job.placement
        return Decision(change=change, stop=True)
    running = all(w.phase in (WorkerPhase.RUNNING, WorkerPhase.SUCCEEDED) for w in current)
    if job.state is JobState.ADMITTED:
        if running:
            change = _change(job)
            nodes = sorted({w.node for w in current})
            change.transitions.append(
                (JobState.RUNNING, f"all {expected} workers running on {', '.join(nodes)}")
            )
            change.attempt_running = job.attempt
            return Decision(change=change, holds=holds)
        return Decision(holds=holds)
    return _running_within_limit(job, spec, now_us, retry, holds, runtime_limit)


def _running_within_limit(
    job: LiveJob,
    spec: Mapping[str, Any],
    now_us: int,
    retry: RetryPolicy,
    holds: Mapping[int, str] | None,
    runtime_limit: float | None,
) -> Decision:
    """A RUNNING gang: keep it, unless it is past its max_runtime."""
    started = job.attempt_started_at
    if runtime_limit and started is not None and now_us - started > runtime_limit * US:
        return _request_stop(
            job,
            spec,
            target=JobState.FAILED,
            reason=f"max_runtime {spec.get('max_runtime')} exceeded",
            retry=retry,
            now_us=now_us,
            holds=holds,
        )
    return Decision(holds=holds)


def _observed(workers: Sequence[WorkerStatus]) -> dict[int, str]:
    return {w.index: w.node for w in workers if not w.phase.exited}


def _request_stop(
    job: LiveJob,
    spec: Mapping[str, Any],
    *,
    target: JobState | None,
    reason: str,
    retry: RetryPolicy,
    now_us: int,
    holds: Mapping[int, str] | None,
    counts_as_failure: bool = True,
) -> Decision:
    """Persist 'stop every worker, then move to target' (None: retry if retries remain)."""
    failures = job.failures + (1 if counts_as_failure else 0)
    retries = int(spec.get("retries", 0))
    if target is None:
        target = JobState.PENDING if failures <= retries else JobState.FAILED
    if target is JobState.PENDING and counts_as_failure:
        reason = f"retrying (failure {failures} of {retries} allowed) after: {reason}"
    elif target is JobState.FAILED and counts_as_failure and retries and failures > retries:
        reason = f"{reason} (after {failures} attempts)"
    change = _change(job)
    change.values.update(
        stop_target=target.value,
        stop_reason=reason,
        failures=failures,
        reason=f"stopping: {reason}",
    )
    return Decision(change=change, stop=True, holds=holds, stopping=True)


def _finish_stop(
    job: LiveJob, workers: Sequence[WorkerStatus], *, retry: RetryPolicy, now_us: int
) -> Decision:
    if workers:
        return Decision(stop=True, holds=job.placement or _observed(workers), stopping=True)
    target = job.stop_target
    assert target is not None
    reason = job.stop_reason
    change = _change(job)
    change.values.update(stop_target=None, stop_reason=None)
    outcome = target.value
    if target is JobState.PREEMPTED:
        change.transitions.append((JobState.PREEMPTED, reason))
        change.transitions.append((JobState.PENDING, "requeued after preemption"))
    elif target is JobState.PENDING:
        outcome = JobState.FAILED.value
        change.values["not_before"] = now_us + retry.delay_us(job.failures)
        change.transitions.append((JobState.PENDING, reason))
    else:
        change.transitions.append((target, reason))
    change.values["placement"] = None if target is not JobState.CANCELLED else job.placement
    if target in (JobState.FAILED, JobState.SUCCEEDED):
        change.values["placement"] = job.placement
    change.attempt_end = (job.attempt, outcome, reason)
    return Decision(change=change)
