"""The loop's store functions on SQLite and PostgreSQL: live reads, conditional batched
changes (a stale version never applies), reason-only writes, attempts and the lease."""

from __future__ import annotations

from sqlalchemy import Engine

from trainyard.store import JobState, get_job, list_events, read_transaction, submit_job
from trainyard.store import write_transaction as wt
from trainyard.store.scheduling import (
    AttemptStart,
    JobChange,
    apply_changes,
    attempt_rows,
    lease_holder,
    load_live_jobs,
    release_lease,
    try_acquire_lease,
)

SPEC = {"name": "j", "kind": "training", "queue": "default", "priority": "normal",
        "workers": 1, "workload": {"command": ["true"]}}  # fmt: skip


def _job(engine: Engine) -> str:
    record, _ = submit_job(engine, owner="alice", spec=SPEC, priority_value=500)
    return record.id


def test_admission_with_attempt_row_and_events(engine: Engine) -> None:
    job_id = _job(engine)
    with read_transaction(engine) as conn:
        (live,) = load_live_jobs(conn)
    change = JobChange(job_id=job_id, version=live.version, state=live.state)
    change.transitions.append((JobState.ADMITTED, "placed on n1"))
    change.values.update(placement={0: "n1"}, attempt=1)
    change.attempt_start = AttemptStart({0: "n1"}, "default", "alice", 1, 1000, 2**30, 0, 0, None)
    with wt(engine) as conn:
        assert apply_changes(conn, [change]) == {job_id}
    with read_transaction(engine) as conn:
        job = get_job(conn, job_id=job_id)
        events = list_events(conn, job_id=job_id)
        (attempt,) = attempt_rows(conn, job_id=job_id)
    assert job.state is JobState.ADMITTED and job.placement == {0: "n1"} and job.attempt == 1
    assert [e.to_state for e in events] == [JobState.PENDING, JobState.ADMITTED]
    assert attempt["attempt"] == 1 and attempt["owner"] == "alice"


def test_a_change_with_a_stale_version_does_not_apply(engine: Engine) -> None:
    job_id = _job(engine)
    stale = JobChange(job_id=job_id, version=99, state=JobState.PENDING)
    stale.transitions.append((JobState.ADMITTED, "x"))
    with wt(engine) as conn:
        assert apply_changes(conn, [stale]) == set()
    with read_transaction(engine) as conn:
        assert get_job(conn, job_id=job_id).state is JobState.PENDING
        assert len(list_events(conn, job_id=job_id)) == 1


def test_an_illegal_transition_does_not_apply(engine: Engine) -> None:
    job_id = _job(engine)
    change = JobChange(job_id=job_id, version=1, state=JobState.PENDING)
    change.transitions.append((JobState.SUCCEEDED, "x"))
    with wt(engine) as conn:
        assert apply_changes(conn, [change]) == set()


def test_reason_only_changes_keep_the_version(engine: Engine) -> None:
    job_id = _job(engine)
    change = JobChange(job_id=job_id, version=1, state=JobState.PENDING, values={"reason": "r"})
    with wt(engine) as conn:
        apply_changes(conn, [change])
    with read_transaction(engine) as conn:
        job = get_job(conn, job_id=job_id)
    assert job.reason == "r" and job.version == 1


def test_changed_since_returns_rows_in_any_state(engine: Engine) -> None:
    job_id = _job(engine)
    with read_transaction(engine) as conn:
        (live,) = load_live_jobs(conn)
    change = JobChange(job_id=job_id, version=1, state=JobState.PENDING)
    change.transitions.append((JobState.CANCELLED, "gone"))
    with wt(engine) as conn:
        apply_changes(conn, [change])
    with read_transaction(engine) as conn:
        assert load_live_jobs(conn) == []
        (changed,) = load_live_jobs(conn, changed_since=live.created_at)
    assert changed.state is JobState.CANCELLED


def test_one_lease_holder_at_a_time_and_takeover_after_expiry(engine: Engine) -> None:
    with wt(engine) as conn:
        assert try_acquire_lease(conn, name="s", holder="a", ttl_us=10**6, wake_address="x:1", at=0)
    with wt(engine) as conn:
        assert not try_acquire_lease(
            conn, name="s", holder="b", ttl_us=10**6, wake_address=None, at=5
        )
        assert try_acquire_lease(conn, name="s", holder="a", ttl_us=10**6, wake_address="x:1", at=5)
    with wt(engine) as conn:  # a's renewal at 5 lasts until 1_000_005
        assert try_acquire_lease(
            conn, name="s", holder="b", ttl_us=10, wake_address="y:2", at=2 * 10**6
        )
        assert lease_holder(conn, name="s")["wake_address"] == "y:2"
        release_lease(conn, name="s", holder="b")
        assert try_acquire_lease(
            conn, name="s", holder="a", ttl_us=10, wake_address=None, at=2 * 10**6
        )
