"""Request bodies: authenticated first, then read, decoded (JSON or YAML) and depth-checked.

`YamlBodyRoute` handles the body of every route that takes one, before FastAPI sees it:

1. The bearer token is checked before a byte of the body is read, so no unauthenticated
   request costs more than a token lookup (a 60,000-key YAML body used to be parsed,
   on the event loop, before its 401).
2. The body is read; a client that goes away mid-upload is logged as one debug line (it
   is not a server error) and gets no answer.
3. JSON is decoded by the C parser, on the event loop when small, otherwise in a thread;
   YAML, which is pure Python and far slower, in a worker thread (the event loop keeps
   serving), with a budget of nodes that bounds what one body can cost: the 800 KB,
   60,000-key body is refused at node 20,001 instead of being parsed whole (2-3.5 s of
   CPU as measured here, on 2 cores at a load average of 6; /healthz answered in under
   0.1 s while four ran). YAML is loaded with a safe loader that also refuses aliases (an
   alias bomb of a few hundred bytes expands to gigabytes).
4. One nesting limit (`document_rules.MAX_DEPTH`) is checked before any validation, with
   the same 422 naming the same field whether the document is 40 or 100,000 levels deep
   (on the decoded JSON; for JSON too deep for Python's parser to decode, by a scan of the
   text; for YAML, as the loader composes each collection); so is Unicode (a lone
   surrogate, valid JSON text, cannot be encoded in any response, so a job holding one
   could never be read back).

The decoded document is handed to FastAPI as the request's JSON, so both formats go
through the same pydantic model and the same error messages, and nothing is parsed twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import yaml
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from trainyard.api.deps import authenticate
from trainyard.api.document_rules import MAX_DEPTH, check_structure, deep_json_field, too_deep

YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})
JSON_ON_LOOP_BYTES = 16 * 1024
"""JSON bodies up to this size are decoded on the event loop (microseconds; a thread hop
would cost more); larger ones in a thread, where the depth scan of a body too deep to
decode (tenths of a second for a crafted 600 KB one) cannot stall other requests."""
MAX_YAML_NODES = 20_000
"""Most YAML nodes (scalars, sequences, mappings) in one body: a job document has tens."""

_log = logging.getLogger("trainyard.api")


class YamlTooLarge(Exception):
    """The YAML body has more nodes than the budget."""


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without anchors/aliases, with a budget of nodes and the nesting limit.

    The limit is checked as each collection starts, so a document nested past it is
    refused at level MAX_DEPTH + 1, naming the same field as `check_structure`, instead of
    being built (the composer recurses once per level: past a few hundred it would fail
    with a RecursionError that could not say where).
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.nodes_left = MAX_YAML_NODES
        self.path: list[str | int | None] = []  # the keys from the root to the node composed

    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.MarkedYAMLError(problem="aliases are not allowed", problem_mark=mark)
        self.nodes_left -= 1
        if self.nodes_left < 0:
            raise YamlTooLarge
        if parent is None:
            return self._compose(parent, index)
        # index: the position in a sequence, the key's node for a mapping value, None for
        # a mapping key itself.
        key = index if isinstance(index, int) else getattr(index, "value", None)
        self.path.append(key if isinstance(key, str | int) else None)
        try:
            return self._compose(parent, index)
        finally:
            self.path.pop()

    def _compose(self, parent: Any, index: Any) -> Any:
        if (
            self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent)
            and len(self.path) >= MAX_DEPTH
        ):
            field = ""
            for key in self.path[:2]:
                if key is not None:
                    field = field + f"[{key}]" if isinstance(key, int) else _dotted(field, key)
            raise too_deep(field or "body")
        return super().compose_node(parent, index)


def _dotted(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _invalid(rule: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"type": rule, "loc": ("body",), "msg": message, "input": None}])


def _one_line(exc: yaml.YAMLError) -> str:
    """A YAML error as one line: the problem and where it is."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def load_yaml(raw: bytes) -> Any:
    """Parse a YAML document into JSON-compatible data; RequestValidationError if invalid.

    Blocking and CPU-bound: call it from a worker thread.
    """
    try:
        data = yaml.load(raw, Loader=_NoAliasLoader)
    except YamlTooLarge:
        message = f"YAML body has more than {MAX_YAML_NODES} nodes; a job document has tens"
        raise _invalid("yaml_too_large", message) from None
    except yaml.YAMLError as exc:
        raise _invalid("yaml_invalid", f"body is not valid YAML: {_one_line(exc)}") from exc
    except RecursionError:  # the composer recurses once per nesting level
        raise too_deep() from None
    except ValueError as exc:  # e.g. an integer beyond Python's 4300-digit conversion limit
        raise _invalid("yaml_invalid", f"body is not valid YAML: {exc}") from exc
    check_structure(data)
    try:
        # Only JSON's types survive this (a date, a binary or a set does not).
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _invalid("yaml_invalid", f"YAML value has no JSON equivalent: {exc}") from exc
    return data


def yaml_to_json(raw: bytes) -> bytes:
    """A YAML document re-encoded as JSON (see `load_yaml`)."""
    return json.dumps(load_yaml(raw), allow_nan=False).encode()


def load_json(raw: bytes) -> Any:
    """Parse a JSON body; RequestValidationError (naming the rule) if it cannot be loaded."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid("json_invalid", f"body is not UTF-8 encoded JSON ({exc.reason})") from exc
    try:
        data = json.loads(text)
    except RecursionError:  # the parser recurses once per level: find the field by a scan
        raise too_deep(deep_json_field(text)) from None
    except json.JSONDecodeError as exc:
        raise _invalid("json_invalid", f"body is not valid JSON: {exc.msg}") from exc
    except ValueError as exc:  # an integer over Python's 4300-digit conversion limit
        raise _invalid("json_invalid", f"body is not valid JSON: {exc}") from exc
    check_structure(data)
    return data


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _is_json(media_type: str) -> bool:
    """What FastAPI would decode as JSON (it leaves other media types to the model)."""
    return media_type in ("", "application/json") or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


class YamlBodyRoute(APIRoute):
    """An APIRoute whose JSON body may also arrive as YAML (see the module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def route_handler(request: Request) -> Response:
            await authenticate(request)
            try:
                raw = await request.body()
            except ClientDisconnect:
                client = request.client.host if request.client else "?"
                _log.debug(
                    "client %s went away during the upload of %s %s",
                    client,
                    request.method,
                    request.url.path,
                )
                return Response(status_code=400)
            media_type = _media_type(request)
            if raw and media_type in YAML_TYPES:
                document = await run_in_threadpool(load_yaml, raw)
                headers = [
                    (key, value)
                    for key, value in request.scope["headers"]
                    if key.lower() != b"content-type"
                ]
                headers.append((b"content-type", b"application/json"))
                request = Request({**request.scope, "headers": headers}, request.receive)
                request._body = raw
                request._json = document
            elif raw and _is_json(media_type):
                if len(raw) > JSON_ON_LOOP_BYTES:
                    request._json = await run_in_threadpool(load_json, raw)
                else:
                    request._json = load_json(raw)
            return await handler(request)

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
