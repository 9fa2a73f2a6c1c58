"""/v1/jobs over real HTTP: submit, read, list, cancel, idempotency, ownership."""

from __future__ import annotations

import threading
from typing import Any

import httpx

from tests.support.servers import ApiServer
from trainyard.store import JobState, transition_job, write_transaction

JOB: dict[str, Any] = {
    "name": "gpt-small",
    "kind": "training",
    "queue": "default",
    "priority": "normal",
    "workers": 2,
    "resources": {"cpu": "8", "memory": "64Gi", "gpu": 8, "gpu_models": ["H100", "A100"]},
    "workload": {"builtin": "gpt", "args": {"steps": 2000}},
    "precision": "auto",
    "ddp": True,
    "max_runtime": "4h",
    "retries": 2,
    "image": "ghcr.io/example/trainer:1",
    "env": {"WANDB_MODE": "offline"},
    "labels": {"team": "nlp"},
    "annotations": {"example.com/owner": "alice"},
}


def submit(client: httpx.Client, **overrides: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={**JOB, **overrides})
    assert response.status_code == 201, response.text
    return response.json()


def test_submit_then_get_returns_the_job(server: ApiServer) -> None:
    with server.client() as client:
        created = submit(client)
        fetched = client.get(f"/v1/jobs/{created['id']}")
    assert fetched.status_code == 200
    job = fetched.json()
    assert job["id"] == created["id"] and job["state"] == "PENDING"
    nested = ("resources", "workload")
    assert {k: job[k] for k in JOB if k not in nested} == {
        k: v for k, v in JOB.items() if k not in nested
    }
    assert job["workload"] == {"builtin": "gpt", "args": {"steps": 2000}, "command": None}
    assert job["resources"]["gpu"] == 8 and job["resources"]["gpu_models"] == ["H100", "A100"]
    assert job["owner"] == "admin" and job["placement"] is None and job["reason"] is None


def test_location_header_points_at_the_job(server: ApiServer) -> None:
    with server.client() as client:
        response = client.post("/v1/jobs", json=JOB)
    assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"


def test_yaml_body_is_accepted(server: ApiServer) -> None:
    document = (
        "name: yaml-job\nkind: inference\nworkers: 1\n"
        "resources: {cpu: 500m, memory: 2Gi}\n"
        "workload:\n  command: [python, -c, 'print(1)']\n"
    )
    with server.client() as client:
        response = client.post(
            "/v1/jobs", content=document, headers={"Content-Type": "application/yaml"}
        )
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["kind"] == "inference"
    assert job["workload"]["command"] == ["python", "-c", "print(1)"]


def test_retried_submit_returns_the_same_job(server: ApiServer) -> None:
    headers = {"Idempotency-Key": "retry-1"}
    with server.client() as client:
        first = client.post("/v1/jobs", json=JOB, headers=headers)
        second = client.post("/v1/jobs", json=JOB, headers=headers)
        listed = client.get("/v1/jobs").json()
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert second.headers.get("idempotent-replayed") == "true"
    assert listed["count"] == 1


def test_reusing_a_key_for_another_document_is_409(server: ApiServer) -> None:
    headers = {"Idempotency-Key": "k"}
    with server.client() as client:
        assert client.post("/v1/jobs", json=JOB, headers=headers).status_code == 201
        response = client.post("/v1/jobs", json={**JOB, "name": "other"}, headers=headers)
    assert response.status_code == 409
    assert "Idempotency-Key" in response.json()["detail"]


def test_concurrent_identical_submits_create_one_job(server: ApiServer) -> None:
    ids: list[str] = []
    barrier = threading.Barrier(8)

    def post() -> None:
        with server.client() as client:
            barrier.wait(timeout=30)
            response = client.post("/v1/jobs", json=JOB, headers={"Idempotency-Key": "race"})
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(ids) == 8 and len(set(ids)) == 1
    with server.client() as client:
        assert client.get("/v1/jobs").json()["count"] == 1


def test_users_see_and_cancel_only_their_own_jobs(server: ApiServer) -> None:
    alice, bob = server.token("alice"), server.token("bob")
    with server.client(alice) as a, server.client(bob) as b, server.client() as admin:
        job = submit(a)
        assert job["owner"] == "alice"
        submit(b, name="bobs")
        assert b.get(f"/v1/jobs/{job['id']}").status_code == 404
        assert b.get(f"/v1/jobs/{job['id']}/events").status_code == 404
        assert b.get(f"/v1/jobs/{job['id']}/logs").status_code == 404
        assert b.post(f"/v1/jobs/{job['id']}/cancel").status_code == 404
        assert [j["name"] for j in b.get("/v1/jobs").json()["data"]] == ["bobs"]
        assert b.get("/v1/jobs", params={"owner": "alice"}).json()["data"] == []
        assert a.get(f"/v1/jobs/{job['id']}").json()["state"] == "PENDING"
        assert len(admin.get("/v1/jobs").json()["data"]) == 2
        assert [
            j["owner"] for j in admin.get("/v1/jobs", params={"owner": "alice"}).json()["data"]
        ] == ["alice"]
        assert admin.post(f"/v1/jobs/{job['id']}/cancel").json()["state"] == "CANCELLED"


def test_cancel_records_an_event_and_a_second_cancel_is_409(server: ApiServer) -> None:
    with server.client() as client:
        job = submit(client)
        cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
        again = client.post(f"/v1/jobs/{job['id']}/cancel")
        events = client.get(f"/v1/jobs/{job['id']}/events").json()["data"]
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "CANCELLED"
    assert cancelled.json()["finished_at"] is not None
    assert again.status_code == 409 and "CANCELLED" in again.json()["detail"]
    assert [(e["from_state"], e["to_state"]) for e in events] == [
        (None, "PENDING"),
        ("PENDING", "CANCELLED"),
    ]
    assert events[1]["reason"] == "cancelled by admin"


def test_cancelling_a_finished_job_is_409(server: ApiServer) -> None:
    with server.client() as client:
        job = submit(client)
        with write_transaction(server.engine) as conn:
            for state in (JobState.ADMITTED, JobState.RUNNING, JobState.SUCCEEDED):
                transition_job(conn, job_id=job["id"], to_state=state)
        response = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert client.get(f"/v1/jobs/{job['id']}").json()["state"] == "SUCCEEDED"
    assert response.status_code == 409


def test_reason_and_placement_written_by_the_scheduler_are_exposed(server: ApiServer) -> None:
    with server.client() as client:
        job = submit(client)
        with write_transaction(server.engine) as conn:
            transition_job(
                conn,
                job_id=job["id"],
                to_state=JobState.ADMITTED,
                reason="fits",
                placement={0: "node-a", 1: "node-b"},
            )
        fetched = client.get(f"/v1/jobs/{job['id']}").json()
    assert fetched["state"] == "ADMITTED" and fetched["reason"] == "fits"
    assert fetched["placement"] == {"0": "node-a", "1": "node-b"}


def test_list_pages_newest_first_with_a_cursor(server: ApiServer) -> None:
    with server.client() as client:
        names = [submit(client, name=f"job-{i}")["name"] for i in range(7)]
        seen: list[str] = []
        cursor = None
        for _ in range(10):
            params: dict[str, Any] = {"limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = client.get("/v1/jobs", params=params).json()
            seen += [j["name"] for j in page["data"]]
            assert page["count"] == len(page["data"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        bad = client.get("/v1/jobs", params={"cursor": "not-a-cursor"})
    assert seen == list(reversed(names))
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "cursor"


def test_list_filters(server: ApiServer) -> None:
    with server.client() as client:
        a = submit(client, name="a")
        submit(client, name="b", kind="inference")
        client.post(f"/v1/jobs/{a['id']}/cancel")

        def names(**params: Any) -> list[str]:
            return [j["name"] for j in client.get("/v1/jobs", params=params).json()["data"]]

        assert names(state="CANCELLED") == ["a"]
        assert names(state=["CANCELLED", "PENDING"]) == ["b", "a"]
        assert names(kind="inference") == ["b"]
        assert names(queue="default") == ["b", "a"]
        bad_state = client.get("/v1/jobs", params={"state": "DONE"})
    assert bad_state.status_code == 422 and bad_state.json()["errors"][0]["field"] == "state[0]"


def test_unknown_job_is_404(server: ApiServer) -> None:
    with server.client() as client:
        response = client.get("/v1/jobs/doesnotexist")
    assert response.status_code == 404 and "doesnotexist" in response.json()["detail"]
