"""The loop's attempt-end write keeps the GPU energy the loop read from the ranks' files
(`JobChange.attempt_energy_joules`), on SQLite and PostgreSQL; an unmeasured attempt
stays None (no GPU), never 0."""

from __future__ import annotations

from sqlalchemy import Engine

from trainyard.store import JobState, read_transaction, submit_job
from trainyard.store import write_transaction as wt
from trainyard.store.scheduling import (
    AttemptStart,
    JobChange,
    LiveJob,
    apply_changes,
    attempt_rows,
    load_live_jobs,
)

SPEC = {"name": "j", "kind": "training", "queue": "default", "priority": "normal",
        "workers": 1, "resources": {"gpu": 1}, "workload": {"command": ["true"]}}  # fmt: skip


def _live(engine: Engine, job_id: str) -> LiveJob:
    with read_transaction(engine) as conn:
        return next(j for j in load_live_jobs(conn) if j.id == job_id)


def _run_attempt(engine: Engine, job_id: str, attempt: int, joules: float | None) -> None:
    live = _live(engine, job_id)
    admit = JobChange(job_id=job_id, version=live.version, state=live.state)
    admit.transitions.append((JobState.ADMITTED, "placed on n1"))
    admit.values.update(placement={0: "n1"}, attempt=attempt)
    admit.attempt_start = AttemptStart({0: "n1"}, "default", "alice", 1, 1000, 2**30, 1, 0, "H100")
    with wt(engine) as conn:
        assert apply_changes(conn, [admit]) == {job_id}
    live = _live(engine, job_id)
    end = JobChange(job_id=job_id, version=live.version, state=live.state)
    end.transitions.append((JobState.PENDING, "retry"))
    end.attempt_end = (attempt, JobState.FAILED.value, "exit 1")
    end.attempt_energy_joules = joules
    with wt(engine) as conn:
        assert apply_changes(conn, [end]) == {job_id}


def test_an_ended_attempt_keeps_its_measured_energy(engine: Engine) -> None:
    record, _ = submit_job(engine, owner="alice", spec=SPEC, priority_value=500)
    _run_attempt(engine, record.id, 1, 1750.5)
    _run_attempt(engine, record.id, 2, None)
    with read_transaction(engine) as conn:
        first, second = attempt_rows(conn, job_id=record.id)
    assert first["ended_at"] is not None and first["energy_joules"] == 1750.5
    assert second["ended_at"] is not None and second["energy_joules"] is None
