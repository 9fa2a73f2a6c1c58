"""Rules on a whole job document that no single field's type can state.

A NUL character is valid JSON but cannot reach the places a job's strings go: a process
argument or environment variable (the OS refuses it), a Kubernetes object, a PostgreSQL
text column. A lone surrogate (`"\\ud800"`) is valid JSON text but not Unicode: it cannot
be encoded as UTF-8, so any response that contains it would fail after the job was
stored. NaN and Infinity are not JSON at all (Python's parser accepts them), and pydantic
would silently store them as null. All are refused with a 422 naming the field, instead
of being accepted and failing, or changing, later.

Nesting is limited to MAX_DEPTH levels for the whole document (the document itself is
level 1), checked on the parsed body before anything else looks at it: free-form
`workload.args` is the only place deep nesting can hide, and serializing it recursively
(pydantic's `model_dump`, `json.dumps`) fails somewhere between 256 and 1000 levels.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from trainyard.api.errors import FieldRuleError

MAX_DEPTH = 32
"""Most levels of objects/arrays in a job document (the document itself is level 1)."""


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _not_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _string_error(value: str, path: str) -> FieldRuleError | None:
    if "\x00" in value:
        return FieldRuleError(path, "no_nul", "must not contain a NUL (\\u0000) character")
    if _not_unicode(value):
        message = "must be valid Unicode (a lone surrogate such as \\ud800 is not)"
        return FieldRuleError(path, "string_unicode", message)
    return None


def _key_error(key: object, path: str) -> FieldRuleError | None:
    if not isinstance(key, str):
        return None
    if "\x00" in key:
        return FieldRuleError(
            _join(path, key.replace("\x00", "\\u0000")),
            "no_nul",
            "key must not contain a NUL (\\u0000) character",
        )
    if _not_unicode(key):
        # The key cannot be printed in the field path: name the object that holds it.
        message = "keys must be valid Unicode (a lone surrogate such as \\ud800 is not)"
        return FieldRuleError(path or "body", "string_unicode", message)
    return None


def _walk(value: Any, path: str) -> FieldRuleError | None:
    if isinstance(value, str):
        return _string_error(value, path)
    if isinstance(value, float):
        if not math.isfinite(value):
            message = "must be a finite number, not NaN or Infinity"
            return FieldRuleError(path, "finite_number", message)
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            error = _key_error(key, path) or _walk(item, _join(path, key))
            if error is not None:
                return error
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            error = _walk(item, _join(path, index))
            if error is not None:
                return error
    return None


def check_document(document: Any, path: str = "") -> None:
    """Raise FieldRuleError for the first NUL character, lone surrogate or non-finite
    number in `document` (found at `path` in the job document)."""
    error = _walk(document, path)
    if error is not None:
        raise error


def too_deep(field: str = "body", limit: int = MAX_DEPTH) -> FieldRuleError:
    """The one error for a document nested deeper than the limit."""
    return FieldRuleError(
        field, "max_depth", f"nests deeper than the limit of {limit} levels of objects and arrays"
    )


def check_structure(document: Any, limit: int = MAX_DEPTH) -> None:
    """The checks made on a decoded body before anything else reads it: nesting within
    `limit` levels, and every string and key valid Unicode. FieldRuleError otherwise.

    Iterative, so it works however deep the document is. For depth, the field named is
    the first two levels of the path (e.g. `workload.args`): the full path to the 33rd
    level is not something anyone can read.
    """
    if isinstance(document, str):
        error = _string_error(document, "body")
        if error is not None and error.rule == "string_unicode":
            raise error
        return
    if not isinstance(document, dict | list):
        return
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(document, ())]
    while stack:
        value, path = stack.pop()
        if len(path) + 1 > limit:
            field = ""
            for key in path[:2]:
                field = _join(field, key)
            raise too_deep(field or "body", limit)
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str) and _not_unicode(key):
                raise FieldRuleError(
                    _path_text(path) or "body",
                    "string_unicode",
                    "keys must be valid Unicode (a lone surrogate such as \\ud800 is not)",
                )
            if isinstance(item, dict | list):
                stack.append((item, (*path, key)))
            elif isinstance(item, str) and _not_unicode(item):
                raise FieldRuleError(
                    _path_text((*path, key)),
                    "string_unicode",
                    "must be valid Unicode (a lone surrogate such as \\ud800 is not)",
                )


_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},:]')
"""A JSON string (escapes included), or one of the structural characters."""


def deep_json_field(text: str, limit: int = MAX_DEPTH) -> str:
    """The field `check_structure` would name for JSON `text` nested deeper than `limit`,
    found without building the document; "body" if it is not that deep.

    For a body too deep for Python's JSON parser (it recurses once per level and gives up
    near 1000), so that the 422 names the same field at any depth. Iterative, and it stops
    at the first container past the limit.
    """
    frames: list[list[Any]] = []  # per open container: [its opening character, current key]
    expect_key = False
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token in "{[":
            if len(frames) >= limit:
                field = ""
                for frame in frames[:2]:
                    if frame[1] is not None:
                        field = _join(field, frame[1])
                return field or "body"
            frames.append([token, None if token == "{" else 0])
            expect_key = token == "{"
        elif token in "}]":
            if frames:
                frames.pop()
            expect_key = False
        elif token == ",":
            if frames and frames[-1][0] == "[":
                frames[-1][1] += 1
            expect_key = bool(frames) and frames[-1][0] == "{"
        elif token == ":":
            expect_key = False
        elif expect_key and frames:
            try:
                frames[-1][1] = json.loads(token)
            except ValueError:
                frames[-1][1] = token[1:-1]
            expect_key = False
    return "body"


def _path_text(path: tuple[str | int, ...]) -> str:
    text = ""
    for key in path:
        text = _join(text, key)
    return text
