"""Service endpoints in the store: written by the loop, read by the API's /predict proxy.

The loop owns the rows (one per service job, replaced whenever its ready replicas
change); the API only reads them, so it never needs the backend to find a replica.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, select

from trainyard.store.repository import now_us
from trainyard.store.tables import service_endpoints


@dataclass(frozen=True, slots=True)
class ServiceEndpoint:
    job_id: str
    endpoint: str | None
    ready: tuple[str, ...]
    updated_at: int


def publish_endpoint(
    conn: Connection, *, job_id: str, endpoint: str | None, ready: Sequence[str]
) -> None:
    """Replace the job's row (delete + insert: portable across SQLite and PostgreSQL)."""
    conn.execute(delete(service_endpoints).where(service_endpoints.c.job_id == job_id))
    conn.execute(
        insert(service_endpoints).values(
            job_id=job_id, endpoint=endpoint, ready=json.dumps(list(ready)), updated_at=now_us()
        )
    )


def drop_endpoints(conn: Connection, job_ids: Iterable[str]) -> None:
    ids = list(job_ids)
    if ids:
        conn.execute(delete(service_endpoints).where(service_endpoints.c.job_id.in_(ids)))


def load_endpoints(conn: Connection, job_ids: Iterable[str]) -> dict[str, ServiceEndpoint]:
    ids = list(job_ids)
    out: dict[str, ServiceEndpoint] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = conn.execute(select(service_endpoints).where(service_endpoints.c.job_id.in_(chunk)))
        for row in rows:
            out[row.job_id] = ServiceEndpoint(
                row.job_id, row.endpoint, tuple(json.loads(row.ready)), row.updated_at
            )
    return out
