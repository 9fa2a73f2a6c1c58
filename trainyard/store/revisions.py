"""A model service's document replaced by PATCH /v1/jobs/{id}: one conditional write.

The document is the job's only large column and, for every other job, never changes
after submit; a service's changes through here. The write is conditional on the version
the caller read (optimistic concurrency, as every other write of a job), so two updates
cannot interleave: the second one's version is stale, it raises ConcurrentUpdate, and the
caller reads the job again and applies its change on top of the first. The event says
who changed which fields, and the loop sees the new version and reloads the document.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, insert, select

from trainyard.store.records import JobRecord
from trainyard.store.repository import _update_job, dump_document, now_us
from trainyard.store.tables import job_events, jobs


def lock_job(conn: Connection, job_id: str) -> None:
    """Hold the job's row until the transaction ends (SELECT ... FOR UPDATE), so that
    concurrent updates queue instead of all reading one version and all but one losing;
    on SQLite the write transaction already holds the database's one write lock."""
    conn.execute(select(jobs.c.id).where(jobs.c.id == job_id).with_for_update())


def replace_spec(
    conn: Connection,
    *,
    job: JobRecord,
    spec: Mapping[str, Any],
    expected_version: int,
    note: str,
) -> JobRecord:
    """Store `spec` as the job's document if it is still at `expected_version`."""
    at = now_us()
    text = dump_document(dict(spec))
    updated = _update_job(
        conn,
        job=job,
        expected_version=expected_version,
        values={"spec": text, "spec_bytes": len(text), "updated_at": at},
    )
    conn.execute(
        insert(job_events).values(
            job_id=job.id,
            at=at,
            from_state=job.state.value,
            to_state=job.state.value,
            reason=note,
        )
    )
    return updated
