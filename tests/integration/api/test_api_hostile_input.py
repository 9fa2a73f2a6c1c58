"""Input that once reached the database or the YAML parser raw and came back as a 500.

PostgreSQL refuses a NUL character in any text parameter with an error, so a NUL in a
job id or a list filter must be answered before the query is built; deeply nested or
oversized YAML must be a 422 like any other invalid body; a failing database must be a
503 that says so, not a 500.
"""

from __future__ import annotations

import logging

import pytest

from tests.support.servers import ApiServer
from trainyard.store import write_transaction

JOB_YAML = b"name: ok\nworkload:\n  builtin: gpt\n"


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("GET", "/events"), ("GET", "/logs"), ("POST", "/cancel")],
)
def test_job_id_with_nul_is_404_like_a_missing_job(
    server: ApiServer, method: str, suffix: str
) -> None:
    with server.client() as client:
        response = client.request(method, f"/v1/jobs/a%00b{suffix}")
        missing = client.request(method, f"/v1/jobs/{'0' * 32}{suffix}")
    assert response.status_code == 404, response.text
    assert missing.status_code == 404
    assert response.json()["detail"] == "job 'a\\x00b' not found"
    assert response.json()["errors"] == missing.json()["errors"] == []


@pytest.mark.parametrize("field", ["queue", "owner"])
def test_list_filter_with_nul_is_422_naming_it(server: ApiServer, field: str) -> None:
    with server.client() as client:
        response = client.get("/v1/jobs", params={field: "de\x00fault"})
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [field]


@pytest.mark.parametrize(
    ("document", "rule"),
    [
        # The one nesting limit (issue 14, item 2), however deep.
        (JOB_YAML + b"env: " + b"[" * 20_000 + b"]" * 20_000 + b"\n", "max_depth"),
        (JOB_YAML + b"retries: " + b"9" * 5000 + b"\n", "yaml_invalid"),
    ],
    ids=["nested-20000-deep", "5000-digit-integer"],
)
def test_pathological_yaml_is_422(server: ApiServer, document: bytes, rule: str) -> None:
    with server.client() as client:
        response = client.post(
            "/v1/jobs", content=document, headers={"Content-Type": "application/yaml"}
        )
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["rule"] == rule
        # The server is still serving.
        assert client.get("/v1/jobs").status_code == 200


def test_failing_database_is_503_naming_the_cause_not_500(
    server: ApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="trainyard.api")
    with server.client() as client:
        assert client.post("/v1/jobs", json={"name": "before", "workload": {"builtin": "gpt"}})
        with write_transaction(server.engine) as conn:
            cascade = " CASCADE" if conn.dialect.name == "postgresql" else ""
            conn.exec_driver_sql("DROP TABLE job_events")
            conn.exec_driver_sql("DROP TABLE jobs" + cascade)  # job_attempts refers to it
        submitted = client.post("/v1/jobs", json={"name": "after", "workload": {"builtin": "gpt"}})
        listed = client.get("/v1/jobs")
    for response in (submitted, listed):
        assert response.status_code == 503, response.text
        assert "database" in response.json()["detail"]
        assert "SELECT" not in response.text and "INSERT" not in response.text
    # The operator's log names the cause, without the statement's parameters (the job).
    logged = [r.getMessage() for r in caplog.records if r.name == "trainyard.api"]
    assert any("jobs" in line and "POST /v1/jobs" in line for line in logged), logged
    assert not any("parameters" in line or "after" in line for line in logged), logged


@pytest.mark.parametrize(
    ("document", "field", "rule"),
    [
        (
            b'{"name":"ok","workload":{"command":["run","a\\u0000b"]}}',
            "workload.command[1]",
            "no_nul",
        ),
        (b'{"name":"ok","workload":{"builtin":"gpt"},"env":{"A":"\\u0000"}}', "env.A", "no_nul"),
        (b'{"name":"ok","workload":{"builtin":"gpt"},"image":"x\\u0000"}', "image", "no_nul"),
        (
            b'{"name":"ok","workload":{"builtin":"gpt","args":{"a":NaN}}}',
            "workload.args.a",
            "finite_number",
        ),
        (
            b'{"name":"ok","workload":{"builtin":"gpt","args":{"a":[-Infinity]}}}',
            "workload.args.a[0]",
            "finite_number",
        ),
    ],
    ids=["nul-in-command", "nul-in-env", "nul-in-image", "nan-in-args", "infinity-in-args"],
)
def test_nul_and_non_finite_numbers_are_422_not_stored(
    server: ApiServer, document: bytes, field: str, rule: str
) -> None:
    """A NUL cannot reach a process argument or environment variable, and NaN/Infinity
    are not JSON (pydantic would have stored them as null): refused, and nothing stored."""
    with server.client() as client:
        response = client.post(
            "/v1/jobs", content=document, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422, response.text
        assert [(e["field"], e["rule"]) for e in response.json()["errors"]] == [(field, rule)]
        assert client.get("/v1/jobs").json()["count"] == 0


@pytest.mark.parametrize(
    ("document", "field", "rule", "message"),
    [
        (
            b'{"name":"ok","workload":{"builtin":"gpt","args":{"a":'
            + b"[" * 100_000
            + b"]" * 100_000
            + b"}}}",
            "workload.args",  # the one nesting limit, naming the field (issue 14, item 2)
            "max_depth",
            "nests deeper than the limit of 32 levels",
        ),
        (
            b'{"name":"ok","workload":{"builtin":"gpt"},"retries":' + b"9" * 5000 + b"}",
            "body",
            "json_invalid",
            "body is not valid JSON: ",
        ),
    ],
    ids=["nested-100000-deep", "5000-digit-integer"],
)
def test_unloadable_json_is_422_saying_why(
    server: ApiServer, document: bytes, field: str, rule: str, message: str
) -> None:
    with server.client() as client:
        response = client.post(
            "/v1/jobs", content=document, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert (error["field"], error["rule"]) == (field, rule)
    assert error["message"].startswith(message)


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ({"cpu": "1" + "0" * 400}, "resources.cpu"),
        ({"memory": "9" * 10_000}, "resources.memory"),
        ({"memory": "9" * 30 + "Ei"}, "resources.memory"),
        ({"cpu": 10**20}, "resources.cpu"),
    ],
    ids=["400-digit-cpu", "10000-digit-memory", "huge-memory-Ei", "huge-integer-cpu"],
)
def test_oversized_quantities_are_422(
    server: ApiServer, resources: dict[str, object], field: str
) -> None:
    """The published schema says at most 64 characters; the value must fit Kubernetes'
    64-bit milli-units (a 10,000-digit byte count cannot even be printed by Python)."""
    with server.client() as client:
        response = client.post(
            "/v1/jobs", json={"name": "ok", "workload": {"builtin": "gpt"}, "resources": resources}
        )
    assert response.status_code == 422, response.text
    assert [(e["field"], e["rule"]) for e in response.json()["errors"]] == [(field, "quantity")]
