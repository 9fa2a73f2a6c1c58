"""FastAPI dependencies as Annotated aliases: settings, engine, the caller.

They are `async def` on purpose: a sync dependency costs a thread hop per request, and
none of these block except the token lookup, which is sent to a thread explicitly.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from trainyard.api.auth import Principal, TokenVerifier
from trainyard.api.inventory import NodeInventory
from trainyard.api.logs import LogFollowers
from trainyard.api.metrics import ApiMetrics
from trainyard.api.submissions import GroupCommitter
from trainyard.api.wake import LoopWaker
from trainyard.config import Settings

_bearer = HTTPBearer(auto_error=False, description="A token from `trainyard token create`.")


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_engine(request: Request) -> Engine:
    return request.app.state.engine


async def get_inventory(request: Request) -> NodeInventory:
    return request.app.state.inventory


async def get_waker(request: Request) -> LoopWaker:
    return request.app.state.waker


async def get_committer(request: Request) -> GroupCommitter:
    return request.app.state.committer


async def get_metrics(request: Request) -> ApiMetrics:
    return request.app.state.metrics


async def get_log_followers(request: Request) -> LogFollowers:
    return request.app.state.log_followers


def _unauthorized(message: str, error: str | None = None) -> HTTPException:
    challenge = 'Bearer realm="trainyard"'
    if error:
        challenge += f', error="{error}"'
    return HTTPException(status_code=401, detail=message, headers={"WWW-Authenticate": challenge})


async def authenticate(request: Request) -> Principal:
    """The caller of `request`, looked up once per request; 401 without a valid token.

    Routes that take a body call this before reading it (see `trainyard.api.body`); the
    `PrincipalDep` dependency then finds the answer on the request.
    """
    known = request.scope.get("trainyard.principal")
    if known is not None:
        return known
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    verifier: TokenVerifier = request.app.state.tokens
    answer = await run_in_threadpool(verifier.lookup, token)
    if isinstance(answer, str):
        raise _unauthorized(answer, error="invalid_token")
    request.scope["trainyard.principal"] = answer
    return answer


async def get_principal(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The authenticated caller; 401 without a valid `Authorization: Bearer` token.

    (`_credentials` publishes the bearer scheme in the OpenAPI document.)
    """
    return await authenticate(request)


async def get_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    """The caller, who must be an admin (403 otherwise)."""
    if not principal.is_admin:
        raise HTTPException(status_code=403, detail="this needs an admin token")
    return principal


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
InventoryDep = Annotated[NodeInventory, Depends(get_inventory)]
CommitterDep = Annotated[GroupCommitter, Depends(get_committer)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
LogFollowersDep = Annotated[LogFollowers, Depends(get_log_followers)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
WakerDep = Annotated[LoopWaker, Depends(get_waker)]
AdminDep = Annotated[Principal, Depends(get_admin)]
