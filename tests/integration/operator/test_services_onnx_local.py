"""A model service with `runtime: onnx` on the local backend, end to end: a real `trainyard
serve`, a real training job's checkpoint, two replica processes that share one export (the
file lock), /predict through the control plane answering what eager torch fp32 computes
(within 1e-4 on the NLL), and a model torch.export cannot capture failing the service with
the exporter's words. Waits on stored state with deadlines (never sleeps).
"""

from __future__ import annotations

import os
import subprocess
import sys
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

torch = pytest.importorskip("torch", reason="the reference predictions need torch")

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[3]
FP32_TOLERANCE = 1e-4
TEXTS = ["The 6 o'clock train carried coal to Ashford.", "Fog", "Jarrow 07:15, Penrith 09:40."]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Serve, str]]:
    home = tmp_path_factory.mktemp("onnx-svc") / "home"
    with serve(home, reap_workers=True) as server:  # services are left running
        job = submit_tiny_gpt_training(server, steps=4)
        server.wait_state(job["id"], "SUCCEEDED", timeout=300)
        yield server, job["id"]


def _service(**extra: Any) -> dict[str, Any]:
    return {
        "name": "gpt-onnx",
        "kind": "inference",
        "mode": "service",
        "runtime": "onnx",
        "precision": "fp32",
        "resources": {"cpu": "500m", "memory": "1Gi"},
        "workload": {"builtin": "gpt", "args": {"batch_size": 4, "max_wait_ms": 2}},
        **extra,
    }


def _torch_fp32_nll(checkpoints: Path, texts: list[str]) -> list[float]:
    from trainyard.worker.inference.loading import load_predictor

    predictor, _ = load_predictor(checkpoints, torch.device("cpu"), precision="fp32")
    return [r["nll"] for r in predictor.predict([predictor.parse({"text": t}) for t in texts])]


def _answers(server: Serve, job_id: str) -> list[dict[str, Any]]:
    answers = []
    with server.client() as client:
        for text in TEXTS:
            reply = client.post(f"/v1/jobs/{job_id}/predict", json={"id": text, "text": text})
            assert reply.status_code == 200, reply.text
            answers.append(reply.json())
    return answers


def test_onnx_and_torch_services_side_by_side_answer_alike_through_the_proxy(
    trained: tuple[Serve, str],
) -> None:
    """Two services at once (the loop probes both), one per runtime, the same checkpoint."""
    server, train_id = trained
    onnx_id = server.submit(_service(replicas=2, checkpoint_job=train_id))["id"]
    torch_id = server.submit(
        _service(name="gpt-torch", runtime="torch", replicas=1, checkpoint_job=train_id)
    )["id"]
    assert server.job(onnx_id)["runtime"] == "onnx"
    for job_id, replicas in ((onnx_id, 2), (torch_id, 1)):
        wait_for(
            lambda job_id=job_id, replicas=replicas: (
                server.job(job_id).get("ready_replicas") == replicas
            ),
            timeout=300,
            interval=0.2,
            what=f"{replicas} replicas of {job_id} ready",
        )
    onnx_answers, torch_answers = _answers(server, onnx_id), _answers(server, torch_id)
    reference = _torch_fp32_nll(server.home / "jobs" / train_id / "output", TEXTS)
    for mine, theirs, expected, text in zip(
        onnx_answers, torch_answers, reference, TEXTS, strict=True
    ):
        assert mine["id"] == text
        assert mine["nll"] == pytest.approx(expected, abs=FP32_TOLERANCE)
        assert mine["nll"] == pytest.approx(theirs["nll"], abs=FP32_TOLERANCE)
    with server.client() as client:
        bad = client.post(f"/v1/jobs/{onnx_id}/predict", json={"text": 5})
        assert bad.status_code == 422 and "text" in bad.text
        # The proxy's route is warm now: another user still gets 404, on every request,
        # and a revoked token is refused at once.
        created = client.post("/v1/tokens", json={"user": "mallory"})
        assert created.status_code == 201, created.text
    other = {"Authorization": f"Bearer {created.json()['token']}"}
    for _ in range(3):
        reply = httpx.post(
            f"{server.url}/v1/jobs/{onnx_id}/predict", json={"text": "x"}, headers=other
        )
        assert reply.status_code == 404, reply.text
    with server.client() as client:
        assert client.post(f"/v1/tokens/{created.json()['id']}/revoke").status_code == 200
    reply = httpx.post(f"{server.url}/v1/jobs/{onnx_id}/predict", json={"text": "x"}, headers=other)
    assert reply.status_code == 401
    # Both onnx replicas started together and shared one export in the job's own output.
    exports = sorted((server.home / "jobs" / onnx_id / "output" / "onnx").glob("model-*"))
    assert [p.name.startswith("model-step4-") for p in exports] == [True]
    assert list(exports[0].parent.glob(".export-*")) == []

    for job_id in (onnx_id, torch_id):
        with server.client() as client:
            assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    for job_id in (onnx_id, torch_id):
        server.wait_state(job_id, "CANCELLED", timeout=120)
        assert processes_of(job_id) == []
    with server.client() as client:  # right after the end: the ended state, not a stale route
        finished = client.post(f"/v1/jobs/{onnx_id}/predict", json={"text": "x"})
        assert finished.status_code == 409 and "CANCELLED" in finished.text


def test_a_model_that_cannot_export_fails_the_service_with_the_exporters_words(
    trained: tuple[Serve, str], tmp_path: Path
) -> None:
    server, _ = trained
    user_path = f"{REPO}{os.pathsep}{REPO / 'tests' / 'unit' / 'worker'}"
    checkpoints = tmp_path / "data-dependent"
    subprocess.run(
        [sys.executable, "-m", "trainyard.worker", "train", "--workload",
         "user_workload:data_dependent", "--output-dir", str(checkpoints), "--steps", "2",
         "--batch-size", "4", "--metrics-port", "0"],
        check=True, capture_output=True, timeout=300, env={**os.environ, "PYTHONPATH": user_path},
    )  # fmt: skip
    job = server.submit(
        _service(replicas=1, serve_checkpoint=str(checkpoints), env={"PYTHONPATH": user_path})
    )
    failed = server.wait_state(job["id"], "FAILED", timeout=240)
    assert "replica cannot start" in failed["reason"], failed["reason"]
    assert "cannot be exported to ONNX" in failed["reason"], failed["reason"]
    assert "data-dependent" in failed["reason"], failed["reason"]
    assert failed["failures"] == 0  # exit 2 = bad input: no restart storm
