"""The cross-field rules are in the published JSON Schema (issue 14, item 12), and the
schema and the server agree on them: each document here is refused by both or accepted by
both. Deterministic, beside the schemathesis run (which samples documents): before the
rules were written into the schema, it called every document below valid.

The schema is checked with jsonschema-rs (the validator schemathesis itself uses) for JSON
Schema 2020-12, the dialect of OpenAPI 3.1.
"""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest
from pydantic import ValidationError

from trainyard.api.app import openapi_document
from trainyard.api.document_rules import check_document
from trainyard.api.errors import FieldRuleError
from trainyard.api.schemas import JobCreate
from trainyard.config import Settings

DOCUMENT = openapi_document(Settings(admin_token=None))
JOB_CREATE = jsonschema_rs.Draft202012Validator(
    {"$ref": "#/components/schemas/JobCreate", "components": DOCUMENT["components"]}
)
JOB_UPDATE = jsonschema_rs.Draft202012Validator(
    {"$ref": "#/components/schemas/JobUpdate", "components": DOCUMENT["components"]}
)
BASE: dict[str, Any] = {"name": "j", "workload": {"builtin": "gpt"}}
SERVICE: dict[str, Any] = {"kind": "inference", "mode": "service"}


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"resources": {"gpu_models": ["a100"]}}, "gpu_models needs gpu > 0"),
        ({"resources": {"gpu_models": ["a100"], "gpu": 0}}, "gpu_models needs gpu > 0"),
        ({"resources": {"tpu_type": "v5e"}}, "tpu_type needs tpu > 0"),
        ({"resources": {"gpu": 1, "tpu": 4}}, "not both gpu and tpu"),
        ({"workload": {"builtin": "gpt", "command": ["python"]}}, "exactly one of the two"),
        ({"workload": {}}, "exactly one of the two"),
        ({"workload": {"command": ["python"], "args": {"a": 1}}}, "args only with builtin"),
        ({"workload": {"command": [""]}}, "command[0] names a program"),
        ({"max_runtime": "0s"}, "max_runtime > 0"),
        ({"max_runtime": "0h0m"}, "max_runtime > 0"),
        ({"name": "a\x00b"}, "no NUL"),
        ({"env": {"A": "x\x00"}}, "no NUL"),
        ({"mode": "service"}, "mode only for inference"),
        # Found by the schemathesis run once no check was excluded: the schema let a NUL
        # through in the two service-only strings, which the server refuses.
        ({**SERVICE, "serve_checkpoint": "/models/\x00a"}, "no NUL"),
        ({"kind": "inference", "mode": "service", "checkpoint_job": "ab\x00"}, "no NUL"),
    ],
)
def test_a_rule_the_server_enforces_is_in_the_schema(changes: dict[str, Any], rule: str) -> None:
    document = {**BASE, **changes}
    assert not JOB_CREATE.is_valid(document), f"the schema accepts a document breaking: {rule}"
    with pytest.raises((ValidationError, FieldRuleError)):
        _server_checks(document)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"resources": {"gpu": 2, "gpu_models": ["a100"]}},
        {"resources": {"tpu": 4, "tpu_type": "v5e"}},
        {"workload": {"command": ["python", "-c", "print(1)"]}},
        {"workload": {"builtin": "gpt", "args": {"steps": 5, "nested": {"a": [1, 2]}}}},
        {"max_runtime": "1h"},
        {**SERVICE, "serve_checkpoint": "/models/a"},
    ],
)
def test_a_document_the_schema_calls_valid_is_accepted(changes: dict[str, Any]) -> None:
    document = {**BASE, **changes}
    assert JOB_CREATE.is_valid(document)
    _server_checks(document)


def _server_checks(document: dict[str, Any]) -> None:
    """What POST /v1/jobs checks of the document itself: the model, then every string of
    the validated document (`check_document`, for NUL characters)."""
    check_document(JobCreate.model_validate(document).model_dump(mode="json"))


@pytest.mark.parametrize("field", ["serve_checkpoint", "checkpoint_job", "image"])
def test_an_update_with_a_nul_is_refused_by_the_schema(field: str) -> None:
    """PATCH /v1/jobs/{id} refuses a NUL in any string (`check_structure` on the body)."""
    assert JOB_UPDATE.is_valid({field: "ab"})
    assert not JOB_UPDATE.is_valid({field: "a\x00b"})
