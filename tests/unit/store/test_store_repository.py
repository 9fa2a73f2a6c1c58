"""Repository functions against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update

from trainyard.store import (
    ConcurrentUpdate,
    IdempotencyConflict,
    IllegalTransition,
    JobNotFound,
    JobState,
    get_job,
    head_revision,
    list_active,
    list_events,
    list_jobs,
    list_pending,
    queue_counts,
    read_transaction,
    schema_revision,
    set_placement,
    set_reason,
    submit_job,
    transition_job,
    write_transaction,
)
from trainyard.store.tables import job_events, jobs


def spec(name: str = "job", **overrides: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "training",
        "queue": "default",
        "priority": "normal",
        "workers": 1,
        "resources": {"cpu": "1", "memory": "1Gi", "gpu": 0},
        "workload": {"builtin": "gpt", "args": {}},
        **overrides,
    }


def submit(
    engine: Engine, name: str = "job", *, owner: str = "alice", priority: int = 500, **kw: Any
):
    job, created = submit_job(engine, owner=owner, spec=spec(name, **kw), priority_value=priority)
    assert created
    return job


def move(engine: Engine, job_id: str, *states: JobState, **kwargs: Any):
    job = None
    for state in states:
        with write_transaction(engine) as conn:
            job = transition_job(conn, job_id=job_id, to_state=state, **kwargs)
    return job


def test_migrations_reach_head_and_rerun_is_a_no_op(engine: Engine) -> None:
    from trainyard.store import migrate

    assert schema_revision(engine) == head_revision()
    migrate(engine)
    assert schema_revision(engine) == head_revision()


def test_submit_stores_a_pending_job_with_its_first_event(engine: Engine) -> None:
    job = submit(engine, "first", env={"A": "\u0000nul and \u00e9"})
    with read_transaction(engine) as conn:
        stored = get_job(conn, job_id=job.id)
        events = list_events(conn, job_id=job.id)
    assert stored is not None
    assert stored.state is JobState.PENDING
    assert stored.spec["env"] == {"A": "\u0000nul and \u00e9"}
    assert stored.version == 1
    assert [(e.from_state, e.to_state, e.reason) for e in events] == [
        (None, JobState.PENDING, "submitted")
    ]


def test_retried_submit_with_the_same_key_returns_the_same_job(engine: Engine) -> None:
    first, created = submit_job(
        engine,
        owner="alice",
        spec=spec(),
        priority_value=500,
        idempotency_key="k1",
        request_hash="h",
    )
    again, created_again = submit_job(
        engine,
        owner="alice",
        spec=spec(),
        priority_value=500,
        idempotency_key="k1",
        request_hash="h",
    )
    assert created and not created_again
    assert again.id == first.id
    with read_transaction(engine) as conn:
        assert conn.execute(select(func.count()).select_from(jobs)).scalar_one() == 1


def test_same_key_different_document_is_a_conflict(engine: Engine) -> None:
    submit_job(
        engine,
        owner="alice",
        spec=spec(),
        priority_value=500,
        idempotency_key="k",
        request_hash="a",
    )
    with pytest.raises(IdempotencyConflict):
        submit_job(
            engine,
            owner="alice",
            spec=spec("other"),
            priority_value=500,
            idempotency_key="k",
            request_hash="b",
        )


def test_idempotency_keys_are_per_owner(engine: Engine) -> None:
    a, _ = submit_job(engine, owner="alice", spec=spec(), priority_value=500, idempotency_key="k")
    b, created = submit_job(
        engine, owner="bob", spec=spec(), priority_value=500, idempotency_key="k"
    )
    assert created and a.id != b.id


def test_concurrent_identical_submits_create_one_job(engine: Engine) -> None:
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        try:
            barrier.wait(timeout=30)
            job, created = submit_job(
                engine,
                owner="alice",
                spec=spec(),
                priority_value=500,
                idempotency_key="same",
                request_hash="h",
            )
            results.append((job.id, created))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len({job_id for job_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    with read_transaction(engine) as conn:
        assert conn.execute(select(func.count()).select_from(jobs)).scalar_one() == 1


def test_transitions_write_events_and_timestamps(engine: Engine) -> None:
    job = submit(engine)
    move(engine, job.id, JobState.ADMITTED, placement={0: "node-a"})
    running = move(engine, job.id, JobState.RUNNING, reason="pods running")
    done = move(engine, job.id, JobState.SUCCEEDED, reason="exit 0")
    assert running.started_at is not None and done.finished_at is not None
    assert done.version == 4
    with read_transaction(engine) as conn:
        events = list_events(conn, job_id=job.id)
    assert [(e.from_state, e.to_state) for e in events] == [
        (None, JobState.PENDING),
        (JobState.PENDING, JobState.ADMITTED),
        (JobState.ADMITTED, JobState.RUNNING),
        (JobState.RUNNING, JobState.SUCCEEDED),
    ]
    assert events[-1].reason == "exit 0"


def test_illegal_transition_is_refused_and_leaves_no_trace(engine: Engine) -> None:
    job = submit(engine)
    with pytest.raises(IllegalTransition), write_transaction(engine) as conn:
        transition_job(conn, job_id=job.id, to_state=JobState.SUCCEEDED)
    with read_transaction(engine) as conn:
        stored = get_job(conn, job_id=job.id)
        assert stored is not None and stored.state is JobState.PENDING and stored.version == 1
        assert len(list_events(conn, job_id=job.id)) == 1


def test_unknown_job_is_not_found(engine: Engine) -> None:
    with pytest.raises(JobNotFound), write_transaction(engine) as conn:
        transition_job(conn, job_id="0" * 32, to_state=JobState.ADMITTED)


def test_stale_version_loses(engine: Engine) -> None:
    job = submit(engine)
    with write_transaction(engine) as conn:
        transition_job(conn, job_id=job.id, to_state=JobState.ADMITTED, expected_version=1)
    with pytest.raises(ConcurrentUpdate), write_transaction(engine) as conn:
        transition_job(conn, job_id=job.id, to_state=JobState.CANCELLED, expected_version=1)


def test_conditional_update_refuses_a_writer_that_read_an_old_version(engine: Engine) -> None:
    """Both writers read version 1; the UPDATE ... WHERE version = 1 lets only one write."""
    from trainyard.store.repository import _update_job

    job = submit(engine)
    with write_transaction(engine) as conn:
        transition_job(conn, job_id=job.id, to_state=JobState.ADMITTED)
    # `job` is the stale read (version 1); no expected_version, so only the WHERE guards.
    with pytest.raises(ConcurrentUpdate), write_transaction(engine) as conn:
        _update_job(conn, job=job, expected_version=None, values={"state": "CANCELLED"})
    with read_transaction(engine) as conn:
        stored = get_job(conn, job_id=job.id)
    assert stored is not None and stored.state is JobState.ADMITTED and stored.version == 2


def test_concurrent_cancels_from_threads_move_the_job_once(engine: Engine) -> None:
    job = submit(engine)
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def cancel() -> None:
        barrier.wait(timeout=30)
        try:
            with write_transaction(engine) as conn:
                current = get_job(conn, job_id=job.id)
                assert current is not None
                transition_job(
                    conn,
                    job_id=job.id,
                    to_state=JobState.CANCELLED,
                    expected_version=current.version,
                )
            outcomes.append("moved")
        except (ConcurrentUpdate, IllegalTransition):
            outcomes.append("refused")

    threads = [threading.Thread(target=cancel) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["moved"] + ["refused"] * 5
    with read_transaction(engine) as conn:
        cancelled = conn.execute(
            select(func.count()).select_from(job_events).where(job_events.c.to_state == "CANCELLED")
        ).scalar_one()
    assert cancelled == 1


def test_preempted_job_returns_to_its_place_in_the_queue(engine: Engine) -> None:
    first = submit(engine, "first")
    second = submit(engine, "second")
    third = submit(engine, "third")
    move(engine, first.id, JobState.ADMITTED, JobState.RUNNING)
    with read_transaction(engine) as conn:
        assert [j.name for j in list_pending(conn)] == ["second", "third"]
    move(engine, first.id, JobState.PREEMPTED, JobState.PENDING, reason="preempted by high")
    with read_transaction(engine) as conn:
        pending = list_pending(conn)
        back = get_job(conn, job_id=first.id)
    assert [j.name for j in pending] == ["first", "second", "third"]
    assert back is not None and back.created_at == first.created_at and back.placement is None
    assert {second.id, third.id} <= {j.id for j in pending}


def test_pending_order_is_priority_then_submission(engine: Engine) -> None:
    submit(engine, "low", priority=100)
    submit(engine, "normal-1", priority=500)
    submit(engine, "high", priority=1000)
    submit(engine, "normal-2", priority=500)
    with read_transaction(engine) as conn:
        assert [j.name for j in list_pending(conn)] == ["high", "normal-1", "normal-2", "low"]


def test_keyset_pages_are_newest_first_without_gaps_or_repeats(engine: Engine) -> None:
    names = [f"j{i}" for i in range(7)]
    for name in names:
        submit(engine, name, owner="alice" if name != "j3" else "bob")
    seen: list[str] = []
    before = None
    with read_transaction(engine) as conn:
        while True:
            page = list_jobs(conn, owner="alice", before_seq=before, limit=2)
            seen += [j.name for j in page]
            if len(page) < 2:
                break
            before = page[-1].seq
    assert seen == ["j6", "j5", "j4", "j2", "j1", "j0"]


def test_list_filters_on_state_queue_and_kind(engine: Engine) -> None:
    a = submit(engine, "a")
    submit(engine, "b", kind="inference")
    submit(engine, "c", queue="other")
    move(engine, a.id, JobState.CANCELLED)
    with read_transaction(engine) as conn:
        assert [j.name for j in list_jobs(conn, states=[JobState.CANCELLED])] == ["a"]
        assert [j.name for j in list_jobs(conn, states=[JobState.PENDING])] == ["c", "b"]
        assert [j.name for j in list_jobs(conn, kind="inference")] == ["b"]
        assert [j.name for j in list_jobs(conn, queue="other")] == ["c"]


def test_placement_reason_and_active_jobs(engine: Engine) -> None:
    job = submit(engine)
    with write_transaction(engine) as conn:
        set_reason(conn, job_id=job.id, reason="unschedulable: needs 9 GPUs per node")
    move(engine, job.id, JobState.ADMITTED)
    with write_transaction(engine) as conn:
        placed = set_placement(conn, job_id=job.id, placement={0: "n1", 1: "n2"})
    assert placed.placement == {0: "n1", 1: "n2"}
    with read_transaction(engine) as conn:
        assert [j.id for j in list_active(conn)] == [job.id]
    with pytest.raises(ConcurrentUpdate), write_transaction(engine) as conn:
        set_placement(conn, job_id=job.id, placement=None, expected_version=1)


def test_queue_counts(engine: Engine) -> None:
    a = submit(engine, "a")
    submit(engine, "b")
    submit(engine, "c", queue="other")
    move(engine, a.id, JobState.ADMITTED, JobState.RUNNING)
    with read_transaction(engine) as conn:
        counts = {c.queue: c for c in queue_counts(conn)}
    assert (counts["default"].pending, counts["default"].running) == (1, 1)
    assert counts["other"].pending == 1 and counts["other"].oldest_pending_created_at is not None


def test_a_failed_transaction_rolls_back_the_event_too(engine: Engine) -> None:
    job = submit(engine)

    class Boom(Exception):
        pass

    with pytest.raises(Boom), write_transaction(engine) as conn:
        transition_job(conn, job_id=job.id, to_state=JobState.ADMITTED)
        raise Boom
    with read_transaction(engine) as conn:
        stored = get_job(conn, job_id=job.id)
        assert stored is not None and stored.state is JobState.PENDING
        assert len(list_events(conn, job_id=job.id)) == 1
    # And a version bump by someone else is detected by the conditional UPDATE.
    with write_transaction(engine) as conn:
        conn.execute(update(jobs).where(jobs.c.id == job.id).values(version=jobs.c.version + 1))
    with pytest.raises(ConcurrentUpdate), write_transaction(engine) as conn:
        transition_job(conn, job_id=job.id, to_state=JobState.ADMITTED, expected_version=1)


def test_group_commit_resolves_duplicates_within_the_group(engine: Engine) -> None:
    from trainyard.store import Submission, submit_jobs

    same = Submission(
        owner="alice", spec=spec("a"), priority_value=500, idempotency_key="k", request_hash="h"
    )
    other_doc = Submission(
        owner="alice", spec=spec("b"), priority_value=500, idempotency_key="k", request_hash="x"
    )
    plain = Submission(owner="alice", spec=spec("c"), priority_value=500)
    first, replay, conflict, created = submit_jobs(
        engine, submissions=[same, same, other_doc, plain]
    )
    assert isinstance(first, tuple) and isinstance(replay, tuple) and isinstance(created, tuple)
    assert (first[1] is True and replay == (first[0], False)) or replay[0].id == first[0].id
    assert replay[1] is False
    assert isinstance(conflict, IdempotencyConflict)
    assert created[1] is True
    with read_transaction(engine) as conn:
        assert conn.execute(select(func.count()).select_from(jobs)).scalar_one() == 2
        assert conn.execute(select(func.count()).select_from(job_events)).scalar_one() == 2


def test_a_row_the_database_refuses_does_not_fail_the_rest_of_the_group(engine: Engine) -> None:
    from sqlalchemy.exc import IntegrityError

    from trainyard.store import Submission, submit_jobs

    good = Submission(owner="alice", spec=spec("good"), priority_value=500)
    bad = Submission(owner="alice", spec=spec(None), priority_value=500)  # NOT NULL name
    results = submit_jobs(engine, submissions=[good, bad, good])
    assert isinstance(results[1], IntegrityError)
    assert [r[1] for r in (results[0], results[2])] == [True, True]  # type: ignore[index]
    with read_transaction(engine) as conn:
        assert [j.name for j in list_jobs(conn)] == ["good", "good"]


def test_pending_positions_count_everyone_but_list_only_the_owners(engine: Engine) -> None:
    from trainyard.store import pending_positions

    submit(engine, "b1", owner="bob")
    submit(engine, "a1", owner="alice")
    submit(engine, "urgent", owner="bob", priority=1000)
    submit(engine, "a2", owner="alice")
    submit(engine, "elsewhere", owner="alice", queue="other")
    with read_transaction(engine) as conn:
        everyone = pending_positions(conn, queue="default")
        alices = pending_positions(conn, queue="default", owner="alice")
        first_two = pending_positions(conn, queue="default", limit=2)
    assert [(p.name, p.position) for p in everyone] == [
        ("urgent", 1),
        ("b1", 2),
        ("a1", 3),
        ("a2", 4),
    ]
    assert [(p.name, p.position) for p in alices] == [("a1", 3), ("a2", 4)]
    assert [p.name for p in first_two] == ["urgent", "b1"]
