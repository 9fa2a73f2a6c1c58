"""Error responses shared by the /v1 routes, so the OpenAPI schema documents them."""

from __future__ import annotations

from typing import Any

from trainyard.api.schemas import ErrorBody

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or invalid bearer token"},
    422: {"model": ErrorBody, "description": "A field breaks a rule (named in `errors`)"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such job visible to the caller"},
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "Illegal state transition or concurrent change"},
}
TOO_LARGE: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorBody, "description": "Body larger than the limit (1 MiB)"},
}
