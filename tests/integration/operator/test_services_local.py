"""Inference jobs on the local backend, end to end: a real `trainyard serve`, a real
training job's checkpoint, real replica processes serving HTTP, the control plane's
/predict proxy. Waits on stored state and on answers with deadlines (never sleeps).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.operator.loop_support import (
    Serve,
    processes_of,
    serve,
    submit_tiny_gpt_training,
)
from tests.support.servers import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Serve, str]]:
    """One server for the module, and a finished gpt training job with checkpoints."""
    home = tmp_path_factory.mktemp("svc") / "home"
    with serve(home, reap_workers=True) as server:  # services are left running
        job = submit_tiny_gpt_training(server, steps=4)
        server.wait_state(job["id"], "SUCCEEDED", timeout=300)
        yield server, job["id"]


def _service(train_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "gpt-svc",
        "kind": "inference",
        "mode": "service",
        "replicas": 2,
        "checkpoint_job": train_id,
        "precision": "fp32",
        "resources": {"cpu": "500m", "memory": "512Mi"},
        "workload": {"builtin": "gpt", "args": {"batch_size": 4, "max_wait_ms": 2}},
        **extra,
    }


def _field_errors(response: httpx.Response) -> set[str]:
    assert response.status_code == 422, response.text
    return {error["field"] for error in response.json()["errors"]}


def test_bad_service_documents_are_422_naming_the_field(trained: tuple[Serve, str]) -> None:
    server, train_id = trained
    no_checkpoint = _service(train_id)
    del no_checkpoint["checkpoint_job"]
    with server.client() as client:
        assert "serve_checkpoint" in _field_errors(client.post("/v1/jobs", json=no_checkpoint))
        crossed = _service(train_id, min_replicas=3, max_replicas=2)
        del crossed["replicas"]
        assert "max_replicas" in _field_errors(client.post("/v1/jobs", json=crossed))
        missing = _service("0" * 32)
        assert "checkpoint_job" in _field_errors(client.post("/v1/jobs", json=missing))
    # A training job that never wrote a checkpoint (a command job).
    command = server.submit(
        {"name": "nockpt", "resources": {"cpu": "100m"}, "workload": {"command": ["true"]}}
    )
    server.wait_state(command["id"], "SUCCEEDED", timeout=120)
    with server.client() as client:
        reply = client.post("/v1/jobs", json=_service(command["id"]))
        assert "checkpoint_job" in _field_errors(reply)
        assert "no checkpoint" in reply.text


def test_a_checkpoint_that_does_not_load_fails_the_service_with_the_loaders_words(
    trained: tuple[Serve, str], tmp_path: Path
) -> None:
    server, train_id = trained
    document = _service(train_id, replicas=1, serve_checkpoint=str(tmp_path / "empty"))
    del document["checkpoint_job"]
    job = server.submit(document)
    failed = server.wait_state(job["id"], "FAILED", timeout=180)
    assert "no valid checkpoint" in failed["reason"], failed["reason"]
    assert failed["failures"] == 0  # not a retry storm either


def _replica_pid(job_id: str, index: int) -> int:
    """The replica's own python process (the one running `trainyard.worker infer`)."""
    for pid in processes_of(job_id):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"TRAINYARD_WORKER_INDEX={index}".encode() in environ and b"infer" in cmdline:
            return pid
    raise AssertionError(f"no process for replica {index} of job {job_id}")


def test_a_two_replica_service_answers_through_the_proxy_and_survives_a_sigkill(
    trained: tuple[Serve, str],
) -> None:
    server, train_id = trained
    job = server.submit(_service(train_id))
    job_id = job["id"]
    assert job["preemptible"] is False and job["workers"] == 2
    server.wait_state(job_id, "RUNNING", timeout=240)
    wait_for(
        lambda: server.job(job_id).get("ready_replicas") == 2,
        timeout=240,
        interval=0.2,
        what="both replicas ready",
    )
    status = server.job(job_id)
    assert status["endpoint"] == f"/v1/jobs/{job_id}/predict"
    assert len(set(status["placement"].values())) == 1  # one node here: both on it

    with server.client() as client:
        reply = client.post(f"/v1/jobs/{job_id}/predict", json={"id": 7, "text": "Ashford"})
        assert reply.status_code == 200, reply.text
        assert reply.json()["id"] == 7
        yaml_reply = client.post(
            f"/v1/jobs/{job_id}/predict",
            content=b"id: 8\ntext: Ashford\n",
            headers={"content-type": "application/yaml"},
        )  # a YAML body like every other route's: the replica gets it as JSON
        assert yaml_reply.status_code == 200 and yaml_reply.json()["id"] == 8, yaml_reply.text
        bad = client.post(f"/v1/jobs/{job_id}/predict", json={"text": ""})
        assert bad.status_code == 422 and "text" in bad.text  # the replica's own answer
        training = client.post(f"/v1/jobs/{train_id}/predict", json={"text": "x"})
        assert training.status_code == 409 and "training job" in training.text

    outcomes: list[int] = []
    stop = threading.Event()

    def client_loop() -> None:
        with server.client() as client:
            while not stop.is_set():
                try:
                    outcomes.append(
                        client.post(
                            f"/v1/jobs/{job_id}/predict", json={"text": "The train"}
                        ).status_code
                    )
                except httpx.HTTPError:
                    outcomes.append(-1)

    sender = threading.Thread(target=client_loop)
    sender.start()
    try:
        wait_for(lambda: len(outcomes) >= 5, timeout=60, interval=0.05, what="traffic")
        victim = _replica_pid(job_id, 0)
        os.kill(victim, signal.SIGKILL)

        def restarted() -> bool:
            try:
                return (
                    _replica_pid(job_id, 0) != victim and server.job(job_id)["ready_replicas"] == 2
                )
            except AssertionError:
                return False

        wait_for(restarted, timeout=240, interval=0.2, what="replica 0 restarted and ready")
        sent_before = len(outcomes)
        wait_for(
            lambda: len(outcomes) >= sent_before + 5, timeout=60, interval=0.05, what="traffic"
        )
    finally:
        stop.set()
        sender.join(timeout=60)
    failed = [code for code in outcomes if code != 200]
    # At most the request in flight on the killed replica (the proxy retries the others).
    assert len(failed) <= 1, (failed, len(outcomes))
    after = server.job(job_id)
    assert after["state"] == "RUNNING" and after["failures"] == 0  # restarts are not retries
    notes = [e["reason"] for e in server.events(job_id)]
    assert any("replica 0 died" in (note or "") for note in notes), notes

    with server.client() as client:
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    server.wait_state(job_id, "CANCELLED", timeout=120)
    with server.client() as client:
        finished = client.post(f"/v1/jobs/{job_id}/predict", json={"text": "x"})
        assert finished.status_code == 409 and "CANCELLED" in finished.text
    assert processes_of(job_id) == []


def test_batch_inference_with_two_bad_lines_succeeds_reporting_two_errors(
    trained: tuple[Serve, str], tmp_path: Path
) -> None:
    server, train_id = trained
    source = tmp_path / "in.jsonl"
    lines = [json.dumps({"id": i, "text": f"line {i}"}) for i in range(6)]
    lines.insert(2, "{not json")
    lines.insert(5, json.dumps({"id": 99, "text": ""}))
    source.write_text("\n".join(lines) + "\n")
    job = server.submit(
        {
            "name": "gpt-batch",
            "kind": "inference",
            "serve_checkpoint": str(server.home / "jobs" / train_id / "output"),
            "precision": "fp32",
            "resources": {"cpu": "500m", "memory": "512Mi"},
            "workload": {"builtin": "gpt", "args": {"input": str(source)}},
        }
    )
    assert job["mode"] == "batch"
    done = server.wait_state(job["id"], "SUCCEEDED", timeout=240)
    assert "6 records predicted, 2 errors" in done["reason"], done["reason"]
    output = server.home / "jobs" / job["id"] / "output" / "predictions-0.jsonl"
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert sum(1 for r in records if "error" in r) == 2 and len(records) == 8
