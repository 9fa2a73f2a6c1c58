"""PATCH /v1/jobs/{id} over real HTTP (SQLite and PostgreSQL): a model service's new
revision, its event, optimistic concurrency between updates, and every refusal named.

No loop runs here: the service stays PENDING, which is a state an update may change (the
loop's rollout is tested in tests/integration/operator/test_service_rollout_local.py).
"""

from __future__ import annotations

import threading
from typing import Any

import httpx

from tests.support.servers import ApiServer
from trainyard.store import JobState, read_transaction, transition_job, write_transaction
from trainyard.store.scheduling import load_specs

SERVICE: dict[str, Any] = {
    "name": "svc",
    "kind": "inference",
    "mode": "service",
    "replicas": 2,
    "serve_checkpoint": "/models/a",
    "resources": {"cpu": "500m", "memory": "512Mi"},
    "workload": {"builtin": "gpt", "args": {"batch_size": 4}},
}


def _submit(client: httpx.Client, **overrides: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={**SERVICE, **overrides})
    assert response.status_code == 201, response.text
    return response.json()


def _errors(response: httpx.Response) -> set[tuple[str, str]]:
    assert response.status_code == 422, response.text
    return {(e["field"], e["rule"]) for e in response.json()["errors"]}


def _events(client: httpx.Client, job_id: str) -> list[str]:
    return [e["reason"] or "" for e in client.get(f"/v1/jobs/{job_id}/events").json()["data"]]


def test_a_new_checkpoint_is_a_new_revision_with_an_event_and_stored(server: ApiServer) -> None:
    with server.client() as client:
        job = _submit(client)
        assert job.get("revision") is None  # as submitted: revision 1
        reply = client.patch(f"/v1/jobs/{job['id']}", json={"serve_checkpoint": "/models/b"})
        assert reply.status_code == 200, reply.text
        updated = reply.json()
        assert updated["serve_checkpoint"] == "/models/b" and updated["revision"] == 2
        assert updated["version"] == job["version"] + 1
        assert updated["workers"] == 2 and updated["replicas"] == 2
        events = _events(client, job["id"])
    assert any("updated by admin: serve_checkpoint (revision 2" in e for e in events), events
    with read_transaction(server.engine) as conn:
        stored = load_specs(conn, [job["id"]])[job["id"]]
    assert stored["serve_checkpoint"] == "/models/b" and stored["revision"] == 2


def test_counts_alone_resize_without_a_new_revision(server: ApiServer) -> None:
    with server.client() as client:
        job = _submit(client)
        reply = client.patch(
            f"/v1/jobs/{job['id']}",
            json={
                "replicas": 3,
                "max_replicas": 4,
                "autoscale": {"metric": "inflight", "target": 2, "cooldown": "30s"},
            },
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["replicas"] == 3 and body["workers"] == 3 and body.get("revision") is None
        assert body["autoscale"] == {"metric": "inflight", "target": 2.0, "cooldown": "30s"}
        # Null puts a field back to its default.
        cleared = client.patch(f"/v1/jobs/{job['id']}", json={"autoscale": None}).json()
        assert cleared["autoscale"] is None
        # An update that changes nothing stores nothing.
        same = client.patch(f"/v1/jobs/{job['id']}", json={"replicas": 3})
        assert same.status_code == 200 and same.json()["version"] == cleared["version"]


def test_bad_updates_are_422_naming_the_field_and_rule(server: ApiServer) -> None:
    with server.client() as client:
        job = _submit(client)
        path = f"/v1/jobs/{job['id']}"
        assert ("replicas", "greater_than_equal") in _errors(
            client.patch(path, json={"replicas": 0})
        )
        assert ("resources", "extra_forbidden") in _errors(
            client.patch(path, json={"resources": {"cpu": "2"}})
        )
        assert ("max_replicas", "min_max") in _errors(
            client.patch(path, json={"min_replicas": 3, "max_replicas": 2})
        )
        assert ("replicas", "min_max") in _errors(
            client.patch(path, json={"replicas": 5, "max_replicas": 4})
        )
        assert ("autoscale.metric", "literal_error") in _errors(
            client.patch(path, json={"autoscale": {"metric": "qps", "target": 1}})
        )
        assert ("autoscale.cooldown", "string_pattern_mismatch") in _errors(
            client.patch(
                path, json={"autoscale": {"metric": "inflight", "target": 1, "cooldown": "soon"}}
            )
        )
        assert ("checkpoint_job", "job_not_found") in _errors(
            client.patch(path, json={"checkpoint_job": "0" * 32})
        )
        assert ("body", "min_properties") in _errors(client.patch(path, json={}))
        # Nothing of the refused updates was stored.
        after = client.get(path).json()
        assert after["version"] == job["version"] and after["serve_checkpoint"] == "/models/a"
        assert client.patch("/v1/jobs/" + "f" * 32, json={"replicas": 1}).status_code == 404


def test_an_update_of_no_service_or_a_finished_one_is_409_with_the_reason(
    server: ApiServer,
) -> None:
    with server.client() as client:
        training = client.post(
            "/v1/jobs",
            json={"name": "t", "workload": {"builtin": "gpt"}, "resources": {"cpu": "1"}},
        ).json()
        refused = client.patch(f"/v1/jobs/{training['id']}", json={"image": "x:1"})
        assert refused.status_code == 409 and "training job" in refused.json()["detail"]
        job = _submit(client)
        assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
        finished = client.patch(f"/v1/jobs/{job['id']}", json={"replicas": 1})
        assert finished.status_code == 409 and "CANCELLED" in finished.json()["detail"]


def test_concurrent_updates_never_interleave_or_get_lost(server: ApiServer) -> None:
    """Eight updates at once, each a different checkpoint: every one lands as its own
    revision (the version-conditional write retries on a fresh read), none is lost."""
    with server.client() as client:
        job = _submit(client)
    codes: list[int] = []
    barrier = threading.Barrier(8)

    def patch(n: int) -> None:
        with server.client() as client:
            barrier.wait()
            reply = client.patch(f"/v1/jobs/{job['id']}", json={"serve_checkpoint": f"/m/{n}"})
            codes.append(reply.status_code)

    threads = [threading.Thread(target=patch, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert codes.count(200) == 8, codes
    with server.client() as client:
        final = client.get(f"/v1/jobs/{job['id']}").json()
        events = [e for e in _events(client, job["id"]) if e.startswith("updated by")]
    assert final["revision"] == 9 and final["version"] == job["version"] + 8
    assert len(events) == 8
    assert sorted(int(e.split("(revision ")[1].split(",")[0]) for e in events) == list(range(2, 10))


def test_a_running_service_can_be_updated_but_not_a_stopping_one(server: ApiServer) -> None:
    with server.client() as client:
        job = _submit(client)
        with write_transaction(server.engine) as conn:
            transition_job(conn, job_id=job["id"], to_state=JobState.ADMITTED, reason="test")
        assert client.patch(f"/v1/jobs/{job['id']}", json={"image": "svc:2"}).status_code == 200
        assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
        stopping = client.patch(f"/v1/jobs/{job['id']}", json={"image": "svc:3"})
        assert stopping.status_code == 409 and "stopping" in stopping.json()["detail"]


def test_naming_the_other_model_source_drops_the_first() -> None:
    from trainyard.api.routes.updates import merged_document

    stored = {**SERVICE, "workers": 2}
    merged = merged_document(stored, {"checkpoint_job": "a" * 32})
    assert merged["checkpoint_job"] == "a" * 32 and merged["serve_checkpoint"] is None
    assert merged["revision"] == 2
    # New bounds alone move the count into them instead of refusing it.
    assert merged_document(stored, {"max_replicas": 1})["replicas"] == 1
