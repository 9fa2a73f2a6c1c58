"""Autoscaled and surge replicas of a model service in usage accounting.

(The `engine` fixture: SQLite and the real PostgreSQL, tests/unit/store/conftest.py.)

A service's attempt starts with `workers` replicas; a rolling update's surge or the
autoscaler changes the count within the attempt (attempt_replicas, written by the
loop's JobChange.replica_count). GET /v1/usage (usage_rows + aggregate) and the
Prometheus totals (usage_totals) integrate the count over time: an added replica counts
from when it was added, a removed one stops counting when it was removed.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, insert, select

from tests.support.store_rows import admit, end, job_spec, start, submit
from trainyard.observability.accounting import aggregate
from trainyard.store import JobState, read_transaction, write_transaction
from trainyard.store.scheduling import JobChange, apply_changes, load_live_jobs
from trainyard.store.tables import attempt_replicas
from trainyard.store.telemetry import usage_rows, usage_totals

HOUR = 3_600_000_000
T0 = 1_800_000_000_000_000  # some time, in microseconds


def _service(engine: Engine) -> tuple[str, int]:
    """A 1-GPU-per-replica service started at T0 with 1 replica."""
    job_id = submit(engine, job_spec("svc", gpu=1), created_at=T0)
    attempt = admit(engine, job_id, at=T0, model="H100")
    start(engine, job_id, attempt, at=T0)
    return job_id, attempt


def _changes(engine: Engine, job_id: str, attempt: int, steps: list[tuple[int, int, int]]) -> None:
    with write_transaction(engine) as conn:
        conn.execute(
            insert(attempt_replicas),
            [
                {"job_id": job_id, "attempt": attempt, "at": at, "workers": w, "delta": d}
                for at, w, d in steps
            ],
        )


def test_added_replicas_count_from_when_they_came_and_removed_ones_stop(engine: Engine) -> None:
    """1 replica for 1 h, 3 for 1 h, 1 for 2 h, ended at 4 h: 1 + 3 + 2 = 6 GPU-hours."""
    job_id, attempt = _service(engine)
    _changes(engine, job_id, attempt, [(T0 + HOUR, 3, 2), (T0 + 2 * HOUR, 1, -2)])
    end(engine, job_id, attempt, at=T0 + 4 * HOUR, to_state=JobState.CANCELLED)
    with read_transaction(engine) as conn:
        rows = usage_rows(conn, since_us=T0)
        totals = usage_totals(conn, now_us=T0 + 5 * HOUR)
    assert rows[0].replica_changes == ((T0 + HOUR, 3), (T0 + 2 * HOUR, 1))
    [group] = aggregate(rows, group_by="job", since_us=T0, now_us=T0 + 5 * HOUR, prices={})
    assert group.gpu_hours == pytest.approx(6.0) and group.wall_hours == pytest.approx(4.0)
    assert group.cpu_core_hours == pytest.approx(12.0)  # 2 cores a replica
    [total] = totals
    assert total.gpu_seconds == pytest.approx(6.0 * 3600)

    # A window from 1.5 h on: 3 replicas for 0.5 h, then 1 for 2 h = 3.5 GPU-hours.
    since = T0 + HOUR + HOUR // 2
    with read_transaction(engine) as conn:
        rows = usage_rows(conn, since_us=since)
    [group] = aggregate(rows, group_by="job", since_us=since, now_us=T0 + 5 * HOUR, prices={})
    assert group.gpu_hours == pytest.approx(3.5)


def test_a_running_service_counts_its_current_replicas_up_to_now(engine: Engine) -> None:
    job_id, attempt = _service(engine)
    _changes(engine, job_id, attempt, [(T0 + HOUR, 2, 1)])
    now = T0 + 3 * HOUR
    with read_transaction(engine) as conn:
        rows = usage_rows(conn, since_us=T0)
        [total] = usage_totals(conn, now_us=now)
    [group] = aggregate(rows, group_by="job", since_us=T0, now_us=now, prices={"H100": 2.0})
    assert group.gpu_hours == pytest.approx(1 + 2 * 2)
    assert group.cost == pytest.approx(10.0)
    assert total.gpu_seconds == pytest.approx(5 * 3600)


def test_the_loops_replica_count_change_is_recorded_with_its_write(engine: Engine) -> None:
    job_id, attempt = _service(engine)
    with read_transaction(engine) as conn:
        [job] = [j for j in load_live_jobs(conn) if j.id == job_id]
    change = JobChange(job_id=job_id, version=job.version, state=job.state)
    change.values["placement"] = {0: "node-a", 1: "node-b"}
    change.replica_count = (attempt, 2, 1)
    stale = JobChange(job_id=job_id, version=job.version, state=job.state)
    stale.replica_count = (attempt, 3, 2)  # lost the race: nothing recorded
    with write_transaction(engine) as conn:
        assert apply_changes(conn, [change]) == {job_id}
    with write_transaction(engine) as conn:
        assert apply_changes(conn, [stale]) == set()
    with read_transaction(engine) as conn:
        recorded = conn.execute(
            select(attempt_replicas.c.attempt, attempt_replicas.c.workers, attempt_replicas.c.delta)
        ).all()
    assert [tuple(r) for r in recorded] == [(attempt, 2, 1)]
