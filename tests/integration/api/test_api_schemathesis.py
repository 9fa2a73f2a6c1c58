"""Schemathesis over the OpenAPI schema: no 5xx, no response that breaks the schema.

Cases are generated from the schema the server publishes (built here without side
effects, and checked to be identical to the live /openapi.json) and sent to a real uvicorn
server on loopback (SQLite and PostgreSQL), authenticated with that server's real admin
token, with schema-valid and schema-invalid inputs. Every default check runs except
`positive_data_acceptance`: a few cross-field rules (gpu_models needs gpu > 0, exactly one
of workload.builtin / workload.command, tpu_type needs tpu > 0) are described in the
schema's text but not expressible in its JSON Schema, so schema-valid documents can
legitimately get a 422 naming the broken rule.

The schema is loaded eagerly, not with `schemathesis.pytest.from_fixture`: that lazy
loader reads `request.node._nodeid`, which pytest 9 no longer has.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.support.servers import ApiServer, running_server
from trainyard.api.app import openapi_document
from trainyard.config import Settings

DOCUMENT = openapi_document(Settings(admin_token=None))
schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
# An oversized negative example is refused with 413 before it is even parsed.
schema.config.checks.negative_data_rejection.expected_statuses.append("413")


@pytest.fixture
def live_server(database_url: str, tmp_path: Path) -> Iterator[ApiServer]:
    with running_server(home=tmp_path / "home", database_url=database_url) as running:
        with running.client("") as client:
            assert client.get("/openapi.json").json() == DOCUMENT
        yield running


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_conforms_to_its_schema(case: schemathesis.Case, live_server: ApiServer) -> None:
    case.call_and_validate(
        base_url=live_server.url,
        headers={"Authorization": f"Bearer {live_server.admin_token}"},
        excluded_checks=[positive_data_acceptance],
    )
