"""Repository functions: the only code that reads or writes job, event and token rows.

Every function takes keyword-only arguments. Those taking a `conn` run inside the
caller's transaction (open one with `write_transaction` / `read_transaction`), so a
caller such as the scheduler can group several changes atomically. `submit_jobs` and
`submit_job` take the engine instead because they own their transaction boundary: a group
of submissions is committed together, and a duplicate Idempotency-Key is resolved by
reading the existing job once the group has committed.

Every state change goes through `transition_job`, which checks the state machine in
`states.py`, bumps `version` with a conditional UPDATE (optimistic concurrency: of two
writers that read the same version, exactly one wins) and writes the event row in the
same transaction.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from sqlalchemy import Connection, Engine, Row, and_, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from trainyard.store.engine import commit_outcome_unknown, read_transaction, write_transaction
from trainyard.store.errors import (
    ConcurrentUpdate,
    IdempotencyConflict,
    IllegalTransition,
    JobNotFound,
    StoreError,
)
from trainyard.store.records import (
    EventRecord,
    JobRecord,
    QueueCounts,
    QueuePosition,
    Submission,
    TokenRecord,
)
from trainyard.store.states import ACTIVE_STATES, TERMINAL_STATES, JobState, can_transition
from trainyard.store.tables import MAX_ROW_ID, job_events, jobs, tokens


class _Unset:
    """Marker for 'leave this column as it is' (None is a real value: clear it)."""


UNSET: Final = _Unset()

# Built once: executing a prebuilt statement with parameters hits SQLAlchemy's compiled
# cache directly, which matters on the submit path (a fresh .values() costs more than
# the INSERT itself).
_INSERT_JOB = insert(jobs).returning(jobs.c.seq)
_INSERT_EVENT = insert(job_events)


def now_us() -> int:
    """Current time in microseconds since the epoch (the store's time unit)."""
    return time.time_ns() // 1000


def new_job_id() -> str:
    """A random job id: 32 lowercase hex characters, valid in Kubernetes object names."""
    return uuid.uuid4().hex


def dump_document(value: Any) -> str:
    """A job document as the store writes it (canonical: sorted keys, compact, ASCII)."""
    return _dump(value)


def _dump(value: Any) -> str:
    # ASCII escaping keeps NUL and lone surrogates out of the column as raw characters,
    # which PostgreSQL text would refuse.
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"), sort_keys=True)


def _job_from_row(row: Row[Any]) -> JobRecord:
    m = row._mapping
    placement = m["placement"]
    return JobRecord(
        seq=m["seq"],
        id=m["id"],
        owner=m["owner"],
        name=m["name"],
        kind=m["kind"],
        queue=m["queue"],
        priority=m["priority"],
        priority_value=m["priority_value"],
        state=JobState(m["state"]),
        reason=m["reason"],
        spec=json.loads(m["spec"]),
        placement=(
            None if placement is None else {int(k): v for k, v in json.loads(placement).items()}
        ),
        version=m["version"],
        idempotency_key=m["idempotency_key"],
        request_hash=m["request_hash"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        attempt=m["attempt"],
        failures=m["failures"],
        not_before=m["not_before"],
        stop_target=None if m["stop_target"] is None else JobState(m["stop_target"]),
        stop_reason=m["stop_reason"],
        attempt_started_at=m["attempt_started_at"],
        estimated_start=m.get("estimated_start"),
    )


def _event_from_row(row: Row[Any]) -> EventRecord:
    m = row._mapping
    return EventRecord(
        id=m["id"],
        job_id=m["job_id"],
        at=m["at"],
        from_state=None if m["from_state"] is None else JobState(m["from_state"]),
        to_state=JobState(m["to_state"]),
        reason=m["reason"],
    )


# --------------------------------------------------------------------------- jobs


def _job_values(submission: Submission, *, at: int) -> dict[str, Any]:
    spec = submission.spec
    spec_json = submission.spec_json if submission.spec_json is not None else _dump(spec)
    return {
        "id": new_job_id(),
        "owner": submission.owner,
        "name": spec["name"],
        "kind": spec["kind"],
        "queue": spec["queue"],
        "priority": spec["priority"],
        "priority_value": submission.priority_value,
        "state": JobState.PENDING.value,
        "reason": None,
        "spec": spec_json,
        "spec_bytes": len(spec_json),
        "placement": None,
        "version": 1,
        "idempotency_key": submission.idempotency_key,
        "request_hash": submission.request_hash,
        "created_at": at,
        "updated_at": at,
        "started_at": None,
        "finished_at": None,
    }


_INSERT_SKIPPING_DUPLICATES: dict[str, Any] = {}


def _insert_skipping_duplicate_keys(conn: Connection) -> Any:
    """INSERT ... ON CONFLICT (owner, idempotency_key) DO NOTHING RETURNING id, seq."""
    name = conn.dialect.name
    statement = _INSERT_SKIPPING_DUPLICATES.get(name)
    if statement is None:
        dialect_insert = sqlite_insert if name == "sqlite" else postgresql_insert
        statement = (
            dialect_insert(jobs)
            .on_conflict_do_nothing(index_elements=["owner", "idempotency_key"])
            .returning(jobs.c.id, jobs.c.seq)
        )
        _INSERT_SKIPPING_DUPLICATES[name] = statement
    return statement


def _insert_event(conn: Connection, *, job_id: str, at: int) -> None:
    conn.execute(
        _INSERT_EVENT,
        {
            "job_id": job_id,
            "at": at,
            "from_state": None,
            "to_state": JobState.PENDING.value,
            "reason": "submitted",
        },
    )


def insert_job(conn: Connection, *, submission: Submission, at: int | None = None) -> JobRecord:
    """Insert a PENDING job and its first event in the caller's transaction.

    `submission.spec` is the validated job document; name, kind, queue and priority are
    taken from it. Raises IntegrityError when (owner, idempotency_key) already exists.
    """
    at = now_us() if at is None else at
    values = _job_values(submission, at=at)
    seq = conn.execute(_INSERT_JOB, values).scalar_one()
    _insert_event(conn, job_id=values["id"], at=at)
    return _record(values, seq=seq, spec=submission.spec)


def _record(values: Mapping[str, Any], *, seq: int, spec: Mapping[str, Any]) -> JobRecord:
    fields = {k: v for k, v in values.items() if k != "spec_bytes"}
    fields.update(seq=seq, state=JobState.PENDING, spec=dict(spec))
    return JobRecord(**fields)


def submit_jobs(
    engine: Engine, *, submissions: Sequence[Submission]
) -> list[tuple[JobRecord, bool] | Exception]:
    """Store several new jobs in one transaction (a group commit); one result per input.

    Each result is (job, created) or the exception for that submission (a StoreError, or
    the database's error for a row it refused). A submission
    whose (owner, Idempotency-Key) already has a job -- committed earlier, or earlier in
    this same group -- gets that job back with created=False, or IdempotencyConflict if
    its document differs (`request_hash`). The unique constraint decides, so concurrent
    identical submits from several processes still create one job. If the group fails as
    a whole, each submission is retried alone so one bad row cannot fail the others.
    """
    try:
        with write_transaction(engine) as conn:
            inserted = _insert_group(conn, submissions, at=now_us())
    except DBAPIError as exc:
        if commit_outcome_unknown(exc) and all(item.idempotency_key for item in submissions):
            return _resubmit_after_unknown_outcome(engine, submissions, exc)
        if len(submissions) == 1 or not isinstance(exc, IntegrityError | DataError):
            # Not a row's fault (the database is down, locked, timed out): retrying each
            # submission alone would only multiply the wait.
            return [exc] * len(submissions)
        return [submit_jobs(engine, submissions=[item])[0] for item in submissions]
    results: list[tuple[JobRecord, bool] | Exception] = []
    for item, job in zip(submissions, inserted, strict=True):
        if job is not None:
            results.append((job, True))
            continue
        # The group is committed: a failure to read back one duplicate's job must not
        # turn the other, stored, submissions into errors.
        try:
            results.append(_existing(engine, item))
        except Exception as exc:
            results.append(exc)
    return results


SERVER_KEY_PREFIX = "server "
"""Idempotency keys the server assigns start with this; a client's key cannot (no space)."""


def server_idempotency_key() -> str:
    """A key for a submission that came without one (see `_resubmit_after_unknown_outcome`)."""
    return SERVER_KEY_PREFIX + uuid.uuid4().hex


def _resubmit_after_unknown_outcome(
    engine: Engine, submissions: Sequence[Submission], first: DBAPIError
) -> list[tuple[JobRecord, bool] | Exception]:
    """The group's COMMIT may or may not have happened (the connection broke): submit it
    again. Every submission has an idempotency key (the server assigns one when the client
    gave none), so a job that was committed comes back as that job, and one that was not
    is stored now: either way exactly one job, never a second one for a client to find.
    """
    try:
        results = submit_jobs(engine, submissions=submissions)
    except Exception:  # pragma: no cover - submit_jobs returns its errors
        return [first] * len(submissions)
    resolved: list[tuple[JobRecord, bool] | Exception] = []
    for item, result in zip(submissions, results, strict=True):
        if isinstance(result, tuple) and not result[1]:
            assert item.idempotency_key is not None
            if item.idempotency_key.startswith(SERVER_KEY_PREFIX):
                # Only this request ever had this key: the job is the one it created.
                result = (result[0], True)
        resolved.append(result)
    return resolved


def _insert_group(
    conn: Connection, submissions: Sequence[Submission], *, at: int
) -> list[JobRecord | None]:
    """Insert a group with two statements (jobs, then events); None where a key existed.

    Both are multi-row INSERTs (SQLAlchemy's "insertmanyvalues"), so a group of any size
    costs two round trips. Rows skipped by ON CONFLICT DO NOTHING return nothing; the
    returned ids tell which were stored.
    """
    rows = [_job_values(item, at=at) for item in submissions]
    statement = _insert_skipping_duplicate_keys(conn)
    stored = {row.id: row.seq for row in conn.execute(statement, rows)}
    events = [
        {
            "job_id": row["id"],
            "at": at,
            "from_state": None,
            "to_state": JobState.PENDING.value,
            "reason": "submitted",
        }
        for row in rows
        if row["id"] in stored
    ]
    if events:
        conn.execute(_INSERT_EVENT, events)
    result: list[JobRecord | None] = []
    for item, row in zip(submissions, rows, strict=True):
        seq = stored.get(row["id"])
        if seq is None:
            result.append(None)
            continue
        result.append(_record(row, seq=seq, spec=item.spec))
    return result


def _existing(engine: Engine, item: Submission) -> tuple[JobRecord, bool] | StoreError:
    assert item.idempotency_key is not None
    with read_transaction(engine) as conn:
        existing = get_job_by_idempotency_key(
            conn, owner=item.owner, idempotency_key=item.idempotency_key
        )
    if existing is None:  # pragma: no cover - the constraint said it exists
        raise RuntimeError("conflict on an idempotency key that is not stored")
    if item.request_hash is not None and existing.request_hash != item.request_hash:
        return IdempotencyConflict(item.idempotency_key, existing.id)
    return existing, False


def submit_job(
    engine: Engine,
    *,
    owner: str,
    spec: Mapping[str, Any],
    priority_value: int,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> tuple[JobRecord, bool]:
    """Store a new job, or return the one this Idempotency-Key already created.

    Returns (job, created); raises IdempotencyConflict when the key was used for a
    different document. See `submit_jobs`.
    """
    (result,) = submit_jobs(
        engine,
        submissions=[
            Submission(
                owner=owner,
                spec=spec,
                priority_value=priority_value,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
            )
        ],
    )
    if isinstance(result, Exception):
        raise result
    return result


def get_job(conn: Connection, *, job_id: str, owner: str | None = None) -> JobRecord | None:
    """The job with this id; with `owner`, only if that user owns it.

    An id with a NUL character cannot exist (ids are hex) and PostgreSQL refuses NUL in
    a text parameter with an error, so such an id is answered "not found" without asking.
    """
    if "\x00" in job_id:
        return None
    query = select(jobs).where(jobs.c.id == job_id)
    if owner is not None:
        query = query.where(jobs.c.owner == owner)
    row = conn.execute(query).first()
    return None if row is None else _job_from_row(row)


def get_job_by_idempotency_key(
    conn: Connection, *, owner: str, idempotency_key: str
) -> JobRecord | None:
    """The job `owner` created with this Idempotency-Key, if any."""
    row = conn.execute(
        select(jobs).where(jobs.c.owner == owner, jobs.c.idempotency_key == idempotency_key)
    ).first()
    return None if row is None else _job_from_row(row)


def _list_jobs_query(
    *,
    owner: str | None,
    states: Iterable[JobState] | None,
    queue: str | None,
    kind: str | None,
    before_seq: int | None,
    limit: int,
    columns: Sequence[Any] = (),
) -> Any:
    query = select(*columns) if columns else select(jobs)
    if owner is not None:
        query = query.where(jobs.c.owner == owner)
    state_values = sorted({JobState(s).value for s in states}) if states else []
    if len(state_values) == 1:
        query = query.where(jobs.c.state == state_values[0])
    elif state_values:
        query = query.where(jobs.c.state.in_(state_values))
    if queue is not None:
        query = query.where(jobs.c.queue == queue)
    if kind is not None:
        query = query.where(jobs.c.kind == kind)
    if before_seq is not None:
        query = query.where(jobs.c.seq < before_seq)
    return query.order_by(jobs.c.seq.desc()).limit(limit)


def job_states(conn: Connection, *, job_ids: Sequence[str]) -> dict[str, JobState]:
    """The state of each of these jobs that exists (one query, for log followers)."""
    if not job_ids:
        return {}
    query = select(jobs.c.id, jobs.c.state).where(jobs.c.id.in_(list(job_ids)))
    return {row.id: JobState(row.state) for row in conn.execute(query)}


def job_seq(conn: Connection, *, job_id: str, owner: str | None = None) -> int | None:
    """The submission order of a job (only `owner`'s, if given): list cursors name a job."""
    if "\x00" in job_id:
        return None
    query = select(jobs.c.seq).where(jobs.c.id == job_id)
    if owner is not None:
        query = query.where(jobs.c.owner == owner)
    return conn.execute(query).scalar()


def list_jobs(
    conn: Connection,
    *,
    owner: str | None = None,
    states: Iterable[JobState] | None = None,
    queue: str | None = None,
    kind: str | None = None,
    before_seq: int | None = None,
    limit: int = 50,
) -> list[JobRecord]:
    """A page of jobs, newest first; pass the last job's `seq` as `before_seq` for the next.

    Keyset pagination: each page is an index range scan however deep the page is.
    """
    query = _list_jobs_query(
        owner=owner, states=states, queue=queue, kind=kind, before_seq=before_seq, limit=limit
    )
    return [_job_from_row(row) for row in conn.execute(query)]


def list_job_rows(
    conn: Connection,
    *,
    owner: str | None = None,
    states: Iterable[JobState] | None = None,
    queue: str | None = None,
    kind: str | None = None,
    before_seq: int | None = None,
    limit: int = 50,
    max_bytes: int | None = None,
) -> list[Mapping[str, Any]]:
    """The page `list_jobs` returns, as raw column mappings: `spec` and `placement` are
    the stored JSON text, `state` a plain string.

    For a caller that only re-serializes the page (GET /v1/jobs): the stored document is
    already JSON, so parsing it into a record only to encode it again is skipped.

    With `max_bytes`, the page also ends before the job whose document would take the
    page's documents over `max_bytes` (the first job is always included). The database
    makes the cut (a running sum of `spec_bytes` over the page's keys), so the documents
    past it are never read into this process. Each mapping then has `page_rows`: how many
    jobs the page had before the cut (more than returned means there is more to read).
    """
    filters: dict[str, Any] = {
        "owner": owner,
        "states": states,
        "queue": queue,
        "kind": kind,
        "before_seq": before_seq,
        "limit": limit,
    }
    if max_bytes is None:
        return [row._mapping for row in conn.execute(_list_jobs_query(**filters))]
    keys = _list_jobs_query(**filters, columns=(jobs.c.seq, jobs.c.spec_bytes)).subquery()
    running = select(
        keys.c.seq,
        func.sum(keys.c.spec_bytes).over(order_by=keys.c.seq.desc()).label("running"),
        func.row_number().over(order_by=keys.c.seq.desc()).label("position"),
        func.count().over().label("page_rows"),
    ).subquery()
    query = (
        select(jobs, running.c.page_rows)
        .join(running, jobs.c.seq == running.c.seq)
        .where(or_(running.c.running <= max_bytes, running.c.position == 1))
        .order_by(jobs.c.seq.desc())
    )
    return [row._mapping for row in conn.execute(query)]


def list_pending(
    conn: Connection, *, queue: str | None = None, owner: str | None = None
) -> list[JobRecord]:
    """PENDING jobs in queue order: higher priority first, then earlier submission.

    Submission order is `seq`, which a preempted job keeps, so it returns to its place.
    """
    query = select(jobs).where(jobs.c.state == JobState.PENDING.value)
    if queue is not None:
        query = query.where(jobs.c.queue == queue)
    if owner is not None:
        query = query.where(jobs.c.owner == owner)
    query = query.order_by(jobs.c.priority_value.desc(), jobs.c.seq.asc())
    return [_job_from_row(row) for row in conn.execute(query)]


def pending_positions(
    conn: Connection, *, queue: str, owner: str | None = None, limit: int = 100
) -> list[QueuePosition]:
    """The first `limit` pending jobs of `queue` (only `owner`'s, if given) with their
    position among all of the queue's pending jobs, in the order of `list_pending`.

    Positions are numbered by the database (a window function), so a queue of 100,000
    pending jobs is not loaded into memory to find one user's place in it.
    """
    ranked = (
        select(
            jobs.c.id,
            jobs.c.name,
            jobs.c.owner,
            jobs.c.priority,
            jobs.c.created_at,
            func.row_number()
            .over(order_by=(jobs.c.priority_value.desc(), jobs.c.seq.asc()))
            .label("position"),
        )
        .where(jobs.c.state == JobState.PENDING.value, jobs.c.queue == queue)
        .subquery()
    )
    query = select(ranked)
    if owner is not None:
        query = query.where(ranked.c.owner == owner)
    query = query.order_by(ranked.c.position).limit(limit)
    return [
        QueuePosition(
            position=row.position,
            id=row.id,
            name=row.name,
            owner=row.owner,
            priority=row.priority,
            created_at=row.created_at,
        )
        for row in conn.execute(query)
    ]


def list_active(conn: Connection) -> list[JobRecord]:
    """Jobs holding resources (ADMITTED or RUNNING)."""
    query = (
        select(jobs)
        .where(jobs.c.state.in_(sorted(s.value for s in ACTIVE_STATES)))
        .order_by(jobs.c.seq.asc())
    )
    return [_job_from_row(row) for row in conn.execute(query)]


def list_events(conn: Connection, *, job_id: str) -> list[EventRecord]:
    """A job's transitions, oldest first."""
    query = select(job_events).where(job_events.c.job_id == job_id).order_by(job_events.c.id)
    return [_event_from_row(row) for row in conn.execute(query)]


def _update_job(
    conn: Connection, *, job: JobRecord, expected_version: int | None, values: dict[str, Any]
) -> JobRecord:
    if expected_version is not None and expected_version != job.version:
        raise ConcurrentUpdate(job.id)
    values = {**values, "version": job.version + 1, "updated_at": values.get("updated_at")}
    if values["updated_at"] is None:
        values["updated_at"] = now_us()
    result = conn.execute(
        update(jobs).where(and_(jobs.c.id == job.id, jobs.c.version == job.version)).values(values)
    )
    if result.rowcount != 1:
        raise ConcurrentUpdate(job.id)
    updated = get_job(conn, job_id=job.id)
    assert updated is not None
    return updated


def transition_job(
    conn: Connection,
    *,
    job_id: str,
    to_state: JobState,
    reason: str | None = None,
    expected_version: int | None = None,
    placement: Mapping[int, str] | _Unset | None = UNSET,
    owner: str | None = None,
) -> JobRecord:
    """Move a job to `to_state` and record the event, atomically.

    Raises JobNotFound, IllegalTransition (the state machine forbids it) or
    ConcurrentUpdate (someone else changed the job since `expected_version`, or between
    our read and our write). The job's `reason` becomes `reason`. Going back to PENDING
    clears the placement unless one is given; `seq` and `created_at` never change, so a
    preempted job keeps its place in the queue.
    """
    to_state = JobState(to_state)
    job = get_job(conn, job_id=job_id, owner=owner)
    if job is None:
        raise JobNotFound(job_id)
    if not can_transition(job.state, to_state):
        raise IllegalTransition(job_id, job.state.value, to_state.value)
    at = now_us()
    values: dict[str, Any] = {"state": to_state.value, "reason": reason, "updated_at": at}
    if to_state is JobState.RUNNING and job.started_at is None:
        values["started_at"] = at
    if to_state in TERMINAL_STATES:
        values["finished_at"] = at
    if not isinstance(placement, _Unset):
        values["placement"] = None if placement is None else _dump_placement(placement)
    elif to_state is JobState.PENDING:
        values["placement"] = None
    updated = _update_job(conn, job=job, expected_version=expected_version, values=values)
    conn.execute(
        _INSERT_EVENT,
        {
            "job_id": job_id,
            "at": at,
            "from_state": job.state.value,
            "to_state": to_state.value,
            "reason": reason,
        },
    )
    return updated


def request_stop(
    conn: Connection,
    *,
    job_id: str,
    target: JobState,
    reason: str,
    owner: str | None = None,
) -> JobRecord:
    """Ask the loop to stop a job's workers and then move it to `target` (cancel).

    A job without workers (PENDING, or PREEMPTED between its two steps) moves to
    `target` at once; an ADMITTED or RUNNING one keeps its state, and its resources,
    until the backend reports every worker gone (the loop finishes the transition).
    Raises JobNotFound or IllegalTransition like `transition_job`.
    """
    job = get_job(conn, job_id=job_id, owner=owner)
    if job is None:
        raise JobNotFound(job_id)
    if not can_transition(job.state, target):
        raise IllegalTransition(job_id, job.state.value, target.value)
    if job.state not in ACTIVE_STATES:
        return transition_job(
            conn, job_id=job_id, to_state=target, reason=reason, expected_version=job.version
        )
    if job.stop_target is target:
        return job  # asked twice: nothing new to do
    return _update_job(
        conn,
        job=job,
        expected_version=job.version,
        values={
            "stop_target": target.value,
            "stop_reason": reason,
            "reason": f"stopping: {reason}",
        },
    )


def _dump_placement(placement: Mapping[int, str]) -> str:
    return _dump({str(int(index)): str(node) for index, node in placement.items()})


def set_placement(
    conn: Connection,
    *,
    job_id: str,
    placement: Mapping[int, str] | None,
    expected_version: int | None = None,
) -> JobRecord:
    """Record where each worker of a job runs (worker index -> node name), or clear it."""
    job = get_job(conn, job_id=job_id)
    if job is None:
        raise JobNotFound(job_id)
    value = None if placement is None else _dump_placement(placement)
    return _update_job(
        conn, job=job, expected_version=expected_version, values={"placement": value}
    )


def set_reason(
    conn: Connection, *, job_id: str, reason: str | None, expected_version: int | None = None
) -> JobRecord:
    """Explain why a job is where it is (e.g. "unschedulable: ...") without moving it."""
    job = get_job(conn, job_id=job_id)
    if job is None:
        raise JobNotFound(job_id)
    return _update_job(conn, job=job, expected_version=expected_version, values={"reason": reason})


def queue_counts(conn: Connection, *, owner: str | None = None) -> list[QueueCounts]:
    """Pending/admitted/running counts and the oldest pending submit time, per queue."""
    live = [JobState.PENDING.value, JobState.ADMITTED.value, JobState.RUNNING.value]
    query = (
        select(jobs.c.queue, jobs.c.state, func.count(), func.min(jobs.c.created_at))
        .where(jobs.c.state.in_(live))
        .group_by(jobs.c.queue, jobs.c.state)
    )
    if owner is not None:
        query = query.where(jobs.c.owner == owner)
    per_queue: dict[str, dict[str, Any]] = {}
    for queue, state, count, oldest in conn.execute(query):
        entry = per_queue.setdefault(queue, {"oldest": None})
        entry[state] = count
        if state == JobState.PENDING.value:
            entry["oldest"] = oldest
    return [
        QueueCounts(
            queue=queue,
            pending=entry.get(JobState.PENDING.value, 0),
            admitted=entry.get(JobState.ADMITTED.value, 0),
            running=entry.get(JobState.RUNNING.value, 0),
            oldest_pending_created_at=entry["oldest"],
        )
        for queue, entry in sorted(per_queue.items())
    ]


def count_jobs_by_state(conn: Connection) -> dict[tuple[str, str], int]:
    """Number of jobs per (queue, state), for metrics."""
    query = select(jobs.c.queue, jobs.c.state, func.count()).group_by(jobs.c.queue, jobs.c.state)
    return {(queue, state): count for queue, state, count in conn.execute(query)}


# --------------------------------------------------------------------------- tokens


_TOKEN_COLUMNS = (
    tokens.c.id,
    tokens.c.user,
    tokens.c.role,
    tokens.c.description,
    tokens.c.created_at,
    tokens.c.expires_at,
    tokens.c.revoked_at,
)


def _token_from_row(row: Row[Any]) -> TokenRecord:
    return TokenRecord(
        id=row.id,
        user=row.user,
        role=row.role,
        description=row.description,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


def insert_token(
    conn: Connection,
    *,
    token_hash: str,
    user: str,
    role: str,
    description: str | None = None,
    expires_at: int | None = None,
) -> TokenRecord:
    """Store a token's hash with its user and role ("admin" or "user"), and its expiry."""
    if role not in ("admin", "user"):
        raise ValueError(f"role must be 'admin' or 'user', not {role!r}")
    at = now_us()
    token_id = conn.execute(
        insert(tokens)
        .values(
            token_hash=token_hash,
            user=user,
            role=role,
            description=description,
            created_at=at,
            expires_at=expires_at,
        )
        .returning(tokens.c.id)
    ).scalar_one()
    return TokenRecord(
        id=token_id,
        user=user,
        role=role,
        description=description,
        created_at=at,
        expires_at=expires_at,
    )


def find_token(conn: Connection, *, token_hash: str) -> TokenRecord | None:
    """The token with this hash, if any (revoked and expired ones too: see `refusal`)."""
    row = conn.execute(select(*_TOKEN_COLUMNS).where(tokens.c.token_hash == token_hash)).first()
    return None if row is None else _token_from_row(row)


def list_tokens(conn: Connection, *, user: str | None = None) -> list[TokenRecord]:
    """Every token (only `user`'s, if given), oldest first. Hashes are never returned."""
    query = select(*_TOKEN_COLUMNS).order_by(tokens.c.id)
    if user is not None:
        query = query.where(tokens.c.user == user)
    return [_token_from_row(row) for row in conn.execute(query)]


def revoke_token(conn: Connection, *, token_id: int) -> TokenRecord | None:
    """Revoke a token from now on (a no-op if it already is); None if there is no such id.

    An id outside what the column can hold names no token: the database would refuse it as
    a parameter (OverflowError on SQLite, "bigint out of range" on PostgreSQL) instead.
    """
    if not 1 <= token_id <= MAX_ROW_ID:
        return None
    conn.execute(
        update(tokens)
        .where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
        .values(revoked_at=now_us())
    )
    row = conn.execute(select(*_TOKEN_COLUMNS).where(tokens.c.id == token_id)).first()
    return None if row is None else _token_from_row(row)
