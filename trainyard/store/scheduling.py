"""Repository functions for the scheduling loop: cheap reads of live jobs, batched writes.

The loop reads every live job (PENDING, ADMITTED, RUNNING) once per cycle, so the read
leaves out the job document (`spec`, the only large column): documents never change
after submit, and the loop keeps them cached by id, fetching only those it has not
seen (`load_specs`). Writes of one cycle go in one transaction (`apply_changes`), each
conditional on the version the loop read (optimistic concurrency): a change that lost
a race with the API (a cancel) simply does not apply, and the next cycle re-derives it.

A reason-only change (the core's "why still pending") is conditional on the version
but does not bump it: it is advisory, and bumping would make a user's cancel race with
the loop's bookkeeping.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, insert, select, update

from trainyard.store.repository import now_us
from trainyard.store.states import TERMINAL_STATES, JobState, can_transition
from trainyard.store.tables import (
    attempt_replicas,
    cluster_nodes,
    job_attempts,
    job_events,
    jobs,
    leases,
)

LIVE_STATES = (JobState.PENDING, JobState.ADMITTED, JobState.RUNNING)

_LIGHT_COLUMNS = (
    jobs.c.seq,
    jobs.c.id,
    jobs.c.owner,
    jobs.c.name,
    jobs.c.kind,
    jobs.c.queue,
    jobs.c.priority_value,
    jobs.c.state,
    jobs.c.reason,
    jobs.c.placement,
    jobs.c.version,
    jobs.c.created_at,
    jobs.c.started_at,
    jobs.c.attempt,
    jobs.c.failures,
    jobs.c.not_before,
    jobs.c.stop_target,
    jobs.c.stop_reason,
    jobs.c.attempt_started_at,
    jobs.c.replica_revisions,
)


@dataclass(frozen=True, slots=True)
class LiveJob:
    """A live job's lifecycle columns, without its document."""

    seq: int
    id: str
    owner: str
    name: str
    kind: str
    queue: str
    priority_value: int
    state: JobState
    reason: str | None
    placement: dict[int, str] | None
    version: int
    created_at: int
    started_at: int | None
    attempt: int
    failures: int
    not_before: int | None
    stop_target: JobState | None
    stop_reason: str | None
    attempt_started_at: int | None
    # A service's replica index -> the revision of its document it was launched with.
    replica_revisions: dict[int, int] | None = None


_LIVE_QUERY = (
    select(*_LIGHT_COLUMNS)
    .where(jobs.c.state.in_([s.value for s in LIVE_STATES]))
    .order_by(jobs.c.seq)
)
_CHANGED_QUERY = (
    select(*_LIGHT_COLUMNS).where(jobs.c.updated_at >= bindparam("since")).order_by(jobs.c.seq)
)
_STATE_BY_VALUE = {state.value: state for state in JobState}


def load_live_jobs(
    conn: Connection,
    *,
    changed_since: int | None = None,
    cache: dict[str, tuple[Any, LiveJob]] | None = None,
) -> list[LiveJob]:
    """Every PENDING, ADMITTED and RUNNING job, in submission order; with
    `changed_since`, instead every job (in any state) updated at or after that time.

    Read as plain tuples and built positionally: at 10,000 live jobs this runs every
    cycle, and per-row attribute access and enum construction were most of its cost.
    `cache` (job id -> (row, LiveJob), kept by the caller across reads): a row read
    again exactly as before gives back the same LiveJob without building it (or
    decoding its placement) anew; the caller drops ids it no longer needs.
    """
    states = _STATE_BY_VALUE
    loads = json.loads
    out = []
    if changed_since is None:
        rows = conn.execute(_LIVE_QUERY)
    else:
        rows = conn.execute(_CHANGED_QUERY, {"since": changed_since})
    for row in rows:
        if cache is not None:
            row = tuple(row)
            known = cache.get(row[1])
            if known is not None and known[0] == row:
                out.append(known[1])
                continue
        (seq, job_id, owner, name, kind, queue, priority_value, state, reason, placement,
         version, created_at, started_at, attempt, failures, not_before, stop_target,
         stop_reason, attempt_started_at, replica_revisions) = row  # fmt: skip
        out.append(
            LiveJob(
                seq,
                job_id,
                owner,
                name,
                kind,
                queue,
                priority_value,
                states[state],
                reason,
                None if placement is None else {int(k): v for k, v in loads(placement).items()},
                version,
                created_at,
                started_at,
                attempt,
                failures,
                not_before,
                None if stop_target is None else states[stop_target],
                stop_reason,
                attempt_started_at,
                None
                if replica_revisions is None
                else {int(k): int(v) for k, v in loads(replica_revisions).items()},
            )
        )
        if cache is not None:
            cache[job_id] = (row, out[-1])
    return out


def load_specs(conn: Connection, job_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The stored documents of these jobs (in chunks, to stay under parameter limits)."""
    ids = list(job_ids)
    specs: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for row in conn.execute(select(jobs.c.id, jobs.c.spec).where(jobs.c.id.in_(chunk))):
            specs[row.id] = json.loads(row.spec)
    return specs


@dataclass(slots=True)
class AttemptStart:
    """A job_attempts row written with an admission."""

    placement: Mapping[int, str]
    queue: str
    owner: str
    workers: int
    cpu_millicores: int
    memory_bytes: int
    gpus: int
    tpu_chips: int
    accelerator_model: str | None


@dataclass(slots=True)
class JobChange:
    """One job's changes in a cycle, applied only if its version is still `version`.

    `transitions` are the states it moves through, in order, each with its reason (an
    admitted job whose workers all finished between two cycles goes RUNNING, then
    SUCCEEDED: two events). `values` are other columns to set (placement, attempt,
    stop_target, ...). `notes` are extra events that do not change the state (a
    warning). With no transitions and only `reason` set, the change is reason-only.
    """

    job_id: str
    version: int
    state: JobState
    transitions: list[tuple[JobState, str | None]] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    attempt_start: AttemptStart | None = None
    attempt_end: tuple[int, str, str | None] | None = None  # (attempt, outcome, reason)
    attempt_running: int | None = None  # attempt whose workers all run now
    attempt_energy_joules: float | None = None  # measured GPU energy of the ended attempt
    # A model service's replica count changed within its attempt: (attempt, replicas
    # now, replicas before), recorded from this change's time on (attempt_replicas).
    replica_count: tuple[int, int, int] | None = None

    @property
    def reason_only(self) -> bool:
        return (
            not self.transitions
            and set(self.values) <= {"reason"}
            and not self.notes
            and self.attempt_start is None
            and self.attempt_end is None
            and self.attempt_running is None
            and self.replica_count is None
        )


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"), sort_keys=True)


_REASON_UPDATE = (
    update(jobs)
    .where(and_(jobs.c.id == bindparam("b_id"), jobs.c.version == bindparam("b_version")))
    .values(reason=bindparam("b_reason"))
)


def apply_changes(conn: Connection, changes: Sequence[JobChange]) -> set[str]:
    """Apply a cycle's changes in the caller's transaction; returns the ids that applied.

    A change whose job moved on since the loop read it (another version) is skipped,
    as is one the state machine would refuse; neither raises, so one stale job never
    costs the rest of the cycle's decisions. Statements are built once per shape and
    events and attempt rows are inserted in one statement each: a cycle that admits
    and finishes hundreds of jobs stays a handful of round trips plus one UPDATE each.
    """
    applied: set[str] = set()
    reason_only = [c for c in changes if c.reason_only]
    if reason_only:
        conn.execute(
            _REASON_UPDATE,
            [
                {"b_id": c.job_id, "b_version": c.version, "b_reason": c.values.get("reason")}
                for c in reason_only
            ],
        )
        # executemany reports no per-row counts; a reason that lost a race is harmless.
        applied.update(c.job_id for c in reason_only)
    at = now_us()
    events: list[dict[str, Any]] = []
    started: list[dict[str, Any]] = []
    attempts: list[dict[str, Any]] = []
    running: list[dict[str, Any]] = []
    ended: list[dict[str, Any]] = []
    replicas: list[dict[str, Any]] = []
    for change in changes:
        if change.reason_only:
            continue
        if not _apply_one(conn, change, at=at, events=events):
            continue
        applied.add(change.job_id)
        if any(t is JobState.RUNNING for t, _ in change.transitions):
            started.append({"b_id": change.job_id, "b_at": at})
        if change.attempt_start is not None:
            attempts.append(_attempt_row(change, at=at))
        if change.attempt_running is not None:
            running.append({"b_id": change.job_id, "b_attempt": change.attempt_running, "b_at": at})
        if change.replica_count is not None:
            attempt, now, before = change.replica_count
            replicas.append(
                {
                    "job_id": change.job_id,
                    "attempt": attempt,
                    "at": at,
                    "workers": now,
                    "delta": now - before,
                }
            )
        if change.attempt_end is not None:
            attempt, outcome, reason = change.attempt_end
            ended.append(
                {
                    "b_id": change.job_id,
                    "b_attempt": attempt,
                    "b_at": at,
                    "b_outcome": outcome,
                    "b_reason": reason,
                    "b_energy": change.attempt_energy_joules,
                }
            )
    if events:
        conn.execute(insert(job_events), events)
    if started:
        conn.execute(_FIRST_START, started)
    if attempts:
        conn.execute(insert(job_attempts), attempts)
    if running:
        conn.execute(_ATTEMPT_RUNNING, running)
    if ended:
        conn.execute(_ATTEMPT_ENDED, ended)
    if replicas:
        conn.execute(insert(attempt_replicas), replicas)
    return applied


# started_at is the first time the job ever ran (kept across attempts).
_FIRST_START = (
    update(jobs)
    .where(and_(jobs.c.id == bindparam("b_id"), jobs.c.started_at.is_(None)))
    .values(started_at=bindparam("b_at"))
)
_ATTEMPT_RUNNING = (
    update(job_attempts)
    .where(
        and_(
            job_attempts.c.job_id == bindparam("b_id"),
            job_attempts.c.attempt == bindparam("b_attempt"),
            job_attempts.c.started_at.is_(None),
        )
    )
    .values(started_at=bindparam("b_at"))
)
_ATTEMPT_ENDED = (
    update(job_attempts)
    .where(
        and_(
            job_attempts.c.job_id == bindparam("b_id"),
            job_attempts.c.attempt == bindparam("b_attempt"),
            job_attempts.c.ended_at.is_(None),
        )
    )
    .values(
        ended_at=bindparam("b_at"),
        outcome=bindparam("b_outcome"),
        reason=bindparam("b_reason"),
        energy_joules=bindparam("b_energy"),  # the ranks' NVML readings (None: unmeasured)
    )
)
_UPDATES: dict[tuple[str, ...], Any] = {}


def _update_statement(columns: tuple[str, ...]) -> Any:
    """UPDATE jobs SET <columns> WHERE id = :b_id AND version = :b_version, built once."""
    statement = _UPDATES.get(columns)
    if statement is None:
        statement = _UPDATES[columns] = (
            update(jobs)
            .where(and_(jobs.c.id == bindparam("b_id"), jobs.c.version == bindparam("b_version")))
            .values({name: bindparam(name) for name in columns})
        )
    return statement


def _apply_one(
    conn: Connection, change: JobChange, *, at: int, events: list[dict[str, Any]]
) -> bool:
    state = change.state
    mine: list[dict[str, Any]] = []
    for target, reason in change.transitions:
        if not can_transition(state, target):
            return False
        mine.append(
            {
                "job_id": change.job_id,
                "at": at,
                "from_state": state.value,
                "to_state": target.value,
                "reason": reason,
            }
        )
        state = target
    values = dict(change.values)
    if "placement" in values and values["placement"] is not None:
        values["placement"] = _dump({str(k): v for k, v in values["placement"].items()})
    if values.get("replica_revisions") is not None:
        values["replica_revisions"] = _dump(
            {str(k): int(v) for k, v in values["replica_revisions"].items()}
        )
    if change.transitions:
        values["state"] = state.value
        values.setdefault("reason", change.transitions[-1][1])
        if any(t is JobState.RUNNING for t, _ in change.transitions):
            values.setdefault("attempt_started_at", at)
        if state in TERMINAL_STATES:
            values["finished_at"] = at
    for note in change.notes:
        mine.append(
            {
                "job_id": change.job_id,
                "at": at,
                "from_state": state.value,
                "to_state": state.value,
                "reason": note,
            }
        )
    values["version"] = change.version + 1
    values["updated_at"] = at
    columns = tuple(sorted(values))
    result = conn.execute(
        _update_statement(columns), {**values, "b_id": change.job_id, "b_version": change.version}
    )
    if result.rowcount != 1:
        return False
    events.extend(mine)
    return True


def _attempt_row(change: JobChange, *, at: int) -> dict[str, Any]:
    start = change.attempt_start
    assert start is not None
    return {
        "job_id": change.job_id,
        "attempt": change.values["attempt"],
        "queue": start.queue,
        "owner": start.owner,
        "placement": _dump({str(k): v for k, v in start.placement.items()}),
        "workers": start.workers,
        "cpu_millicores": start.cpu_millicores,
        "memory_bytes": start.memory_bytes,
        "gpus": start.gpus,
        "tpu_chips": start.tpu_chips,
        "accelerator_model": start.accelerator_model,
        "admitted_at": at,
        "started_at": None,
        "ended_at": None,
        "outcome": None,
        "reason": None,
        "energy_joules": None,
    }


def attempt_rows(conn: Connection, *, job_id: str) -> list[dict[str, Any]]:
    """A job's attempts, oldest first (for the API and for tests)."""
    query = select(job_attempts).where(job_attempts.c.job_id == job_id)
    return [dict(row._mapping) for row in conn.execute(query.order_by(job_attempts.c.attempt))]


# --------------------------------------------------------------------------- lease


def try_acquire_lease(
    conn: Connection,
    *,
    name: str,
    holder: str,
    ttl_us: int,
    wake_address: str | None,
    at: int | None = None,
) -> bool:
    """Take or renew the lease `name` for `holder`; True when `holder` holds it now.

    Renewal succeeds only for the current holder, takeover only once the lease expired,
    both decided by one conditional UPDATE (or the INSERT of a first lease), so of two
    contenders exactly one wins.
    """
    at = now_us() if at is None else at
    result = conn.execute(
        update(leases)
        .where(
            and_(
                leases.c.name == name,
                (leases.c.holder == holder) | (leases.c.expires_at < at),
            )
        )
        .values(
            holder=holder,
            expires_at=at + ttl_us,
            renewed_at=at,
            wake_address=wake_address,
        )
    )
    if result.rowcount == 1:
        # A takeover also resets acquired_at; a renewal keeps it (cheap second statement
        # only when the holder changed is not worth the branch).
        return True
    exists = conn.execute(select(leases.c.name).where(leases.c.name == name)).first()
    if exists is not None:
        return False
    conn.execute(
        insert(leases).values(
            name=name,
            holder=holder,
            expires_at=at + ttl_us,
            acquired_at=at,
            renewed_at=at,
            wake_address=wake_address,
        )
    )
    return True


def release_lease(conn: Connection, *, name: str, holder: str) -> None:
    """Give the lease up at once (a clean shutdown), so another process need not wait."""
    conn.execute(
        update(leases)
        .where(and_(leases.c.name == name, leases.c.holder == holder))
        .values(expires_at=0)
    )


def lease_holder(conn: Connection, *, name: str) -> dict[str, Any] | None:
    """The lease row (holder, expires_at, wake_address), if any."""
    row = conn.execute(select(leases).where(leases.c.name == name)).first()
    return None if row is None else dict(row._mapping)


# --------------------------------------------------------------------------- nodes


def publish_nodes(conn: Connection, *, nodes: Mapping[str, Mapping[str, Any]]) -> None:
    """Replace the published node view with `nodes` (name -> JSON-able description)."""
    at = now_us()
    conn.execute(delete(cluster_nodes))
    if nodes:
        conn.execute(
            insert(cluster_nodes),
            [{"name": n, "node": _dump(d), "updated_at": at} for n, d in sorted(nodes.items())],
        )


def published_nodes(conn: Connection) -> dict[str, dict[str, Any]]:
    """The node view the loop last published (empty before its first cycle)."""
    rows = conn.execute(select(cluster_nodes.c.name, cluster_nodes.c.node))
    return {row.name: json.loads(row.node) for row in rows}
