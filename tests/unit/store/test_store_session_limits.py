"""Every PostgreSQL session has a statement and a lock timeout; a submit whose COMMIT
outcome is unknown never stores a second job (issue 14, item 11)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import OperationalError

from tests.support.databases import postgres_admin, postgres_schema  # noqa: F401
from trainyard.store import (
    DatabaseTimeouts,
    Submission,
    make_engine,
    migrate,
    read_transaction,
    server_idempotency_key,
    submit_jobs,
)
from trainyard.store.tables import jobs

SPEC = {"name": "j", "kind": "training", "queue": "default", "priority": "normal"}


@pytest.mark.postgres
def test_every_postgres_session_gets_the_configured_timeouts(
    postgres_schema: str,  # noqa: F811
) -> None:
    engine = make_engine(postgres_schema, timeouts=DatabaseTimeouts(statement_ms=1234, lock_ms=567))
    try:
        migrate(engine)  # the migration lifts them for itself only
        with engine.connect() as conn:
            statement = conn.exec_driver_sql("SHOW statement_timeout").scalar()
            lock = conn.exec_driver_sql("SHOW lock_timeout").scalar()
    finally:
        engine.dispose()
    assert (statement, lock) == ("1234ms", "567ms")


@pytest.mark.postgres
def test_the_default_timeouts_are_set_too(postgres_schema: str) -> None:  # noqa: F811
    engine = make_engine(postgres_schema)
    try:
        with engine.connect() as conn:
            statement = conn.exec_driver_sql("SHOW statement_timeout").scalar()
    finally:
        engine.dispose()
    assert statement == "15s"


def _lose_the_first_commit_acknowledgement(engine: Engine) -> None:
    """Fault injection (nothing here can cut a network link at the right instant): the
    first COMMIT really commits, then fails as if the connection broke before the answer
    arrived, which is what a database restart or a network fault does."""
    fired = False

    @event.listens_for(engine, "commit")
    def commit_then_lose_the_answer(conn: Any) -> None:
        nonlocal fired
        if fired:
            return
        fired = True
        conn.connection.dbapi_connection.commit()
        raise OperationalError(
            "COMMIT", None, ConnectionError("server closed the connection unexpectedly")
        )


def test_an_unknown_commit_outcome_stores_exactly_one_job(engine: Engine) -> None:
    _lose_the_first_commit_acknowledgement(engine)
    submissions = [
        Submission(
            owner="u",
            spec={**SPEC, "name": f"j{i}"},
            priority_value=1,
            idempotency_key=server_idempotency_key(),
        )
        for i in range(3)
    ]
    results = submit_jobs(engine, submissions=submissions)
    with read_transaction(engine) as conn:
        stored = conn.execute(select(func.count()).select_from(jobs)).scalar()
    assert [type(r) for r in results] == [tuple] * 3, results
    assert all(created for _, created in results)  # type: ignore[misc]
    assert stored == 3
    assert sorted(job.name for job, _ in results) == ["j0", "j1", "j2"]  # type: ignore[misc]
