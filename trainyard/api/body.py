"""Request bodies: YAML job documents are accepted next to JSON.

`YamlBodyRoute` converts an `application/yaml` body to JSON before FastAPI parses it, so
both formats go through the same pydantic model and the same error messages. YAML is
loaded with a safe loader that also refuses aliases: an alias bomb (a few hundred bytes
that expand to gigabytes) must not get past the 1 MiB body limit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import yaml
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without anchors/aliases."""

    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.MarkedYAMLError(problem="aliases are not allowed", problem_mark=mark)
        return super().compose_node(parent, index)


def _invalid(message: str) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "yaml_invalid", "loc": ("body",), "msg": message, "input": None}]
    )


def _one_line(exc: yaml.YAMLError) -> str:
    """A YAML error as one line: the problem and where it is."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def yaml_to_json(raw: bytes) -> bytes:
    """Parse a YAML document and re-encode it as JSON; RequestValidationError if invalid."""
    try:
        data = yaml.load(raw, Loader=_NoAliasLoader)
    except yaml.YAMLError as exc:
        raise _invalid(f"body is not valid YAML: {_one_line(exc)}") from exc
    except RecursionError as exc:  # the composer recurses once per nesting level
        raise _invalid("body is not valid YAML: nested too deeply") from exc
    except ValueError as exc:  # e.g. an integer beyond Python's 4300-digit conversion limit
        raise _invalid(f"body is not valid YAML: {exc}") from exc
    try:
        return json.dumps(data, allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise _invalid(f"YAML value has no JSON equivalent: {exc}") from exc


def _json_invalid(message: str) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "json_invalid", "loc": ("body",), "msg": message, "input": None}]
    )


def _unloadable_json(raw: bytes) -> str | None:
    """Why `raw` cannot be loaded as JSON, or None if it can."""
    try:
        json.loads(raw)
    except RecursionError:
        return "body is not valid JSON: nested too deeply"
    except ValueError as exc:
        return f"body is not valid JSON: {exc}"
    return None


def _is_yaml(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    return content_type.split(";", 1)[0].strip().lower() in YAML_TYPES


class YamlBodyRoute(APIRoute):
    """An APIRoute whose JSON body may also arrive as YAML."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            if request.method in ("POST", "PUT", "PATCH") and not _is_yaml(request):
                # FastAPI answers undecodable bytes with a bare 400; name the rule instead.
                try:
                    (await request.body()).decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise RequestValidationError(
                        [
                            {
                                "type": "json_invalid",
                                "loc": ("body",),
                                "msg": f"body is not UTF-8 encoded JSON ({exc.reason})",
                                "input": None,
                            }
                        ]
                    ) from exc
            if _is_yaml(request):
                body = yaml_to_json(await request.body())
                headers = [
                    (key, value)
                    for key, value in request.scope["headers"]
                    if key.lower() not in (b"content-type", b"content-length")
                ]
                headers += [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ]
                request = Request({**request.scope, "headers": headers}, request.receive)
                request._body = body
            try:
                return await handler(request)
            except HTTPException as exc:
                # FastAPI answers JSON that is well-formed but cannot be loaded (nested
                # too deeply, an integer over 4300 digits) with a bare 400; name it.
                problem = _unloadable_json(await request.body()) if exc.status_code == 400 else None
                if problem is None:
                    raise
                raise _json_invalid(problem) from exc

        return route_handler


class DeclaredSizeLimit:
    """Refuse a body whose Content-Length already exceeds the limit, with a JSON 413.

    FastAPI's own limit (``max_body_size``) counts the bytes actually received, which is
    what protects the server; this only turns the early refusal into the API's error
    format instead of Starlette's plain-text one.
    """

    def __init__(self, app: ASGIApp, *, max_body_size: int) -> None:
        self.app = app
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = Headers(scope=scope).get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_size:
                response = JSONResponse(
                    {
                        "detail": f"body is larger than the limit of {self.max_body_size} bytes",
                        "errors": [],
                    },
                    status_code=413,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
