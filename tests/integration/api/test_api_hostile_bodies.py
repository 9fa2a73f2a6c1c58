"""Hostile request bodies found by the API review (issue 14, items 1, 2, 3, 5 and 6).

Each test here failed before its fix: a lone surrogate in free-form `args` was stored and
then answered 500 forever after; deep `args` was a 500 from `model_dump`; YAML was parsed
before the token was checked; every 405 had an empty `Allow`; an aborted upload logged a
traceback at ERROR.
"""

from __future__ import annotations

import json
import logging
import socket
from urllib.parse import urlsplit

import pytest

from tests.integration.api.conftest import LogRecords
from tests.support.servers import ApiServer, wait_for
from trainyard.api.document_rules import MAX_DEPTH, check_structure, deep_json_field
from trainyard.api.errors import FieldRuleError
from trainyard.store import submit_job

SURROGATE_JSON = b'{"name":"s","workload":{"builtin":"gpt","args":{"a":"\\ud800"}}}'
SURROGATE_KEY_JSON = b'{"name":"s","workload":{"builtin":"gpt","args":{"\\udfff":1}}}'
SURROGATE_YAML = b'name: s\nworkload:\n  builtin: gpt\n  args:\n    a: "\\ud800"\n'


def _count_jobs(server: ApiServer) -> int:
    with server.client() as client:
        return len(client.get("/v1/jobs").json()["data"])


@pytest.mark.parametrize(
    ("body", "content_type", "field"),
    [
        (SURROGATE_JSON, "application/json", "workload.args.a"),
        (SURROGATE_KEY_JSON, "application/json", "workload.args"),
        (SURROGATE_YAML, "application/yaml", "workload.args.a"),
    ],
    ids=["json-value", "json-key", "yaml-value"],
)
def test_lone_surrogate_in_args_is_422_and_not_stored(
    server: ApiServer, body: bytes, content_type: str, field: str
) -> None:
    with server.client() as client:
        response = client.post("/v1/jobs", content=body, headers={"Content-Type": content_type})
        retried = client.post(
            "/v1/jobs",
            content=body,
            headers={"Content-Type": content_type, "Idempotency-Key": "k1"},
        )
    for answer in (response, retried):
        assert answer.status_code == 422, answer.text
        (error,) = answer.json()["errors"]
        assert (error["field"], error["rule"]) == (field, "string_unicode")
    assert _count_jobs(server) == 0


def test_a_stored_job_with_a_lone_surrogate_is_still_served(server: ApiServer) -> None:
    """A job stored before the fix (or by another writer) must never make reads 500."""
    job, _ = submit_job(
        server.engine,
        owner="admin",
        spec={
            "name": "poisoned",
            "kind": "training",
            "queue": "default",
            "priority": "normal",
            "workload": {"builtin": "gpt", "args": {"a": "\ud800"}},
        },
        priority_value=500,
    )
    with server.client() as client:
        got = client.get(f"/v1/jobs/{job.id}")
        listed = client.get("/v1/jobs")
        cancelled = client.post(f"/v1/jobs/{job.id}/cancel")
    assert got.status_code == 200, got.text
    assert got.json()["workload"]["args"] == {"a": "\ud800"}
    assert listed.status_code == 200 and listed.json()["count"] == 1
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "CANCELLED"


def _nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("depth", "content_type"),
    [
        (MAX_DEPTH, "application/json"),
        (256, "application/json"),
        (900, "application/json"),
        # Too deep for Python's parsers to build: still the same 422 naming the same field
        # (it once named only `body` there).
        (990, "application/json"),
        (5000, "application/json"),
        (100_000, "application/json"),
        (256, "application/yaml"),
        (990, "application/yaml"),
        (5000, "application/yaml"),
    ],
)
def test_args_nested_too_deep_is_one_422_naming_the_field_and_limit(
    server: ApiServer, depth: int, content_type: str
) -> None:
    # json.dumps itself recurses too deeply for the larger cases: write the text directly.
    # Flow-style YAML is JSON, so the same text serves both parsers.
    args = '{"a":' * depth + "{}" + "}" * depth
    body = '{"name":"deep","workload":{"builtin":"gpt","args":' + args + "}}"
    with server.client() as client:
        response = client.post(
            "/v1/jobs", content=body.encode(), headers={"Content-Type": content_type}
        )
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert (error["field"], error["rule"]) == ("workload.args", "max_depth")
    assert str(MAX_DEPTH) in error["message"]
    assert _count_jobs(server) == 0


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"a": [1, {"b": "[{"}, ' + "[" * 40 + "]" * 40 + "]}", "a[2]"),
        ('[{"x,y": {"z": ' + '{"k":' * 40 + "0" + "}" * 40 + "}}]", "[0].x,y"),
        ('{"s": "\\"{{{{", "t": {"u": ' + "[" * 50 + "]" * 50 + "}}", "t.u"),
        ("[" * 40 + "]" * 40, "[0][0]"),
        ('{"shallow": [[[]]]}', "body"),
    ],
)
def test_the_deep_json_scan_names_the_same_field_as_the_structure_check(
    text: str, field: str
) -> None:
    """The scan used where the parser cannot build the document agrees with the check
    made on documents it can (strings holding brackets, escaped quotes, keys with commas)."""
    assert deep_json_field(text) == field
    if field != "body":
        with pytest.raises(FieldRuleError) as raised:
            check_structure(json.loads(text))
        assert raised.value.field == field


def test_args_at_the_depth_limit_are_accepted(server: ApiServer) -> None:
    # The document itself is depth 1, workload 2, args 3: args may nest MAX_DEPTH - 3 more.
    args = _nested(MAX_DEPTH - 3)
    with server.client() as client:
        response = client.post(
            "/v1/jobs", json={"name": "ok", "workload": {"builtin": "gpt", "args": args}}
        )
    assert response.status_code == 201, response.text
    assert response.json()["workload"]["args"] == args


@pytest.mark.parametrize("depth", [300, 900, 5000])
def test_deep_block_yaml_is_the_same_depth_422(server: ApiServer, depth: int) -> None:
    body = b"name: deep\nworkload:\n  builtin: gpt\n  args:\n    a: " + b"[" * depth + b"]" * depth
    with server.client() as client:
        response = client.post(
            "/v1/jobs", content=body, headers={"Content-Type": "application/yaml"}
        )
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert (error["field"], error["rule"]) == ("workload.args", "max_depth")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{: not yaml [", "application/yaml"),
        (b"{not json", "application/json"),
        (b"k: v\n" * 10, "application/yaml"),
    ],
    ids=["bad-yaml", "bad-json", "yaml"],
)
def test_bodies_are_not_read_before_the_token_is_checked(
    server: ApiServer, body: bytes, content_type: str
) -> None:
    with server.client("") as anonymous, server.client("not-a-token") as wrong:
        missing = anonymous.post("/v1/jobs", content=body, headers={"Content-Type": content_type})
        invalid = wrong.post("/v1/jobs", content=body, headers={"Content-Type": content_type})
    assert missing.status_code == 401, missing.text
    assert invalid.status_code == 401, invalid.text
    assert invalid.headers["WWW-Authenticate"].startswith("Bearer")


def test_yaml_with_too_many_nodes_is_422_naming_the_budget(server: ApiServer) -> None:
    keys = b"".join(b"k%d: v\n" % i for i in range(60_000))
    body = b"name: big\nworkload:\n  builtin: gpt\n  args:\n" + keys.replace(b"k", b"    k")
    with server.client() as client:
        response = client.post(
            "/v1/jobs", content=body, headers={"Content-Type": "application/yaml"}
        )
        assert client.get("/healthz").status_code == 200
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert (error["field"], error["rule"]) == ("body", "yaml_too_large")


@pytest.mark.parametrize(
    ("path", "method", "allowed"),
    [
        ("/v1/jobs", "DELETE", "GET, POST"),
        ("/v1/jobs/abc", "POST", "GET, PATCH"),  # PATCH: a service update
        ("/v1/jobs/abc/cancel", "GET", "POST"),
        ("/healthz", "POST", "GET"),
    ],
)
def test_405_lists_the_allowed_methods(
    server: ApiServer, path: str, method: str, allowed: str
) -> None:
    with server.client() as client:
        response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["Allow"] == allowed
    assert allowed in response.json()["detail"]


def test_an_aborted_upload_is_one_debug_line_not_an_error(
    server: ApiServer, server_log: LogRecords
) -> None:
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port)) as sock:
        sock.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + server.admin_token.encode() + b"\r\n"
            b'Content-Length: 100\r\n\r\n{"na'
        )
    wait_for(
        lambda: any("went away" in r.getMessage() for r in server_log.records),
        timeout=30,
        what="the disconnect to be logged",
    )
    (line,) = [r for r in server_log.records if "went away" in r.getMessage()]
    assert line.levelno == logging.DEBUG and "\n" not in line.getMessage()
    assert not [r for r in server_log.records if r.levelno >= logging.ERROR]
    assert _count_jobs(server) == 0
