"""Exception handlers: every error leaves the API as an ErrorBody with a readable `detail`.

Validation errors name the field as a dotted path without the `body` prefix
(`resources.gpu`), the rule that failed (pydantic's error type, e.g. `greater_than_equal`)
and pydantic's message.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from trainyard.store import (
    ConcurrentUpdate,
    IdempotencyConflict,
    IllegalTransition,
    JobNotFound,
    database_refusal,
)

_log = logging.getLogger("trainyard.api")


class FieldRuleError(Exception):
    """A 422 for a rule the request models cannot check alone (e.g. an unknown queue)."""

    def __init__(self, field: str, rule: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.rule = rule
        self.message = message


def _field_path(loc: Sequence[Any]) -> str:
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        source = parts.pop(0)
        if not parts:
            return source
        if source == "header":
            return f"header {parts[0]}"
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + str(part)
    return path


def _error_response(
    status: int,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"detail": detail, "errors": errors or []}, status_code=status, headers=headers
    )


def format_validation_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    """Pydantic/FastAPI error dicts to [{field, rule, message}]."""
    formatted = []
    for error in errors:
        loc = error.get("loc", ())
        rule = str(error.get("type", "invalid"))
        message = str(error.get("msg", "invalid value"))
        if rule == "json_invalid":
            ctx = error.get("ctx")
            if ctx:
                message = f"body is not valid JSON: {ctx.get('error', message)}"
            loc = ("body",)
        formatted.append({"field": _field_path(loc), "rule": rule, "message": message})
    return formatted


async def _validation_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = format_validation_errors(jsonable_encoder(exc.errors(), custom_encoder={bytes: repr}))
    detail = "; ".join(f"{e['field']}: {e['message']} ({e['rule']})" for e in errors)
    return _error_response(422, detail or "invalid request", errors)


async def _field_rule_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FieldRuleError)
    errors = [{"field": exc.field, "rule": exc.rule, "message": exc.message}]
    return _error_response(422, f"{exc.field}: {exc.message} ({exc.rule})", errors)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path.

    Starlette answers a 405 with the methods of the first route matching the path only
    (POST for /v1/jobs, which also serves GET); clients need the full list. Each method is
    tried against the app's routes as they are (FastAPI wraps included routers, so the
    routes' own `methods` are not visible from the app): a full match means it is served.
    """
    allowed = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL
            for route in request.app.routes
        )
    ]
    return ", ".join(allowed)


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = str(exc.detail)
    headers = dict(exc.headers or {})
    if exc.status_code == 413 and detail == "Content Too Large":  # Starlette's body limit
        detail = "body is larger than the limit (TRAINYARD_MAX_BODY_BYTES, default 1 MiB)"
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
        detail = f"method {request.method} not allowed here; allowed: {headers['Allow']}"
    return _error_response(exc.status_code, detail, headers=headers or None)


async def _not_found_handler(_request: Request, exc: Exception) -> JSONResponse:
    return _error_response(404, str(exc))


async def _conflict_handler(_request: Request, exc: Exception) -> JSONResponse:
    return _error_response(409, str(exc))


async def _database_handler(request: Request, exc: Exception) -> JSONResponse:
    """The database failed (down, locked, out of space): a 503 the client may retry.

    Only the error's class goes out: the driver's message can quote SQL and parameters.
    A retried submit is safe with its Idempotency-Key.
    """
    assert isinstance(exc, DBAPIError)
    kind = type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__
    # The operator needs the cause; the driver's own message (exc.orig) carries it without
    # the statement's parameters, which SQLAlchemy's str(exc) would include.
    cause = " ".join(str(exc.orig if exc.orig is not None else kind).split())[:500]
    _log.error("database error on %s %s: %s: %s", request.method, request.url.path, kind, cause)
    reason = database_refusal(exc)
    detail = f"the database could not complete the request ({kind}"
    detail += f": {reason}); retry later" if reason else "); retry later"
    return _error_response(503, detail, headers={"Retry-After": "1"})


def install_error_handlers(app: FastAPI) -> None:
    """Register Trainyard's handlers on `app`."""
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(FieldRuleError, _field_rule_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(JobNotFound, _not_found_handler)
    app.add_exception_handler(DBAPIError, _database_handler)
    for conflict in (IllegalTransition, ConcurrentUpdate, IdempotencyConflict):
        app.add_exception_handler(conflict, _conflict_handler)
