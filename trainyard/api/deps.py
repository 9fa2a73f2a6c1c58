"""FastAPI dependencies as Annotated aliases: settings, engine, the caller.

They are `async def` on purpose: a sync dependency costs a thread hop per request, and
none of these block except a token-cache miss, which is sent to a thread explicitly.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from trainyard.api.auth import Principal, TokenCache
from trainyard.api.inventory import NodeInventory
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


def _unauthorized(message: str, error: str | None = None) -> HTTPException:
    challenge = 'Bearer realm="trainyard"'
    if error:
        challenge += f', error="{error}"'
    return HTTPException(status_code=401, detail=message, headers={"WWW-Authenticate": challenge})


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The authenticated caller; 401 without a valid `Authorization: Bearer` token."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    token = credentials.credentials
    cache: TokenCache = request.app.state.tokens
    principal = cache.cached(token)
    if principal is None:
        principal = await run_in_threadpool(cache.lookup, token)
    if principal is None:
        raise _unauthorized("invalid or unknown token", error="invalid_token")
    return principal


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
InventoryDep = Annotated[NodeInventory, Depends(get_inventory)]
CommitterDep = Annotated[GroupCommitter, Depends(get_committer)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
WakerDep = Annotated[LoopWaker, Depends(get_waker)]
