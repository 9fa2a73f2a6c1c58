"""Rules on a whole job document that no single field's type can state.

A NUL character is valid JSON but cannot reach the places a job's strings go: a process
argument or environment variable (the OS refuses it), a Kubernetes object, a PostgreSQL
text column. NaN and Infinity are not JSON at all (Python's parser accepts them), and
pydantic would silently store them as null. Both are refused with a 422 naming the field,
instead of being accepted and failing, or changing, later.
"""

from __future__ import annotations

import math
from typing import Any

from trainyard.api.errors import FieldRuleError


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _walk(value: Any, path: str) -> FieldRuleError | None:
    if isinstance(value, str):
        if "\x00" in value:
            return FieldRuleError(path, "no_nul", "must not contain a NUL (\\u0000) character")
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            message = "must be a finite number, not NaN or Infinity"
            return FieldRuleError(path, "finite_number", message)
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and "\x00" in key:
                return FieldRuleError(
                    _join(path, key.replace("\x00", "\\u0000")),
                    "no_nul",
                    "key must not contain a NUL (\\u0000) character",
                )
            error = _walk(item, _join(path, key))
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
    """Raise FieldRuleError for the first NUL character or non-finite number in `document`
    (found at `path` in the job document)."""
    error = _walk(document, path)
    if error is not None:
        raise error
