"""Schemathesis over the OpenAPI schema: no 5xx, no response that breaks the schema.

Cases are generated from the schema the server publishes (built here without side
effects, and checked to be identical to the live /openapi.json) and sent to a real uvicorn
server on loopback (SQLite and PostgreSQL), authenticated with that server's real admin
token, with schema-valid and schema-invalid inputs. Every check runs, including
`positive_data_acceptance`: the cross-field rules (gpu_models needs gpu > 0, exactly one
of workload.builtin / workload.command, tpu_type needs tpu > 0, max_runtime > 0, no NUL,
the nesting limit) are in the published JSON Schema (`trainyard.api.openapi_rules`), so
a schema-valid document is never refused with a 422, except by a rule of
`RELATIONAL_RULES` (relations between values and facts of the store, which no JSON Schema
keyword states); such a response still goes through every other check.

The schema is loaded eagerly, not with `schemathesis.pytest.from_fixture`: that lazy
loader reads `request.node._nodeid`, which pytest 9 no longer has.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from tests.support.servers import ApiServer, running_server
from trainyard.api.app import openapi_document
from trainyard.api.openapi_rules import RELATIONAL_RULES
from trainyard.config import Settings

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
        yield running


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_conforms_to_its_schema(case: schemathesis.Case, live_server: ApiServer) -> None:
    response = case.call(base_url=live_server.url)
    if _only_relational(response):
        # A 422 made only of rules no JSON Schema keyword can state (relations between
        # values, facts of the store; see RELATIONAL_RULES): every other check still runs.
        case.validate_response(response, excluded_checks=[positive_data_acceptance])
    else:
        case.validate_response(response)


def _only_relational(response: object) -> bool:
    if getattr(response, "status_code", None) != 422:
        return False
    try:
        errors = response.json().get("errors") or []  # type: ignore[attr-defined]
    except ValueError:
        return False
    return bool(errors) and all(e.get("rule") in RELATIONAL_RULES for e in errors)
