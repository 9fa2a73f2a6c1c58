"""Schemathesis over the OpenAPI schema: no 5xx, no response that breaks the schema.

Cases are generated from the schema the server publishes (built here without side
effects, and checked to be identical to the live /openapi.json) and sent to a real uvicorn
server on loopback (SQLite and PostgreSQL), authenticated with that server's real admin
token, with schema-valid and schema-invalid inputs. Every check runs on every response,
none excluded, including `positive_data_acceptance`: the cross-field rules (gpu_models
needs gpu > 0, exactly one of workload.builtin / workload.command, tpu_type needs tpu > 0,
max_runtime > 0, no NUL, the nesting limit) are in the published JSON Schema
(`trainyard.api.openapi_rules`), so a schema-valid document is never refused with a 422.

The rules no JSON Schema keyword can state (`RELATIONAL_RULES`: relations between values
and facts of the store) are made to hold instead of being excused: the live server holds a
training job with a checkpoint, and a schema-valid case that names a `checkpoint_job` names
that one, with its replica counts ordered (`_satisfy_relations`). Such a case must then be
accepted like any other; what a relational rule refuses is tested beside its feature
(test_api_updates, test_api_volumes, tests/integration/operator/test_services_local).

The schema is loaded eagerly, not with `schemathesis.pytest.from_fixture`: that lazy
loader reads `request.node._nodeid`, which pytest 9 no longer has.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from tests.support.servers import ApiServer, running_server
from trainyard.api.app import openapi_document
from trainyard.config import Settings
from trainyard.layout import job_output_dir

DOCUMENT = openapi_document(Settings(admin_token=None))
schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
# An oversized example is refused with 413 before it is even parsed: the body limit is in
# bytes of the encoding, which no JSON Schema keyword can state (positive examples reach
# it only by filling `env` with 256 values of 32 KiB).
schema.config.checks.negative_data_rejection.expected_statuses.append("413")
schema.config.checks.positive_data_acceptance.expected_statuses.append("413")


# Known before any server starts (each test's server adopts it from its admin-token
# file), because schemathesis applies auth while it collects the cases.
ADMIN_TOKEN = secrets.token_urlsafe(32)


@schema.auth(refresh_interval=None)
class _AdminToken:
    """The live server's admin token, applied as schemathesis' auth: it then knows the
    header is credentials (a header passed to `call_and_validate` instead would silently
    undo a negative case that dropped it, and the accepted request be blamed)."""

    def get(self, case: schemathesis.Case, ctx: object) -> str:
        return ADMIN_TOKEN

    def set(self, case: schemathesis.Case, data: str, ctx: object) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture
def live_server(database_url: str, tmp_path: Path) -> Iterator[ApiServer]:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "admin-token").write_text(ADMIN_TOKEN + "\n")
    (home / "admin-token").chmod(0o600)
    with running_server(home=home, database_url=database_url) as running:
        assert running.admin_token == ADMIN_TOKEN
        with running.client("") as client:
            assert client.get("/openapi.json").json() == DOCUMENT
        running.app.state.checkpoint_job = _training_job_with_a_checkpoint(running)
        yield running


def _training_job_with_a_checkpoint(server: ApiServer) -> str:
    """A training job whose output holds a checkpoint (what `checkpoint_job` must name on
    the local backend: a file `checkpoint-<step>.pt` in its output directory)."""
    with server.client() as client:
        response = client.post("/v1/jobs", json={"name": "trained", "workload": {"builtin": "gpt"}})
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    output = job_output_dir(server.home, job_id)
    output.mkdir(parents=True)
    (output / "checkpoint-1.pt").write_bytes(b"checkpoint")
    return job_id


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_conforms_to_its_schema(case: schemathesis.Case, live_server: ApiServer) -> None:
    _satisfy_relations(case, checkpoint_job=live_server.app.state.checkpoint_job)
    response = case.call(base_url=live_server.url)
    case.validate_response(response)


def _satisfy_relations(case: schemathesis.Case, *, checkpoint_job: str) -> None:
    """Make a schema-valid body satisfy the rules JSON Schema cannot state (see
    `trainyard.api.openapi_rules.RELATIONAL_RULES`), keeping it schema-valid: it names the
    training job that has a checkpoint, and min_replicas <= replicas <= max_replicas, with
    a service's workers equal to its replicas. Schema-invalid cases are left as they are.
    """
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or not isinstance(case.body, dict):
        return
    body: dict[str, Any] = dict(case.body)
    if body.get("checkpoint_job") is not None:
        body["checkpoint_job"] = checkpoint_job
    low, high = _count(body, "min_replicas"), _count(body, "max_replicas")
    if low is not None and high is not None and high < low:
        body["min_replicas"], body["max_replicas"] = high, low
        low, high = high, low
    replicas = _count(body, "replicas")
    if replicas is not None:
        replicas = max(replicas, low or replicas)
        replicas = min(replicas, high or replicas)
        body["replicas"] = replicas
    if body.get("mode") == "service" and _count(body, "workers") is not None:
        body["workers"] = replicas or low or 1
    case.body = body


def _count(body: dict[str, Any], name: str) -> int | None:
    """A replica or worker count as the server reads it: an integer, or a whole float
    (the schema allows 24.0 for a count, as the server does)."""
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)
