"""Repository functions for observability: metric snapshots, scrape targets, usage rows.

Everything the control plane's /metrics exposes is counted here from stored rows (jobs,
their events and attempts, the loop's `loop_stats`), so every API process and replica
reports the same numbers and counters survive restarts. Each function is one grouped
query; callers cache the result for about a second.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, and_, case, func, insert, or_, select, update

from trainyard.store.states import ACTIVE_STATES, TERMINAL_STATES, JobState
from trainyard.store.tables import attempt_replicas, job_attempts, job_events, jobs, loop_stats

_LIVE = (JobState.PENDING.value, JobState.ADMITTED.value, JobState.RUNNING.value)
_ACTIVE = sorted(s.value for s in ACTIVE_STATES)
_TERMINAL = sorted(s.value for s in TERMINAL_STATES)


@dataclass(frozen=True, slots=True)
class LiveJobCount:
    """Live jobs of one (queue, state, priority, kind), and the oldest one's submit time."""

    queue: str
    state: str
    priority: str
    kind: str
    count: int
    oldest_created_at: int


@dataclass(frozen=True, slots=True)
class HistogramCounts:
    """Cumulative bucket counts (same order as the bounds asked for), count and sum."""

    buckets: tuple[int, ...]
    count: int
    sum: float

    def __add__(self, other: HistogramCounts) -> HistogramCounts:
        return HistogramCounts(
            buckets=tuple(a + b for a, b in zip(self.buckets, other.buckets, strict=True)),
            count=self.count + other.count,
            sum=self.sum + other.sum,
        )


@dataclass(frozen=True, slots=True)
class Allocation:
    """What an active attempt's workers on one node hold (all of them together)."""

    queue: str
    model: str | None
    cpu_millicores: int
    memory_bytes: int
    gpus: int
    tpu_chips: int
    node: str | None = None


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Resource-time of the attempts of one (queue, owner, model), in seconds."""

    queue: str
    owner: str
    model: str | None
    gpu_seconds: float
    tpu_chip_seconds: float
    cpu_core_seconds: float


@dataclass(frozen=True, slots=True)
class MetricsTarget:
    """The scrape addresses of one running attempt's workers."""

    job_id: str
    name: str
    queue: str
    owner: str
    attempt: int
    gpus_per_worker: int
    targets: dict[int, str]


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One attempt, as accounting needs it (times in microseconds)."""

    job_id: str
    name: str
    queue: str
    owner: str
    attempt: int
    workers: int
    cpu_millicores: int
    gpus: int
    tpu_chips: int
    accelerator_model: str | None
    job_created_at: int
    job_started_at: int | None
    started_at: int | None
    ended_at: int | None
    outcome: str | None
    energy_joules: float | None
    # A model service's replica count changes within the attempt, in time order:
    # (at, count from then on). `workers` is the count it started with.
    replica_changes: tuple[tuple[int, int], ...] = ()


# --------------------------------------------------------------------------- gauges


def live_job_counts(conn: Connection) -> list[LiveJobCount]:
    """PENDING, ADMITTED and RUNNING jobs per (queue, state, priority, kind)."""
    query = (
        select(
            jobs.c.queue,
            jobs.c.state,
            jobs.c.priority,
            jobs.c.kind,
            func.count(),
            func.min(jobs.c.created_at),
        )
        .where(jobs.c.state.in_(_LIVE))
        .group_by(jobs.c.queue, jobs.c.state, jobs.c.priority, jobs.c.kind)
    )
    return [LiveJobCount(*row) for row in conn.execute(query)]


def admission_counts(
    conn: Connection, *, since: int | None = None, before: int | None = None
) -> dict[str, int]:
    """Attempts (one per admission, never deleted) admitted in [since, before), per queue."""
    a = job_attempts.c
    queue = _key(a.queue, since)
    query = select(queue, func.count()).where(_in_range(a.admitted_at, since, before))
    return dict(conn.execute(query.group_by(queue)).all())


def preemption_counts(
    conn: Connection, *, since: int | None = None, before: int | None = None
) -> dict[str, int]:
    """Attempts that ended PREEMPTED in [since, before), per queue."""
    a = job_attempts.c
    queue = _key(a.queue, since)
    query = select(queue, func.count()).where(
        _in_range(a.ended_at, since, before), a.outcome == JobState.PREEMPTED.value
    )
    return dict(conn.execute(query.group_by(queue)).all())


def retry_counts(conn: Connection) -> dict[str, int]:
    """Failed attempts that sent their job back to the queue, per queue: every FAILED
    attempt except a job's last one when the job itself ended FAILED."""
    a = job_attempts.c
    final = and_(jobs.c.state == JobState.FAILED.value, a.attempt == jobs.c.attempt)
    query = (
        select(a.queue, func.count())
        .select_from(job_attempts.join(jobs, jobs.c.id == a.job_id))
        .where(a.outcome == JobState.FAILED.value, ~final)
        .group_by(a.queue)
    )
    return dict(conn.execute(query).all())


def finished_counts(
    conn: Connection, *, since: int | None = None, before: int | None = None
) -> dict[tuple[str, str], int]:
    """Jobs that reached each final state in [since, before), per queue (a final state is
    never left: the counts only grow)."""
    queue, state = _key(jobs.c.queue, since), _key(jobs.c.state, since)
    query = (
        select(queue, state, func.count())
        .where(state.in_(_TERMINAL), _in_range(jobs.c.finished_at, since, before))
        .group_by(queue, state)
    )
    return {(q, s): count for q, s, count in conn.execute(query)}


def _key(column: Any, since: int | None) -> Any:
    """`column` as a GROUP BY key; for a recent range an expression (`queue || ''`), so
    the planner reads the range through its time index instead of walking the index that
    would serve the GROUP BY over every row (SQLite does the latter otherwise)."""
    return column if since is None else column.concat("").label(column.name)


def transition_counts(conn: Connection) -> dict[tuple[str, str | None, str], int]:
    """Stored state changes counted per (queue, from_state, to_state) (a full scan of
    the events: for tests and audits, not for every scrape)."""
    query = (
        select(jobs.c.queue, job_events.c.from_state, job_events.c.to_state, func.count())
        .select_from(job_events.join(jobs, jobs.c.id == job_events.c.job_id))
        .where(job_events.c.from_state.is_not(None))
        .group_by(jobs.c.queue, job_events.c.from_state, job_events.c.to_state)
    )
    return {(queue, src, dst): count for queue, src, dst, count in conn.execute(query)}


def _histogram_query(
    key: Any, seconds: Any, bounds: Sequence[float], where: Any
) -> tuple[Any, int]:
    columns = [func.sum(case((seconds <= bound, 1), else_=0)) for bound in bounds]
    columns += [func.count(), func.sum(seconds)]
    return select(key, *columns).where(where).group_by(key), len(bounds)


def _histograms(conn: Connection, query: Any, n: int) -> dict[str, HistogramCounts]:
    result = {}
    for row in conn.execute(query):
        key, values = row[0], row[1:]
        result[key] = HistogramCounts(
            buckets=tuple(int(v or 0) for v in values[:n]),
            count=int(values[n] or 0),
            sum=float(values[n + 1] or 0.0),
        )
    return result


def _in_range(column: Any, since: int | None, before: int | None) -> Any:
    condition = column.is_not(None)
    if since is not None:
        condition = and_(condition, column >= since)
    if before is not None:
        condition = and_(condition, column < before)
    return condition


def wait_histograms(
    conn: Connection,
    *,
    bounds: Sequence[float],
    since: int | None = None,
    before: int | None = None,
) -> dict[str, HistogramCounts]:
    """Per queue: submit -> first RUNNING of every job that started in [since, before)
    (any time by default), bucketed in SQL. A job's first start never changes, so a
    caller can count a past range once and only recount the recent one."""
    seconds = (jobs.c.started_at - jobs.c.created_at) / 1e6
    where = _in_range(jobs.c.started_at, since, before)
    query, n = _histogram_query(_key(jobs.c.queue, since), seconds, bounds, where)
    return _histograms(conn, query, n)


def duration_histograms(
    conn: Connection,
    *,
    bounds: Sequence[float],
    since: int | None = None,
    before: int | None = None,
) -> dict[str, HistogramCounts]:
    """Per final state: first RUNNING -> end of every job that ran and finished in
    [since, before) (final: it never changes)."""
    seconds = (jobs.c.finished_at - jobs.c.started_at) / 1e6
    state = _key(jobs.c.state, since)
    where = and_(
        _in_range(jobs.c.finished_at, since, before),
        state.in_(_TERMINAL),
        jobs.c.started_at.is_not(None),
    )
    query, n = _histogram_query(state, seconds, bounds, where)
    return _histograms(conn, query, n)


def _current_attempt() -> Any:
    return job_attempts.join(
        jobs, and_(jobs.c.id == job_attempts.c.job_id, jobs.c.attempt == job_attempts.c.attempt)
    )


def active_allocations(conn: Connection) -> list[Allocation]:
    """Resources held by the current attempts of ADMITTED and RUNNING jobs, per worker
    placement: one Allocation per (attempt, node), `model` the attempt's own model."""
    a = job_attempts.c
    query = (
        select(
            a.queue,
            a.placement,
            a.cpu_millicores,
            a.memory_bytes,
            a.gpus,
            a.tpu_chips,
            a.accelerator_model,
        )
        .select_from(_current_attempt())
        .where(jobs.c.state.in_(_ACTIVE), a.ended_at.is_(None))
    )
    result = []
    for queue, placement, cpu, mem, gpus, tpus, model in conn.execute(query):
        per_node: dict[str, int] = {}
        for node in json.loads(placement).values():
            per_node[node] = per_node.get(node, 0) + 1
        for node, workers in sorted(per_node.items()):
            result.append(
                Allocation(
                    queue,
                    model,
                    workers * cpu,
                    workers * mem,
                    workers * gpus,
                    workers * tpus,
                    node=node,
                )
            )
    return result


def usage_totals(
    conn: Connection,
    *,
    now_us: int,
    ended_since: int | None = None,
    ended_before: int | None = None,
    running: bool = True,
) -> list[UsageTotals]:
    """Resource-seconds of the attempts that started: those that ended in
    [ended_since, ended_before) and, with `running`, those still open (up to `now_us`).
    An ended attempt's usage never changes, so its range can be counted once.

    A model service whose replica count changed within an attempt (attempt_replicas)
    counts its starting count from its start, plus each change's `delta` replicas from
    that change on."""
    a, r = job_attempts.c, attempt_replicas.c
    end = func.coalesce(a.ended_at, now_us)

    def held(since: Any) -> Any:
        elapsed = (end - since) / 1e6
        return case((elapsed > 0, elapsed), else_=0.0)  # clock skew never subtracts usage

    def totals(workers: Any, since: Any, query: Any) -> Any:
        query = query.where(a.started_at.is_not(None)).group_by(
            a.queue, a.owner, a.accelerator_model
        )
        if not (ended_since is None and ended_before is None and running):
            ended = _in_range(a.ended_at, ended_since, ended_before)
            query = query.where(or_(ended, a.ended_at.is_(None)) if running else ended)
        return conn.execute(
            query.add_columns(
                func.sum(held(since) * workers * a.gpus),
                func.sum(held(since) * workers * a.tpu_chips),
                func.sum(held(since) * workers * a.cpu_millicores / 1000.0),
            )
        )

    sums: dict[tuple[str, str, str | None], list[float]] = {}
    base = select(a.queue, a.owner, a.accelerator_model)
    changed = base.select_from(
        attempt_replicas.join(job_attempts, and_(a.job_id == r.job_id, a.attempt == r.attempt))
    )
    for rows in (totals(a.workers, a.started_at, base), totals(r.delta, r.at, changed)):
        for q, o, m, g, t, c in rows:
            total = sums.setdefault((q, o, m), [0.0, 0.0, 0.0])
            for i, value in enumerate((g, t, c)):
                total[i] += float(value or 0)
    return [
        UsageTotals(q, o, m, max(0.0, g), max(0.0, t), max(0.0, c))
        for (q, o, m), (g, t, c) in sums.items()
    ]


# --------------------------------------------------------------------------- loop stats


def read_loop_stats(conn: Connection, *, name: str) -> dict[str, Any] | None:
    """The loop's stored stats document `name`, or None before its first write."""
    data = conn.execute(select(loop_stats.c.data).where(loop_stats.c.name == name)).scalar()
    return None if data is None else json.loads(data)


def merge_loop_stats(
    conn: Connection,
    *,
    name: str,
    at: int,
    merge: Callable[[dict[str, Any] | None], dict[str, Any]],
) -> dict[str, Any]:
    """Replace document `name` with `merge(current)` in the caller's write transaction."""
    current = read_loop_stats(conn, name=name)
    document = merge(current)
    data = json.dumps(document, separators=(",", ":"), sort_keys=True)
    if current is None:
        conn.execute(insert(loop_stats).values(name=name, data=data, updated_at=at))
    else:
        conn.execute(
            update(loop_stats).where(loop_stats.c.name == name).values(data=data, updated_at=at)
        )
    return document


# --------------------------------------------------------------------------- targets


def set_metrics_targets(
    conn: Connection, *, job_id: str, attempt: int, targets: Mapping[int, str]
) -> bool:
    """Record where the attempt's workers serve metrics ({index: "host:port"}).

    Called by the loop when the backend reports `WorkerStatus.metrics_address`; writes
    only when the value changes, and returns whether it did.
    """
    value = json.dumps({str(int(i)): str(a) for i, a in sorted(targets.items())}, sort_keys=True)
    condition = and_(job_attempts.c.job_id == job_id, job_attempts.c.attempt == attempt)
    result = conn.execute(
        update(job_attempts)
        .where(
            condition,
            or_(job_attempts.c.metrics_targets.is_(None), job_attempts.c.metrics_targets != value),
        )
        .values(metrics_targets=value)
    )
    return result.rowcount > 0


def running_metrics_targets(conn: Connection, *, owner: str | None = None) -> list[MetricsTarget]:
    """Scrape targets of the current attempts of RUNNING jobs (only `owner`'s, if given)."""
    a = job_attempts.c
    query = (
        select(a.job_id, jobs.c.name, a.queue, a.owner, a.attempt, a.gpus, a.metrics_targets)
        .select_from(_current_attempt())
        .where(
            jobs.c.state == JobState.RUNNING.value,
            a.ended_at.is_(None),
            a.metrics_targets.is_not(None),
        )
        .order_by(jobs.c.seq)
    )
    if owner is not None:
        query = query.where(jobs.c.owner == owner)
    result = []
    for job_id, name, queue, job_owner, attempt, gpus, targets in conn.execute(query):
        result.append(
            MetricsTarget(
                job_id=job_id,
                name=name,
                queue=queue,
                owner=job_owner,
                attempt=attempt,
                gpus_per_worker=gpus,
                targets={int(k): v for k, v in json.loads(targets).items()},
            )
        )
    return result


# --------------------------------------------------------------------------- usage


def usage_rows(conn: Connection, *, since_us: int, owner: str | None = None) -> list[UsageRow]:
    """Every attempt that held resources at or after `since_us` (still open, or ended since)."""
    a = job_attempts.c
    query = (
        select(
            a.job_id,
            jobs.c.name,
            a.queue,
            a.owner,
            a.attempt,
            a.workers,
            a.cpu_millicores,
            a.gpus,
            a.tpu_chips,
            a.accelerator_model,
            jobs.c.created_at,
            jobs.c.started_at,
            a.started_at,
            a.ended_at,
            a.outcome,
            a.energy_joules,
        )
        .select_from(job_attempts.join(jobs, jobs.c.id == a.job_id))
        .where(or_(a.ended_at.is_(None), a.ended_at >= since_us))
        .order_by(a.admitted_at, a.job_id, a.attempt)
    )
    if owner is not None:
        query = query.where(a.owner == owner)
    rows = [UsageRow(*row) for row in conn.execute(query)]
    changes = _replica_changes(conn, since_us=since_us, owner=owner)
    if not changes:
        return rows
    return [
        replace(row, replica_changes=tuple(changes.get((row.job_id, row.attempt), ())))
        for row in rows
    ]


def _replica_changes(
    conn: Connection, *, since_us: int, owner: str | None
) -> dict[tuple[str, int], list[tuple[int, int]]]:
    """(job, attempt) -> its replica count changes, oldest first, for the same attempts
    as usage_rows (one query: services are few, and their changes fewer)."""
    a, r = job_attempts.c, attempt_replicas.c
    query = (
        select(r.job_id, r.attempt, r.at, r.workers)
        .select_from(
            attempt_replicas.join(job_attempts, and_(a.job_id == r.job_id, a.attempt == r.attempt))
        )
        .where(or_(a.ended_at.is_(None), a.ended_at >= since_us))
        .order_by(r.job_id, r.attempt, r.at)
    )
    if owner is not None:
        query = query.where(a.owner == owner)
    changes: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for job_id, attempt, at, workers in conn.execute(query):
        changes.setdefault((job_id, attempt), []).append((int(at), int(workers)))
    return changes
