"""POST /v1/jobs/{id}/predict: the control plane's proxy to a model service's replicas.

The API learns where replicas are from the store (`service_endpoints`, written by the
loop from what it observed: running and answering /healthz), never from the backend.
Requests go to ready replicas round-robin; a replica that refuses the connection or
drops it (it just died, or is being replaced) is skipped and the next one tried, so a
client sees a failure only when no ready replica is left. The body is passed through
untouched and the replica's answer (including its 422 for a bad record) comes back.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Body, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from trainyard.api.body import YamlBodyRoute
from trainyard.api.deps import EngineDep, PrincipalDep
from trainyard.api.routes.common import CONFLICT, ERRORS, NOT_FOUND, TOO_LARGE
from trainyard.api.schemas import ErrorBody
from trainyard.store import TERMINAL_STATES, JobNotFound, JobRecord, get_job, read_transaction
from trainyard.store.services import ServiceEndpoint, load_endpoints

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=YamlBodyRoute, responses=ERRORS)

UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "The service has no ready replica right now"},
}
# A prediction is one record through a small model; a replica that takes longer is stuck.
REPLICA_TIMEOUT = httpx.Timeout(30.0, connect=2.0)
_turns: dict[str, itertools.count[int]] = {}


def _client(request: Request) -> httpx.AsyncClient:
    """One pooled client per app (keep-alive connections to the replicas)."""
    client: httpx.AsyncClient | None = getattr(request.app.state, "predict_client", None)
    if client is None:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        client = httpx.AsyncClient(timeout=REPLICA_TIMEOUT, limits=limits, trust_env=False)
        request.app.state.predict_client = client
    return client


def _lookup(
    engine: Any, job_id: str, owner: str | None
) -> tuple[JobRecord | None, ServiceEndpoint | None]:
    with read_transaction(engine) as conn:
        job = get_job(conn, job_id=job_id, owner=owner)
        if job is None:
            return None, None
        return job, load_endpoints(conn, [job_id]).get(job_id)


def _check_service(job: JobRecord) -> None:
    spec = job.spec
    if spec.get("kind") != "inference" or spec.get("mode") != "service":
        what = "a batch inference job" if spec.get("kind") == "inference" else "a training job"
        raise HTTPException(
            status_code=409,
            detail=f"job {job.id} is {what}; /predict needs kind inference with mode service",
        )
    if job.state in TERMINAL_STATES:
        raise HTTPException(
            status_code=409,
            detail=f"job {job.id} is {job.state.value}: {job.reason or 'no reason recorded'}",
        )


@router.post(
    "/{job_id}/predict",
    summary="Predict one record with a model service (proxied to a ready replica)",
    responses={**NOT_FOUND, **CONFLICT, **TOO_LARGE, **UNAVAILABLE},
)
async def predict(
    job_id: str,
    request: Request,
    principal: PrincipalDep,
    engine: EngineDep,
    record: Annotated[dict[str, Any], Body(description="One record, as the model takes it.")],
) -> Response:
    """Send one record to the service's next ready replica and return its answer."""
    owner = None if principal.is_admin else principal.user
    job, endpoint = await run_in_threadpool(_lookup, engine, job_id, owner)
    if job is None:
        raise JobNotFound(job_id)
    _check_service(job)
    ready = endpoint.ready if endpoint is not None else ()
    if not ready:
        raise HTTPException(
            status_code=503,
            detail=f"job {job_id} has no ready replica yet ({job.reason or job.state.value})",
            headers={"Retry-After": "1"},
        )
    body = await request.body()
    client = _client(request)
    start = next(_turns.setdefault(job_id, itertools.count()))
    last_error = ""
    for offset in range(len(ready)):
        address = ready[(start + offset) % len(ready)]
        try:
            reply = await client.post(
                f"http://{address}/predict",
                content=body,
                headers={"content-type": "application/json"},
            )
        except httpx.TransportError as exc:  # died or is being replaced: try the next one
            last_error = f"{address}: {type(exc).__name__}"
            continue
        return Response(
            reply.content,
            status_code=reply.status_code,
            media_type=reply.headers.get("content-type", "application/json"),
        )
    raise HTTPException(
        status_code=503,
        detail=f"no replica of job {job_id} answered (last: {last_error})",
        headers={"Retry-After": "1"},
    )
