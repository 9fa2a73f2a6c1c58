"""/v1/jobs: submit, list, get, events, logs and cancel."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from trainyard.api.auth import Principal
from trainyard.api.body import YamlBodyRoute
from trainyard.api.deps import (
    CommitterDep,
    EngineDep,
    MetricsDep,
    PrincipalDep,
    SettingsDep,
    WakerDep,
)
from trainyard.api.document_rules import check_document
from trainyard.api.errors import FieldRuleError
from trainyard.api.logs import follow_log, log_path, read_log
from trainyard.api.routes.common import CONFLICT, ERRORS, NOT_FOUND, TOO_LARGE
from trainyard.api.schemas import EventsPublic, JobCreate, JobPublic, JobsPublic
from trainyard.api.views import event_public, job_public, jobs_page_response, json_response
from trainyard.config import Settings
from trainyard.store import (
    CANCELLABLE_STATES,
    TERMINAL_STATES,
    ConcurrentUpdate,
    IllegalTransition,
    JobNotFound,
    JobState,
    Submission,
    get_job,
    list_events,
    list_job_rows,
    read_transaction,
    request_stop,
    write_transaction,
)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=YamlBodyRoute, responses=ERRORS)

IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
NO_NUL = r"^[^\x00]*$"


def _check_queue_and_priority(job: JobCreate, settings: Settings) -> int:
    """422 for an unknown queue or priority class; returns the class's priority value."""
    queues = [q.name for q in settings.queues]
    if job.queue not in queues:
        raise FieldRuleError(
            "queue", "unknown_queue", f"unknown queue {job.queue!r}; known: {', '.join(queues)}"
        )
    if job.priority not in settings.priority_classes:
        known = ", ".join(settings.priority_classes)
        raise FieldRuleError(
            "priority",
            "unknown_priority_class",
            f"unknown priority class {job.priority!r}; known: {known}",
        )
    return settings.priority_classes[job.priority]


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
    # Free-form args before dumping (which would turn NaN into null), then every string.
    check_document(job.workload.args, "workload.args")
    spec = job.model_dump(mode="json")
    check_document(spec)
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
            idempotency_key=idempotency_key,
            request_hash=request_hash,
        )
    )
    headers = {"Location": f"/v1/jobs/{record.id}"}
    if created:
        metrics.submitted_in(record.queue).inc()
        waker.wake()
    else:
        headers["Idempotent-Replayed"] = "true"
    return json_response(job_public(record), status_code=201, headers=headers)


def encode_cursor(seq: int) -> str:
    """The cursor for the page after the job with this `seq` (clients treat it as opaque)."""
    return str(seq)


def decode_cursor(cursor: str) -> int:
    return int(cursor)


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
        default=None, pattern=r"^[0-9]{1,18}$", description="next_cursor of the last page."
    )
    limit: int = Field(default=50, ge=1, le=500)


@router.get("", response_model=JobsPublic, summary="List jobs, newest first")
def list_(
    principal: PrincipalDep,
    engine: EngineDep,
    query: Annotated[JobsQuery, Query()],
) -> Response:
    """A page of the caller's jobs (every job for an admin), filtered, newest first."""
    visible = _visible_owner(principal)
    if visible is not None and query.owner is not None and query.owner != visible:
        # A user filtering on someone else's name sees nothing, not an error.
        return json_response({"data": [], "count": 0, "next_cursor": None})
    before = decode_cursor(query.cursor) if query.cursor else None
    with read_transaction(engine) as conn:
        rows = list_job_rows(
            conn,
            owner=visible if visible is not None else query.owner,
            states=query.state,
            queue=query.queue,
            kind=query.kind,
            before_seq=before,
            limit=query.limit,
        )
    next_cursor = encode_cursor(rows[-1]["seq"]) if len(rows) == query.limit else None
    return jobs_page_response(rows, next_cursor)


@router.get("/{job_id}", response_model=JobPublic, responses=NOT_FOUND, summary="Get a job")
def get(job_id: str, principal: PrincipalDep, engine: EngineDep) -> Response:
    with read_transaction(engine) as conn:
        job = get_job(conn, job_id=job_id, owner=_visible_owner(principal))
    if job is None:
        raise JobNotFound(job_id)
    return json_response(job_public(job))


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
) -> dict[str, Any]:
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
    return job_public(updated)


class LogsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    follow: bool = Field(default=False, description="Stream new output until the job ends.")


@router.get(
    "/{job_id}/logs",
    responses={
        **NOT_FOUND,
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Output"},
    },
    response_class=Response,
    summary="A job's output (follow=true streams it until the job ends)",
)
async def logs(
    job_id: str,
    request: Request,
    principal: PrincipalDep,
    engine: EngineDep,
    settings: SettingsDep,
    query: Annotated[LogsQuery, Query()],
) -> Response:
    owner = _visible_owner(principal)

    def load_state() -> JobState | None:
        with read_transaction(engine) as conn:
            job = get_job(conn, job_id=job_id, owner=owner)
        return None if job is None else job.state

    state = await run_in_threadpool(load_state)
    if state is None:
        raise JobNotFound(job_id)
    path = log_path(settings.home, job_id)
    if not query.follow:
        content = await run_in_threadpool(read_log, path)
        return Response(content, media_type="text/plain; charset=utf-8")

    async def finished() -> bool:
        current = await run_in_threadpool(load_state)
        return current is None or current in TERMINAL_STATES

    return StreamingResponse(
        follow_log(path, is_finished=finished, is_disconnected=request.is_disconnected),
        media_type="text/plain; charset=utf-8",
    )
