"""reconcile_job: the loop's per-job decision table, case by case (pure, no I/O)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from trainyard.operator.backend import WorkerPhase, WorkerStatus
from trainyard.operator.reconcile import RetryPolicy, reconcile_job
from trainyard.store.scheduling import LiveJob
from trainyard.store.states import JobState

NOW = 1_000_000_000_000
RETRY = RetryPolicy(backoff_seconds=10, backoff_max_seconds=60)
SPEC = {"workers": 2, "retries": 1}


def job(state: JobState = JobState.RUNNING, **fields: object) -> LiveJob:
    base = LiveJob(
        seq=1, id="j", owner="u", name="n", kind="training", queue="default",
        priority_value=500, state=state, reason=None,
        placement={0: "a", 1: "b"} if state is not JobState.PENDING else None,
        version=3, created_at=NOW - 10**7, started_at=None, attempt=1, failures=0,
        not_before=None, stop_target=None, stop_reason=None, attempt_started_at=NOW - 10**6,
    )  # fmt: skip
    return replace(base, **fields)


def worker(index: int, phase: WorkerPhase, **fields: object) -> WorkerStatus:
    return WorkerStatus("j", fields.pop("attempt", 1), index, "ab"[index], phase, **fields)


def decide(j: LiveJob, workers: list[WorkerStatus], spec: dict | None = None, **kw: object):
    return reconcile_job(j, spec or SPEC, workers, now_us=NOW, retry=RETRY, **kw)


def test_pending_without_workers_is_offered() -> None:
    assert decide(job(JobState.PENDING), []).offer


def test_pending_in_backoff_is_not_offered() -> None:
    d = decide(job(JobState.PENDING, not_before=NOW + 1), [])
    assert not d.offer and d.change is None


def test_pending_with_leftover_workers_stops_them_and_holds_their_nodes() -> None:
    d = decide(job(JobState.PENDING), [worker(0, WorkerPhase.RUNNING, attempt=0)])
    assert d.stop and not d.offer and d.holds == {0: "a"}


def test_admitted_with_missing_workers_launches() -> None:
    d = decide(job(JobState.ADMITTED), [worker(0, WorkerPhase.STARTING)])
    assert d.launch and d.change is None and d.holds == {0: "a", 1: "b"}


def test_admitted_with_all_running_becomes_running() -> None:
    d = decide(job(JobState.ADMITTED), [worker(i, WorkerPhase.RUNNING) for i in (0, 1)])
    assert d.change and [t for t, _ in d.change.transitions] == [JobState.RUNNING]


def test_admitted_whose_workers_all_finished_goes_running_then_succeeded() -> None:
    d = decide(job(JobState.ADMITTED), [worker(i, WorkerPhase.SUCCEEDED) for i in (0, 1)])
    assert [t for t, _ in d.change.transitions] == [JobState.RUNNING, JobState.SUCCEEDED]
    assert d.stop  # the records of the exited workers are dropped after persisting


def test_a_failed_worker_requests_a_retry_while_retries_remain() -> None:
    workers = [worker(0, WorkerPhase.RUNNING), worker(1, WorkerPhase.FAILED, exit_code=3)]
    d = decide(job(), workers, log_tail=lambda i: "Traceback: boom")
    assert d.stop and d.stopping
    values = d.change.values
    assert values["stop_target"] == "PENDING" and values["failures"] == 1
    assert "worker 1 exited 3 on node b" in values["stop_reason"]
    assert "boom" in values["stop_reason"]


def test_the_last_allowed_failure_requests_failed() -> None:
    d = decide(job(failures=1), [worker(0, WorkerPhase.FAILED, exit_code=1)])
    assert d.change.values["stop_target"] == "FAILED"
    assert "after 2 attempts" in d.change.values["stop_reason"]


def test_executable_not_found_fails_without_retry() -> None:
    failed = worker(0, WorkerPhase.FAILED, exit_code=127, message="executable not found: x")
    d = decide(job(), [failed], spec={"workers": 2, "retries": 5})
    assert d.change.values["stop_target"] == "FAILED"


def test_a_vanished_worker_of_a_running_job_is_a_failure() -> None:
    d = decide(job(), [worker(0, WorkerPhase.RUNNING)])
    assert "worker 1 vanished" in d.change.values["stop_reason"]


def test_max_runtime_exceeded_requests_failed() -> None:
    workers = [worker(i, WorkerPhase.RUNNING) for i in (0, 1)]
    d = decide(job(), workers, spec={**SPEC, "max_runtime": "1s"}, runtime_limit=0.5)
    assert d.change.values["stop_target"] == "FAILED"
    assert "max_runtime 1s exceeded" in d.change.values["stop_reason"]


@pytest.mark.parametrize(
    ("target", "states"),
    [
        (JobState.CANCELLED, [JobState.CANCELLED]),
        (JobState.PREEMPTED, [JobState.PREEMPTED, JobState.PENDING]),
        (JobState.PENDING, [JobState.PENDING]),
        (JobState.FAILED, [JobState.FAILED]),
    ],
)
def test_a_stop_completes_once_no_worker_is_left(target: JobState, states: list) -> None:
    stopping = job(stop_target=target, stop_reason="why", failures=1)
    still = decide(stopping, [worker(0, WorkerPhase.RUNNING)])
    assert still.stop and still.change is None and still.stopping
    done = decide(stopping, [])
    assert [t for t, _ in done.change.transitions] == states
    assert done.change.values["stop_target"] is None
    if target is JobState.PENDING:
        assert done.change.values["not_before"] == NOW + RETRY.delay_us(1)


def test_backoff_doubles_and_is_capped() -> None:
    assert [RETRY.delay_us(n) // 10**6 for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]


def test_a_running_gang_keeps_running_and_holds_its_placement() -> None:
    d = decide(job(), [worker(i, WorkerPhase.RUNNING) for i in (0, 1)])
    assert d.change is None and not d.stop and not d.launch
    assert d.holds == {0: "a", 1: "b"}


@pytest.mark.parametrize(
    ("workers", "kw", "reason"),
    [
        # Two workers reported, but the same index twice: worker 1 is gone.
        ([worker(0, WorkerPhase.RUNNING), worker(0, WorkerPhase.RUNNING)], {}, "vanished"),
        # A worker of an earlier attempt beside this one's.
        (
            [worker(0, WorkerPhase.RUNNING), worker(1, WorkerPhase.RUNNING, attempt=0)],
            {},
            "attempt 0 were still running",
        ),
        # All running, but the last launch failed.
        (
            [worker(i, WorkerPhase.RUNNING) for i in (0, 1)],
            {"launch_error": ("no port", False)},
            "launch failed: no port",
        ),
    ],
    ids=["duplicate-index", "stale-attempt", "launch-error"],
)
def test_a_running_gang_that_only_looks_complete_is_not_kept(
    workers: list[WorkerStatus], kw: dict, reason: str
) -> None:
    """The one-pass check for a running gang must not take these for a healthy gang."""
    d = decide(job(), workers, **kw)
    assert d.stop and reason in d.change.values["stop_reason"]
