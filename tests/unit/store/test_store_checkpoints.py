"""Reported checkpoints (store.checkpoints) on SQLite and PostgreSQL: a report replaces
the job's listing, an older attempt's late report never overwrites a newer one."""

from __future__ import annotations

from sqlalchemy import Engine

from trainyard.store import read_transaction, submit_job
from trainyard.store import write_transaction as wt
from trainyard.store.checkpoints import (
    forget_checkpoints,
    record_checkpoints,
    reported_checkpoints,
)

SPEC = {"name": "j", "kind": "training", "queue": "default", "priority": "normal",
        "workers": 1, "workload": {"command": ["true"]}}  # fmt: skip


def _listing(engine: Engine, job_id: str) -> list[tuple[int, int | None, int]]:
    with read_transaction(engine) as conn:
        return [
            (c["step"], c["attempt"], c["size_bytes"])
            for c in reported_checkpoints(conn, job_id=job_id)
        ]


def test_reports_replace_the_listing_newest_attempt_wins(engine: Engine) -> None:
    record, _ = submit_job(engine, owner="alice", spec=SPEC, priority_value=500)
    job = record.id
    with wt(engine) as conn:
        assert record_checkpoints(
            conn, job_id=job, attempt=1, checkpoints=[(20, 1e9, 100, 1), (10, 1e9, 90, 1)]
        )
    assert _listing(engine, job) == [(20, 1, 100), (10, 1, 90)]
    with wt(engine) as conn:  # attempt 2 resumed at 20, wrote 30, pruned 10
        assert record_checkpoints(
            conn, job_id=job, attempt=2, checkpoints=[(30, 2e9, 110, 2), (20, 1e9, 100, 1)]
        )
    assert _listing(engine, job) == [(30, 2, 110), (20, 1, 100)]
    with wt(engine) as conn:  # attempt 1's report seen late (a re-listed watch)
        assert not record_checkpoints(conn, job_id=job, attempt=1, checkpoints=[(10, 1e9, 9, 1)])
    assert _listing(engine, job)[0] == (30, 2, 110)
    with read_transaction(engine) as conn:
        [newest, _] = reported_checkpoints(conn, job_id=job)
    assert newest["written_at"] == 2e9
    with wt(engine) as conn:
        forget_checkpoints(conn, job_id=job)
    assert _listing(engine, job) == []


def test_a_report_for_an_unknown_job_is_dropped(engine: Engine) -> None:
    with wt(engine) as conn:
        assert not record_checkpoints(conn, job_id="nope", attempt=1, checkpoints=[(1, 0.0, 1, 1)])
