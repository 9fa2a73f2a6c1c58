"""What the scheduler learns from the store, and the forecasts it writes back.

- `finished_since`: jobs that ended after a watermark, with their real run time (summed
  over attempts) and the features the runtime estimator learns from.
- `attained_service`: GPU-seconds each given job has already received (LAS's measure).
- `write_estimated_starts`: forecast start times of pending jobs, advisory: written
  without touching `version` or `updated_at`, like pending reasons.
- `expected_waits`: per queue, the median forecast wait of its pending jobs (a metric).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, select, update

from trainyard.store.states import TERMINAL_STATES, JobState
from trainyard.store.tables import job_attempts, jobs

US = 1_000_000
_CHUNK = 500  # ids per IN (...) query: well under every database's parameter limit


@dataclass(frozen=True, slots=True)
class FinishedJob:
    """A finished job as the runtime estimator sees it."""

    id: str
    owner: str
    name: str
    queue: str
    kind: str
    workload: str
    gpus: float  # all workers together
    workers: int
    run_seconds: float
    finished_at: int


def _workload(spec_text: str) -> str:
    try:
        workload = json.loads(spec_text).get("workload") or {}
    except (ValueError, AttributeError):
        return ""
    if workload.get("builtin"):
        return str(workload["builtin"])
    command = workload.get("command") or []
    return str(command[0]) if command else ""


def finished_since(conn: Connection, watermark_us: int, limit: int = 5000) -> list[FinishedJob]:
    """Up to `limit` jobs finished after `watermark_us` that ran, oldest first."""
    terminal = [s.value for s in TERMINAL_STATES]
    rows = conn.execute(
        select(
            jobs.c.id,
            jobs.c.owner,
            jobs.c.name,
            jobs.c.queue,
            jobs.c.kind,
            jobs.c.spec,
            jobs.c.finished_at,
        )
        .where(jobs.c.state.in_(terminal), jobs.c.finished_at > watermark_us)
        .order_by(jobs.c.finished_at, jobs.c.seq)
        .limit(limit)
    ).all()
    runs = _attempt_sums(conn, [r.id for r in rows])
    out: list[FinishedJob] = []
    for row in rows:
        run = runs.get(row.id)
        if run is None or run[0] <= 0:
            continue
        seconds, _gpu_seconds, workers, gpus_per_worker = run
        out.append(
            FinishedJob(
                id=row.id,
                owner=row.owner,
                name=row.name,
                queue=row.queue,
                kind=row.kind,
                workload=_workload(row.spec),
                gpus=float(gpus_per_worker * workers),
                workers=workers,
                run_seconds=seconds,
                finished_at=row.finished_at,
            )
        )
    return out


def _attempt_sums(
    conn: Connection, job_ids: Collection[str]
) -> dict[str, tuple[float, float, int, int]]:
    """job id -> (run seconds, GPU-seconds, workers, GPUs per worker of the last attempt)."""
    out: dict[str, tuple[float, float, int, int]] = {}
    ids = list(job_ids)
    for i in range(0, len(ids), _CHUNK):
        rows = conn.execute(
            select(
                job_attempts.c.job_id,
                job_attempts.c.attempt,
                job_attempts.c.workers,
                job_attempts.c.gpus,
                job_attempts.c.started_at,
                job_attempts.c.ended_at,
            )
            .where(
                job_attempts.c.job_id.in_(ids[i : i + _CHUNK]),
                job_attempts.c.started_at.is_not(None),
                job_attempts.c.ended_at.is_not(None),
            )
            .order_by(job_attempts.c.job_id, job_attempts.c.attempt)
        ).all()
        for row in rows:
            ran = max(row.ended_at - row.started_at, 0) / US
            seconds, gpu_seconds, _w, _g = out.get(row.job_id, (0.0, 0.0, 0, 0))
            out[row.job_id] = (
                seconds + ran,
                gpu_seconds + ran * row.gpus * row.workers,
                row.workers,
                row.gpus,
            )
    return out


def attained_service(conn: Connection, job_ids: Collection[str]) -> dict[str, float]:
    """GPU-seconds each job received in its ended attempts (absent: none)."""
    return {job_id: sums[1] for job_id, sums in _attempt_sums(conn, job_ids).items()}


def write_estimated_starts(conn: Connection, starts: Mapping[str, int | None]) -> int:
    """Store forecast starts (microseconds; None clears); returns rows written."""
    if not starts:
        return 0
    statement = (
        update(jobs)
        .where(jobs.c.id == bindparam("b_id"))
        .values(estimated_start=bindparam("b_start"))
    )
    conn.execute(statement, [{"b_id": k, "b_start": v} for k, v in starts.items()])
    return len(starts)


def expected_waits(conn: Connection, now_us: int) -> dict[str, float]:
    """Per queue: the median forecast wait (seconds from now) of its pending jobs."""
    rows = conn.execute(
        select(jobs.c.queue, jobs.c.estimated_start).where(
            jobs.c.state == JobState.PENDING.value, jobs.c.estimated_start.is_not(None)
        )
    ).all()
    waits: dict[str, list[float]] = {}
    for queue, start in rows:
        waits.setdefault(queue, []).append(max(start - now_us, 0) / US)
    return {queue: statistics.median(values) for queue, values in sorted(waits.items())}


def pending_estimates(conn: Connection) -> dict[str, int]:
    """Forecast start of every pending job that has one (what the loop wrote last)."""
    rows = conn.execute(
        select(jobs.c.id, jobs.c.estimated_start).where(
            jobs.c.state == JobState.PENDING.value, jobs.c.estimated_start.is_not(None)
        )
    ).all()
    return {job_id: start for job_id, start in rows}


__all__ = [
    "FinishedJob",
    "attained_service",
    "expected_waits",
    "finished_since",
    "pending_estimates",
    "write_estimated_starts",
]
