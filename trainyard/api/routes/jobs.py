"""/v1/jobs: submit, list, get, events, logs and cancel."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from trainyard.api.auth import Principal
from trainyard.api.body import YamlBodyRoute
from trainyard.api.deps import (
    CommitterDep,
    EngineDep,
    LogFollowersDep,
    MetricsDep,
    PrincipalDep,
    SettingsDep,
    WakerDep,
)
from trainyard.api.document_rules import check_document
from trainyard.api.errors import FieldRuleError
from trainyard.api.logs import follow_log, read_chunks
from trainyard.api.routes.common import CONFLICT, ERRORS, NOT_FOUND, TOO_LARGE
from trainyard.api.schemas import (
    CheckpointsPublic,
    ErrorBody,
    EventsPublic,
    JobCreate,
    JobPublic,
    JobsPublic,
)
from trainyard.api.views import (
    event_public,
    iso_time,
    job_public,
    jobs_page_response,
    json_response,
)
from trainyard.api.volume_rules import check_volumes
from trainyard.checkpoint_index import list_checkpoints
from trainyard.config import Settings
from trainyard.layout import job_output_dir, worker_log_path
from trainyard.quotas import effective_priority_classes, effective_queues
from trainyard.store import (
    CANCELLABLE_STATES,
    TERMINAL_STATES,
    ConcurrentUpdate,
    IllegalTransition,
    JobNotFound,
    JobRecord,
    JobState,
    Submission,
    dump_document,
    get_job,
    job_seq,
    list_events,
    list_job_rows,
    read_transaction,
    request_stop,
    server_idempotency_key,
    write_transaction,
)
from trainyard.store.checkpoints import reported_checkpoints
from trainyard.store.services import load_endpoints

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=YamlBodyRoute, responses=ERRORS)

IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
NO_NUL = r"^[^\x00]*$"


def _check_queue_and_priority(job: JobCreate, settings: Settings) -> int:
    """422 for an unknown queue or priority class; returns the class's priority value."""
    queues = [q.name for q in effective_queues(settings)]
    if job.queue not in queues:
        raise FieldRuleError(
            "queue", "unknown_queue", f"unknown queue {job.queue!r}; known: {', '.join(queues)}"
        )
    classes = effective_priority_classes(settings)
    if job.priority not in classes:
        known = ", ".join(classes)
        raise FieldRuleError(
            "priority",
            "unknown_priority_class",
            f"unknown priority class {job.priority!r}; known: {known}",
        )
    return classes[job.priority]


def check_checkpoint_job(
    engine: Engine, job_id: str, principal: Principal, settings: Settings
) -> None:
    """422 (naming `checkpoint_job`) unless it is a training job the caller may see that
    has written at least one checkpoint."""
    with read_transaction(engine) as conn:
        source = get_job(conn, job_id=job_id, owner=_visible_owner(principal))
    if source is None:
        raise FieldRuleError("checkpoint_job", "job_not_found", f"no job {job_id!r}")
    if source.kind != "training":
        raise FieldRuleError(
            "checkpoint_job", "training_job", f"job {job_id} is a {source.kind} job"
        )
    if settings.backend != "local":
        with read_transaction(engine) as conn:
            reported = reported_checkpoints(conn, job_id=job_id)
        if not reported:
            raise FieldRuleError(
                "checkpoint_job",
                "no_checkpoint",
                f"job {job_id} has reported no checkpoint (its worker 0 reports them when "
                "its container ends)",
            )
        return
    output = job_output_dir(settings.home, job_id)
    if not any(output.glob("checkpoint-*.pt")):
        raise FieldRuleError(
            "checkpoint_job", "no_checkpoint", f"job {job_id} has no checkpoint in {output}"
        )


def check_stored_size(spec_json: str, settings: Settings) -> None:
    """413 when a job document, as stored, is over the per-job limit (a submit, or the
    document an update would leave): list pages and the loop read whole documents."""
    if len(spec_json) > settings.max_job_document_bytes:
        raise HTTPException(
            status_code=413,
            detail=f"the job document is {len(spec_json)} bytes as stored; the limit is "
            f"{settings.max_job_document_bytes} (TRAINYARD_MAX_JOB_DOCUMENT_BYTES)",
        )


def _visible_owner(principal: Principal) -> str | None:
    return None if principal.is_admin else principal.user


@router.post(
    "",
    status_code=201,
    response_model=JobPublic,
    summary="Submit a job",
    responses={**CONFLICT, **TOO_LARGE},
    openapi_extra={
        "requestBody": {
            "content": {"application/yaml": {"schema": {"$ref": "#/components/schemas/JobCreate"}}}
        }
    },
)
async def submit(
    job: JobCreate,
    principal: PrincipalDep,
    settings: SettingsDep,
    committer: CommitterDep,
    metrics: MetricsDep,
    waker: WakerDep,
    engine: EngineDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description="Retrying with the same key returns the same job, never a second one.",
        ),
    ] = None,
) -> Response:
    """Store a job as PENDING; the scheduler takes it from there.

    A job that no node could ever hold is accepted: the scheduler leaves it PENDING with
    an `unschedulable: ...` reason.
    """
    priority_value = _check_queue_and_priority(job, settings)
    check_volumes(job, principal, settings)
    if job.checkpoint_job is not None:
        await run_in_threadpool(
            check_checkpoint_job, engine, job.checkpoint_job, principal, settings
        )
    # Free-form args before dumping (which would turn NaN into null), then every string.
    check_document(job.workload.args, "workload.args")
    spec = job.model_dump(mode="json")
    check_document(spec)
    spec_json = dump_document(spec)
    check_stored_size(spec_json, settings)
    request_hash = (
        hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
        if idempotency_key
        else None
    )
    record, created = await committer.submit(
        Submission(
            owner=principal.user,
            spec=spec,
            priority_value=priority_value,
            # Without a client key the server assigns one, so that a COMMIT whose outcome
            # is unknown can be resubmitted without ever storing a second job.
            idempotency_key=idempotency_key or server_idempotency_key(),
            request_hash=request_hash,
            spec_json=spec_json,
        )
    )
    headers = {"Location": f"/v1/jobs/{record.id}"}
    if created:
        metrics.submitted_in(record.queue).inc()
        waker.wake()
    else:
        headers["Idempotent-Replayed"] = "true"
    return json_response(job_public(record), status_code=201, headers=headers)


CURSOR_PATTERN = r"^[0-9a-f]{32}$"


def encode_cursor(job_id: str) -> str:
    """The cursor for the page after this job: the job's id. It names a job the caller
    has already seen (never a position or a count), so it reveals nothing else; clients
    treat it as opaque. A cursor naming no job the caller can see gives an empty page."""
    return job_id


class JobsQuery(BaseModel):
    """Filters and paging of GET /v1/jobs; unknown parameters are refused like unknown fields."""

    model_config = ConfigDict(extra="forbid")

    state: list[JobState] | None = Field(default=None, description="Repeat to match several.")
    # No NUL: PostgreSQL refuses it in a text parameter (a 500), and no name contains one.
    queue: str | None = Field(default=None, max_length=63, pattern=NO_NUL)
    owner: str | None = Field(
        default=None,
        max_length=128,
        pattern=NO_NUL,
        description="Admins only; users see their own.",
    )
    kind: Literal["training", "inference"] | None = None
    cursor: str | None = Field(
        default=None, pattern=CURSOR_PATTERN, description="next_cursor of the last page."
    )
    limit: int = Field(default=50, ge=1, le=500)


@router.get("", response_model=JobsPublic, summary="List jobs, newest first")
def list_(
    principal: PrincipalDep,
    engine: EngineDep,
    settings: SettingsDep,
    query: Annotated[JobsQuery, Query()],
) -> Response:
    """A page of the caller's jobs (every job for an admin), filtered, newest first."""
    visible = _visible_owner(principal)
    if visible is not None and query.owner is not None and query.owner != visible:
        # A user filtering on someone else's name sees nothing, not an error.
        return json_response({"data": [], "count": 0, "next_cursor": None})
    owner = visible if visible is not None else query.owner
    with read_transaction(engine) as conn:
        before = None
        if query.cursor:
            before = job_seq(conn, job_id=query.cursor, owner=visible)
            if before is None:  # no such job, or not the caller's: nothing comes after it
                return json_response({"data": [], "count": 0, "next_cursor": None})
        rows = list_job_rows(
            conn,
            owner=owner,
            states=query.state,
            queue=query.queue,
            kind=query.kind,
            before_seq=before,
            limit=query.limit,
            max_bytes=settings.max_page_bytes,
        )
    more = len(rows) == query.limit or (bool(rows) and rows[0]["page_rows"] > len(rows))
    next_cursor = encode_cursor(rows[-1]["id"]) if more else None
    return jobs_page_response(rows, next_cursor)


@router.get("/{job_id}", response_model=JobPublic, responses=NOT_FOUND, summary="Get a job")
def get(job_id: str, principal: PrincipalDep, engine: EngineDep) -> Response:
    with read_transaction(engine) as conn:
        job = get_job(conn, job_id=job_id, owner=_visible_owner(principal))
        service = load_endpoints(conn, [job_id]).get(job_id) if job is not None else None
    if job is None:
        raise JobNotFound(job_id)
    document = job_public(job)
    if service is not None and job.state not in TERMINAL_STATES:
        document["endpoint"] = service.endpoint
        document["ready_replicas"] = len(service.ready)
    return json_response(document)


@router.get(
    "/{job_id}/events",
    response_model=EventsPublic,
    responses=NOT_FOUND,
    summary="A job's state transitions",
)
def events(job_id: str, principal: PrincipalDep, engine: EngineDep) -> dict[str, Any]:
    with read_transaction(engine) as conn:
        if get_job(conn, job_id=job_id, owner=_visible_owner(principal)) is None:
            raise JobNotFound(job_id)
        records = list_events(conn, job_id=job_id)
    return {"data": [event_public(e) for e in records], "count": len(records)}


@router.get(
    "/{job_id}/checkpoints",
    response_model=CheckpointsPublic,
    responses=NOT_FOUND,
    summary="A job's checkpoints (step, time, size, attempt)",
)
def checkpoints(
    job_id: str, principal: PrincipalDep, engine: EngineDep, settings: SettingsDep
) -> Response:
    """The checkpoints the job's output directory holds (none once the retention has
    deleted them). Locally, read from the directory now (`source: local`). On the
    kubernetes backend they live on the job's claim, which this server does not mount:
    the list is what the job's worker 0 last reported when its container ended
    (`source: reported`; empty while the first attempt still runs)."""
    with read_transaction(engine) as conn:
        if get_job(conn, job_id=job_id, owner=_visible_owner(principal)) is None:
            raise JobNotFound(job_id)
        found = [] if settings.backend == "local" else reported_checkpoints(conn, job_id=job_id)
    source = "reported"
    if settings.backend == "local":
        found, source = list_checkpoints(job_output_dir(settings.home, job_id)), "local"
    data = [{**c, "written_at": iso_time(int(c["written_at"] * 1_000_000))} for c in found]
    return json_response({"data": data, "count": len(data), "source": source})


@router.post(
    "/{job_id}/cancel",
    response_model=JobPublic,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Cancel a job",
)
def cancel(
    job_id: str,
    principal: PrincipalDep,
    engine: EngineDep,
    metrics: MetricsDep,
    waker: WakerDep,
) -> Response:
    """Cancel a job (409 once it has finished).

    A pending job is CANCELLED at once. A job with workers keeps its state with
    `stopping: CANCELLED` while its workers get SIGTERM and the grace period to
    checkpoint; it becomes CANCELLED when the backend reports them all gone.
    """
    for attempt in range(5):
        try:
            with write_transaction(engine) as conn:
                job = get_job(conn, job_id=job_id, owner=_visible_owner(principal))
                if job is None:
                    raise JobNotFound(job_id)
                if job.state not in CANCELLABLE_STATES:
                    raise IllegalTransition(job_id, job.state.value, JobState.CANCELLED.value)
                updated = request_stop(
                    conn,
                    job_id=job_id,
                    target=JobState.CANCELLED,
                    reason=f"cancelled by {principal.user}",
                )
            break
        except ConcurrentUpdate:
            # The loop changed the job between our read and write (it only ever moves
            # it forward); read it again and decide anew.
            if attempt == 4:
                raise
    metrics.cancelled.inc()
    waker.wake()
    return json_response(job_public(updated))


class LogsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    follow: bool = Field(default=False, description="Stream new output until the job ends.")
    worker: int = Field(
        default=0, ge=0, le=1023, description="Which worker's output (0 to workers - 1)."
    )


@router.get(
    "/{job_id}/logs",
    responses={
        **NOT_FOUND,
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Output"},
        429: {"model": ErrorBody, "description": "Too many log streams open for this user"},
    },
    response_class=Response,
    summary="A worker's output (follow=true streams it until the job ends)",
)
async def logs(
    job_id: str,
    principal: PrincipalDep,
    engine: EngineDep,
    settings: SettingsDep,
    followers: LogFollowersDep,
    query: Annotated[LogsQuery, Query()],
) -> Response:
    """Worker `worker`'s output (all attempts, appended). With follow=true the stream
    stays open, sending output as it is written, and ends once the job has finished."""
    owner = _visible_owner(principal)

    def load() -> JobRecord | None:
        with read_transaction(engine) as conn:
            return get_job(conn, job_id=job_id, owner=owner)

    job = await run_in_threadpool(load)
    if job is None:
        raise JobNotFound(job_id)
    workers = int(job.spec.get("workers", 1))
    if query.worker >= workers:
        raise FieldRuleError(
            "worker",
            "worker_index",
            f"job {job_id} has {workers} worker(s): worker must be 0 to {workers - 1}",
        )
    path = worker_log_path(settings.home, job_id, query.worker)
    media_type = "text/plain; charset=utf-8"
    if not query.follow or job.state in TERMINAL_STATES:
        # The size now: a log still being written is served as far as it was.
        size = await run_in_threadpool(_size, path)
        return StreamingResponse(
            iterate_in_threadpool(iter(read_chunks(path, limit=size))), media_type=media_type
        )
    follower = followers.add(user=principal.user, job_id=job_id, path=path)
    return StreamingResponse(follow_log(followers, follower), media_type=media_type)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
