"""Logs, queues, cluster, health and metrics over real HTTP."""

from __future__ import annotations

import threading
from typing import Any

from tests.support.servers import ApiServer, wait_for
from trainyard.api.inventory import LocalInventory
from trainyard.layout import worker_log_path
from trainyard.store import JobState, transition_job, write_transaction

JOB: dict[str, Any] = {"name": "job", "workload": {"builtin": "gpt"}}


def submit(server: ApiServer, client: Any, **overrides: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={**JOB, **overrides})
    assert response.status_code == 201, response.text
    return response.json()


def move(server: ApiServer, job_id: str, *states: JobState, **kwargs: Any) -> None:
    for state in states:
        with write_transaction(server.engine) as conn:
            transition_job(conn, job_id=job_id, to_state=state, **kwargs)


def test_logs_are_empty_before_output_then_return_the_file(server: ApiServer) -> None:
    with server.client() as client:
        job = submit(server, client)
        empty = client.get(f"/v1/jobs/{job['id']}/logs")
        path = worker_log_path(server.home, job["id"], 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("step 1 loss 4.2\nstep 2 loss 3.9\n")
        full = client.get(f"/v1/jobs/{job['id']}/logs")
    assert empty.status_code == 200 and empty.text == ""
    assert full.status_code == 200 and full.text == "step 1 loss 4.2\nstep 2 loss 3.9\n"
    assert full.headers["content-type"].startswith("text/plain")


def test_follow_streams_new_lines_and_ends_when_the_job_finishes(server: ApiServer) -> None:
    with server.client() as client:
        job = submit(server, client)
    move(server, job["id"], JobState.ADMITTED, JobState.RUNNING)
    path = worker_log_path(server.home, job["id"], 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("line 0\n")
    received: list[str] = []
    finished = threading.Event()

    def follow() -> None:
        with (
            server.client() as client,
            client.stream("GET", f"/v1/jobs/{job['id']}/logs", params={"follow": "true"}) as r,
        ):
            for text in r.iter_text():
                received.append(text)
        finished.set()

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    wait_for(lambda: "line 0" in "".join(received), timeout=30, what="the first line")
    with path.open("a") as handle:
        handle.write("line 1\n")
        handle.flush()
    wait_for(lambda: "line 1" in "".join(received), timeout=30, what="an appended line")
    assert not finished.is_set()
    with path.open("a") as handle:
        handle.write("last line\n")
    move(server, job["id"], JobState.SUCCEEDED)
    assert finished.wait(timeout=30), "the stream did not end after the job finished"
    assert "".join(received) == "line 0\nline 1\nlast line\n"


def test_queues_show_counts_and_positions(server: ApiServer) -> None:
    alice = server.token("alice")
    with server.client() as admin, server.client(alice) as a:
        first = submit(server, admin, name="first")
        submit(server, a, name="alices")
        high = submit(server, admin, name="urgent", priority="high")
        running = submit(server, admin, name="running")
        move(server, running["id"], JobState.ADMITTED, JobState.RUNNING)
        queues = admin.get("/v1/queues").json()
        mine = a.get("/v1/queues").json()
        move(server, first["id"], JobState.ADMITTED, JobState.PREEMPTED, JobState.PENDING)
        after_preemption = admin.get("/v1/queues").json()
    default = queues["data"][0]
    assert default["name"] == "default"
    assert (default["pending"], default["running"]) == (3, 1)
    waits = {p["name"]: p["wait_seconds"] for p in default["positions"]}
    assert default["oldest_wait_seconds"] == waits["first"] >= waits["alices"] >= 0
    assert [(p["name"], p["position"]) for p in default["positions"]] == [
        ("urgent", 1),
        ("first", 2),
        ("alices", 3),
    ]
    assert high["priority"] == "high"
    assert [(p["name"], p["position"]) for p in mine["data"][0]["positions"]] == [("alices", 3)]
    assert queues["priority_classes"] == {"low": 100, "normal": 500, "high": 1000}
    assert [p["name"] for p in after_preemption["data"][0]["positions"]] == [
        "urgent",
        "first",
        "alices",
    ]


def test_cluster_reports_this_machine_and_allocation(server: ApiServer) -> None:
    node = LocalInventory().nodes()[0]
    with server.client() as client:
        before = client.get("/v1/cluster").json()
        job = submit(server, client, workers=2, resources={"cpu": "500m", "memory": "1Gi"})
        move(server, job["id"], JobState.ADMITTED, placement={0: node.name, 1: node.name})
        after = client.get("/v1/cluster").json()
    assert before["backend"] == "local" and [n["name"] for n in before["nodes"]] == [node.name]
    cpu = {r["resource"]: r for r in after["resources"]}["cpu"]
    memory = {r["resource"]: r for r in after["resources"]}["memory"]
    assert cpu["capacity"] == node.cpu_millicores and cpu["allocated"] == 1000
    assert cpu["free"] == node.cpu_millicores - 1000
    assert memory["allocated"] == 2 * 2**30


def test_health_readiness_and_metrics(server: ApiServer) -> None:
    with server.client("") as anonymous, server.client() as admin:
        submit(server, admin)
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        assert anonymous.get("/readyz").json() == {"status": "ok"}
        metrics = anonymous.get("/metrics")
    assert metrics.status_code == 200
    assert 'trainyard_jobs{queue="default",state="PENDING"} 1.0' in metrics.text
    assert 'trainyard_jobs_submitted_total{queue="default"} 1.0' in metrics.text


def test_openapi_documents_the_job_body_and_configured_names(server: ApiServer) -> None:
    with server.client("") as client:
        schema = client.get("/openapi.json").json()
        docs = client.get("/docs")
    body = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "application/yaml"}
    job_create = schema["components"]["schemas"]["JobCreate"]
    assert job_create["properties"]["queue"]["enum"] == ["default"]
    assert job_create["properties"]["priority"]["enum"] == ["low", "normal", "high"]
    assert job_create["additionalProperties"] is False
    assert docs.status_code == 200
