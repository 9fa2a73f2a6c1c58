"""POST /v1/jobs/{id}/predict: the control plane's proxy to a model service's replicas.

The API learns where replicas are from the store (`service_endpoints`, written by the
loop from what it observed: running and answering /healthz), never from the backend.
Requests go to ready replicas round-robin; a replica that refuses the connection or
drops it (it just died, or is being replaced) is skipped and the next one tried, so a
client sees a failure only when no ready replica is left. The body is passed through
untouched and the replica's answer (including its 422 for a bad record) comes back.

What a request costs beyond the replica's own work is kept small: connections to the
replicas are pooled (keep-alive), and a service's job row and ready replicas are read
from the store at most once per `ROUTE_TTL_SECONDS` per job (`ServiceRoutes`), not per
request. Authentication and the owner check still run on every request (the owner is
part of the cached row and never changes). The cache holds only services that had a
ready replica; when every cached replica fails, the row is read again before answering,
so a service that just ended answers its 409 and a replaced replica is found.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Body, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from trainyard.api.body import YamlBodyRoute
from trainyard.api.deps import EngineDep, PrincipalDep
from trainyard.api.routes.common import CONFLICT, ERRORS, NOT_FOUND, TOO_LARGE
from trainyard.api.schemas import ErrorBody
from trainyard.store import TERMINAL_STATES, JobNotFound, JobRecord, get_job, read_transaction
from trainyard.store.services import load_endpoints

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=YamlBodyRoute, responses=ERRORS)

UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "The service has no ready replica right now"},
}
# A prediction is one record through a small model; a replica that takes longer is stuck.
REPLICA_TIMEOUT = httpx.Timeout(30.0, connect=2.0)
# The loop rewrites a service's ready replicas about once a cycle (1 s by default); reading
# them more often than that per request only repeats the same answer.
ROUTE_TTL_SECONDS = 1.0
_turns: dict[str, itertools.count[int]] = {}


@dataclass(frozen=True, slots=True)
class _Route:
    job: JobRecord
    ready: tuple[str, ...]
    read_at: float


class ServiceRoutes:
    """A service's job row and ready replicas, read from the store at most once per `ttl`.

    Only routes with a ready replica are kept (a job that is missing, not a service,
    finished or not ready yet is read afresh on every request, so it is never answered
    from an old row); at most `limit` jobs, the oldest read dropped first.
    """

    def __init__(
        self,
        ttl: float = ROUTE_TTL_SECONDS,
        limit: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.limit = limit
        self.clock = clock
        self._routes: dict[str, _Route] = {}

    def cached(self, job_id: str) -> _Route | None:
        route = self._routes.get(job_id)
        if route is not None and self.clock() - route.read_at < self.ttl:
            return route
        return None

    def forget(self, job_id: str) -> None:
        self._routes.pop(job_id, None)

    async def read(self, engine: Any, job_id: str) -> tuple[JobRecord | None, tuple[str, ...]]:
        """The job (whoever owns it: the caller checks) and its ready replicas, from the store."""
        job, ready = await run_in_threadpool(_lookup, engine, job_id)
        if job is not None and ready and _is_service(job) and job.state not in TERMINAL_STATES:
            if len(self._routes) >= self.limit:
                del self._routes[min(self._routes, key=lambda k: self._routes[k].read_at)]
            self._routes[job_id] = _Route(job, ready, self.clock())
        else:
            self._routes.pop(job_id, None)
        return job, ready


def _client(request: Request) -> httpx.AsyncClient:
    """One pooled client per app (keep-alive connections to the replicas)."""
    client: httpx.AsyncClient | None = getattr(request.app.state, "predict_client", None)
    if client is None:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        client = httpx.AsyncClient(timeout=REPLICA_TIMEOUT, limits=limits, trust_env=False)
        request.app.state.predict_client = client
    return client


def _routes(request: Request) -> ServiceRoutes:
    routes: ServiceRoutes | None = getattr(request.app.state, "service_routes", None)
    if routes is None:
        routes = request.app.state.service_routes = ServiceRoutes()
    return routes


def _lookup(engine: Any, job_id: str) -> tuple[JobRecord | None, tuple[str, ...]]:
    with read_transaction(engine) as conn:
        job = get_job(conn, job_id=job_id)
        if job is None:
            return None, ()
        endpoint = load_endpoints(conn, [job_id]).get(job_id)
        return job, endpoint.ready if endpoint is not None else ()


def _is_service(job: JobRecord) -> bool:
    return job.spec.get("kind") == "inference" and job.spec.get("mode") == "service"


def _check_service(job: JobRecord) -> None:
    spec = job.spec
    if not _is_service(job):
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


def _visible(job: JobRecord | None, owner: str | None, job_id: str) -> JobRecord:
    """The job if the caller may see it (its owner, or an admin); else 404, as elsewhere."""
    if job is None or (owner is not None and job.owner != owner):
        raise JobNotFound(job_id)
    return job


async def _forward(
    client: httpx.AsyncClient, job_id: str, ready: tuple[str, ...], body: bytes
) -> tuple[Response | None, str]:
    """The first answer of the ready replicas, round-robin from this job's next turn."""
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
        answer = Response(
            reply.content,
            status_code=reply.status_code,
            media_type=reply.headers.get("content-type", "application/json"),
        )
        return answer, last_error
    return None, last_error


def _json_body(record: dict[str, Any]) -> bytes:
    """What a replica is sent: the parsed record as JSON, the only body it speaks. Not the
    request's own bytes: a YAML request reaches this route relabelled as JSON with its
    YAML bytes (trainyard.api.body), which a replica would refuse."""
    return json.dumps(record, separators=(",", ":")).encode()  # ASCII: a lone surrogate too


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
    routes = _routes(request)
    route = routes.cached(job_id)
    if route is not None:
        job, ready = _visible(route.job, owner, job_id), route.ready
    else:
        found, ready = await routes.read(engine, job_id)
        job = _visible(found, owner, job_id)
    _check_service(job)
    body = _json_body(record)
    client = _client(request)
    answer, last_error = (None, "") if not ready else await _forward(client, job_id, ready, body)
    if answer is None and route is not None:
        # Every replica of a cached row failed: the service may have ended or moved.
        found, ready = await routes.read(engine, job_id)
        job = _visible(found, owner, job_id)
        _check_service(job)
        if ready:
            answer, last_error = await _forward(client, job_id, ready, body)
    if answer is not None:
        return answer
    if not ready:
        raise HTTPException(
            status_code=503,
            detail=f"job {job_id} has no ready replica yet ({job.reason or job.state.value})",
            headers={"Retry-After": "1"},
        )
    raise HTTPException(
        status_code=503,
        detail=f"no replica of job {job_id} answered (last: {last_error})",
        headers={"Retry-After": "1"},
    )
