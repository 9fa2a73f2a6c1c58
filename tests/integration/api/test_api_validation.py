"""Bad input over real HTTP: each gets a 4xx naming the field and the rule, never a 5xx."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.servers import ApiServer

JOB: dict[str, Any] = {"name": "ok", "workload": {"builtin": "gpt"}}


def errors_of(response: httpx.Response) -> list[tuple[str, str]]:
    body = response.json()
    assert body["detail"]
    return [(e["field"], e["rule"]) for e in body["errors"]]


@pytest.mark.parametrize(
    ("document", "field", "rule"),
    [
        ({**JOB, "resources": {"gpu": -1}}, "resources.gpu", "greater_than_equal"),
        ({**JOB, "resources": {"gpu": 1.5}}, "resources.gpu", "int_type"),
        ({**JOB, "resources": {"gpu": "2"}}, "resources.gpu", "int_type"),
        ({**JOB, "resources": {"cpu": "eight"}}, "resources.cpu", "quantity"),
        ({**JOB, "resources": {"memory": "-1Gi"}}, "resources.memory", "quantity"),
        ({**JOB, "resources": {"gpu_models": ["H100"]}}, "resources.gpu_models", "requires_gpu"),
        ({**JOB, "resources": {"gpu": 1, "tpu": 4}}, "resources.tpu", "one_accelerator"),
        ({**JOB, "resources": {"tpu_type": "v5e"}}, "resources.tpu_type", "requires_tpu"),
        ({**JOB, "queue": "nope"}, "queue", "unknown_queue"),
        ({**JOB, "priority": "urgent"}, "priority", "unknown_priority_class"),
        ({**JOB, "surprise": 1}, "surprise", "extra_forbidden"),
        ({**JOB, "resources": {"gpus": 1}}, "resources.gpus", "extra_forbidden"),
        ({**JOB, "name": "Not A DNS Label"}, "name", "string_pattern_mismatch"),
        ({**JOB, "kind": "batch"}, "kind", "literal_error"),
        ({**JOB, "workers": 0}, "workers", "greater_than_equal"),
        ({**JOB, "max_runtime": "forever"}, "max_runtime", "duration"),
        ({**JOB, "workload": {"command": "python train.py"}}, "workload.command", "list_type"),
        ({**JOB, "workload": {}}, "workload", "one_of"),
        ({**JOB, "workload": {"builtin": "gpt", "command": ["x"]}}, "workload", "one_of"),
        ({**JOB, "env": {"1BAD": "x"}}, "env.1BAD.[key]", "string_pattern_mismatch"),
        ({"workload": {"builtin": "gpt"}}, "name", "missing"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_job_is_422_naming_field_and_rule(
    server: ApiServer, document: dict[str, Any], field: str, rule: str
) -> None:
    with server.client() as client:
        response = client.post("/v1/jobs", json=document)
        assert client.get("/v1/jobs").json()["count"] == 0
    assert response.status_code == 422, response.text
    assert (field, rule) in errors_of(response)
    assert field.split(".")[0] in response.json()["detail"]


def test_impossible_job_is_accepted_and_left_pending(server: ApiServer) -> None:
    """No node has 1024 GPUs, but deciding that is the scheduler's job, not the API's."""
    with server.client() as client:
        response = client.post("/v1/jobs", json={**JOB, "resources": {"gpu": 1024}})
    assert response.status_code == 201 and response.json()["state"] == "PENDING"


def test_invalid_json_is_422(server: ApiServer) -> None:
    with server.client() as client:
        response = client.post(
            "/v1/jobs", content=b'{"name": ', headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 422
    assert errors_of(response)[0] == ("body", "json_invalid")


@pytest.mark.parametrize(
    ("document", "rule"),
    [
        (b"name: [unclosed", "yaml_invalid"),
        (b"a: &anchor [1, 2]\nb: *anchor\n", "yaml_invalid"),
        (b"name: x\nwhen: 2024-01-01\nworkload: {builtin: gpt}\n", "yaml_invalid"),
    ],
    ids=["syntax", "alias", "date"],
)
def test_bad_yaml_is_422(server: ApiServer, document: bytes, rule: str) -> None:
    with server.client() as client:
        response = client.post(
            "/v1/jobs", content=document, headers={"Content-Type": "application/yaml"}
        )
    assert response.status_code == 422, response.text
    assert errors_of(response)[0] == ("body", rule)


def test_lone_surrogate_is_422_not_500(server: ApiServer) -> None:
    body = b'{"name": "x", "workload": {"builtin": "gpt"}, "env": {"A": "\\ud800"}}'
    with server.client() as client:
        response = client.post(
            "/v1/jobs", content=body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 422
    assert errors_of(response)[0][0] == "env.A"


def test_body_over_1_mib_is_413(server: ApiServer) -> None:
    big = {**JOB, "annotations": {f"k{i}": "v" * 4000 for i in range(300)}}
    with server.client() as client:
        response = client.post("/v1/jobs", json=big)
        assert client.get("/v1/jobs").json()["count"] == 0
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


def test_body_over_1_mib_without_content_length_is_413(server: ApiServer) -> None:
    """The limit counts bytes as they arrive; a chunked body cannot dodge it."""

    def chunks():
        yield b'{"name": "x", "workload": {"builtin": "gpt"}, "env": {"A": "'
        for _ in range(40):
            yield b"x" * 32768
        yield b'"}}'

    with server.client() as client:
        response = client.post(
            "/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 413


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer wrong", "Basic dXNlcjpwYXNz"])
def test_missing_or_bad_token_is_401_with_a_challenge(
    server: ApiServer, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    with httpx.Client(base_url=server.url, headers=headers) as client:
        for method, path in [
            ("POST", "/v1/jobs"),
            ("GET", "/v1/jobs"),
            ("GET", "/v1/queues"),
            ("GET", "/v1/cluster"),
        ]:
            response = client.request(method, path, json=JOB if method == "POST" else None)
            assert response.status_code == 401, (path, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
    with server.client() as admin:
        assert admin.get("/v1/jobs").json()["count"] == 0


def test_bad_idempotency_key_is_422(server: ApiServer) -> None:
    with server.client() as client:
        response = client.post("/v1/jobs", json=JOB, headers={"Idempotency-Key": "has space"})
    assert response.status_code == 422
    assert errors_of(response)[0][0] == "header Idempotency-Key"
