"""/v1/tokens: admins create, list and revoke API tokens.

A token is shown once, when it is created; the store keeps only its hash. A revoked or
expired token is refused on the very next request, by every process and replica (tokens
are looked up in the store on each request, see `trainyard.api.auth.TokenVerifier`).
"""

from __future__ import annotations

from typing import Annotated, Any

from annotated_types import Ge, Le
from fastapi import APIRouter, HTTPException, Path, Response
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)
from starlette.concurrency import run_in_threadpool

from trainyard.api.auth import issue_token
from trainyard.api.body import YamlBodyRoute
from trainyard.api.deps import AdminDep, EngineDep
from trainyard.api.routes.common import ERRORS
from trainyard.api.schemas import ErrorBody, _whole_number
from trainyard.api.views import iso_time, json_response
from trainyard.store import (
    MAX_ROW_ID,
    TokenRecord,
    list_tokens,
    read_transaction,
    revoke_token,
    write_transaction,
)

router = APIRouter(
    prefix="/v1/tokens",
    tags=["tokens"],
    # Authenticated before the body is read; undecodable bodies are a 422 naming the rule.
    route_class=YamlBodyRoute,
    responses={**ERRORS, 403: {"model": ErrorBody, "description": "Not an admin token"}},
)

MAX_EXPIRY = 10 * 365 * 86400
USER_PATTERN = r"^[\x21-\x7e]([\x20-\x7e]{0,126}[\x21-\x7e])?$"


class TokenCreate(BaseModel):
    """A token to create for `user`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    user: Annotated[str, StringConstraints(pattern=USER_PATTERN)] = Field(
        description="Who the token acts as (1-128 printable ASCII characters)."
    )
    admin: bool = Field(default=False, description="Grant the admin role.")
    description: (
        Annotated[str, StringConstraints(max_length=1024, pattern=r"^[^\x00]*$")] | None
    ) = None
    expires_in_seconds: (
        Annotated[
            int,
            BeforeValidator(_whole_number),
            Ge(1),
            Le(MAX_EXPIRY),
            # Pydantic publishes these bounds as "ge"/"le" here; JSON Schema spells them so:
            WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_EXPIRY}),
        ]
        | None
    ) = Field(default=None, description="Refused after this many seconds.")


class TokenPublic(BaseModel):
    """A token's metadata (never the token or its hash)."""

    id: int
    user: str
    admin: bool
    description: str | None
    created_at: str
    expires_at: str | None
    revoked_at: str | None


class TokenCreated(TokenPublic):
    token: str = Field(description="The bearer token; shown only this once.")


class TokensPublic(BaseModel):
    data: list[TokenPublic]
    count: int


def token_public(record: TokenRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "user": record.user,
        "admin": record.is_admin,
        "description": record.description,
        "created_at": iso_time(record.created_at),
        "expires_at": iso_time(record.expires_at),
        "revoked_at": iso_time(record.revoked_at),
    }


@router.post("", status_code=201, response_model=TokenCreated, summary="Create a token")
async def create(body: TokenCreate, _admin: AdminDep, engine: EngineDep) -> Response:
    token, record = await run_in_threadpool(
        lambda: issue_token(
            engine,
            user=body.user,
            admin=body.admin,
            description=body.description,
            expires_in_seconds=body.expires_in_seconds,
        )
    )
    return json_response({**token_public(record), "token": token}, status_code=201)


@router.get("", response_model=TokensPublic, summary="List tokens")
def list_(_admin: AdminDep, engine: EngineDep) -> Response:
    with read_transaction(engine) as conn:
        records = list_tokens(conn)
    return json_response({"data": [token_public(r) for r in records], "count": len(records)})


@router.post(
    "/{token_id}/revoke",
    response_model=TokenPublic,
    responses={404: {"model": ErrorBody, "description": "No such token"}},
    summary="Revoke a token (refused from the next request on)",
)
def revoke(
    token_id: Annotated[
        int,
        # A row id: past 64 bits the database would refuse the parameter (a 500 on SQLite).
        Path(ge=1, le=MAX_ROW_ID, description="The token's id (from GET /v1/tokens)."),
    ],
    _admin: AdminDep,
    engine: EngineDep,
) -> Response:
    with write_transaction(engine) as conn:
        record = revoke_token(conn, token_id=token_id)
    if record is None:
        raise HTTPException(status_code=404, detail=f"token {token_id} not found")
    return json_response(token_public(record))
