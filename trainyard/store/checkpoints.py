"""Reported checkpoints in the store: written by the loop, listed by the API.

On Kubernetes a job's checkpoints are on its claim, which only its pods mount; worker 0
reports the directory's listing when its container ends (trainyard.checkpoint_index),
the backend's pod watch sees it, and the loop stores it here. A report is the whole
directory at that moment (pruned checkpoints are gone from it), so it replaces the
job's rows, unless an older attempt's report arrives after a newer one's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select

from trainyard.store.repository import now_us
from trainyard.store.tables import job_checkpoints, jobs

US = 1_000_000
# (step, written at in unix seconds, size in bytes, attempt that wrote it)
Reported = tuple[int, float, int, int | None]


def record_checkpoints(
    conn: Connection, *, job_id: str, attempt: int, checkpoints: Sequence[Reported]
) -> bool:
    """Replace the job's reported checkpoints with what attempt `attempt` reported;
    False (nothing written) for an unknown job or a report older than the stored one."""
    known = conn.execute(select(jobs.c.id).where(jobs.c.id == job_id)).first()
    if known is None:
        return False
    newest = conn.execute(
        select(func.max(job_checkpoints.c.reported_attempt)).where(
            job_checkpoints.c.job_id == job_id
        )
    ).scalar()
    if newest is not None and newest > attempt:
        return False
    conn.execute(delete(job_checkpoints).where(job_checkpoints.c.job_id == job_id))
    at = now_us()
    rows = [
        {
            "job_id": job_id,
            "step": step,
            "attempt": wrote,
            "written_at": int(written * US),
            "size_bytes": size,
            "reported_attempt": attempt,
            "reported_at": at,
        }
        for step, written, size, wrote in {c[0]: c for c in checkpoints}.values()
    ]
    if rows:
        conn.execute(insert(job_checkpoints), rows)
    return True


def reported_checkpoints(conn: Connection, *, job_id: str) -> list[dict[str, Any]]:
    """[{step, written_at (unix seconds), size_bytes, attempt}], newest step first."""
    query = (
        select(
            job_checkpoints.c.step,
            job_checkpoints.c.written_at,
            job_checkpoints.c.size_bytes,
            job_checkpoints.c.attempt,
        )
        .where(job_checkpoints.c.job_id == job_id)
        .order_by(job_checkpoints.c.step.desc())
    )
    return [
        {
            "step": row.step,
            "written_at": row.written_at / US,
            "size_bytes": row.size_bytes,
            "attempt": row.attempt,
        }
        for row in conn.execute(query)
    ]


def forget_checkpoints(conn: Connection, *, job_id: str) -> None:
    """The job's storage was deleted: so are its checkpoints."""
    conn.execute(delete(job_checkpoints).where(job_checkpoints.c.job_id == job_id))
