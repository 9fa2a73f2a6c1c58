"""The inference service as a real HTTP server: dynamic batching, validation, metrics."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from worker_procs import find_free_ports, wait_for, worker_env

TEXTS = [f"The {i} o'clock train carried coal to Ashford." for i in range(24)]


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gpt")
    subprocess.run(
        [sys.executable, "-m", "trainyard.worker", "train", "--output-dir", str(out),
         "--steps", "2", "--batch-size", "4", "--metrics-port", "0"],
        env=worker_env(), check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return out


def _batch_mode(gpt_dir: Path, tmp_path: Path) -> list[dict]:
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    subprocess.run(
        [sys.executable, "-m", "trainyard.worker", "infer", "--checkpoint-dir", str(gpt_dir),
         "--input", str(src), "--output", str(dst), "--precision", "fp32", "--metrics-port", "0"],
        env=worker_env(), check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return [json.loads(line) for line in dst.read_text().splitlines()]


def test_service_batches_concurrent_requests_and_validates(gpt_dir: Path, tmp_path: Path) -> None:
    port = find_free_ports(2)
    base, metrics_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}/metrics"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainyard.worker", "infer", "--serve",
         "--checkpoint-dir", str(gpt_dir), "--port", str(port), "--precision", "fp32",
         "--batch-size", "8", "--max-wait-ms", "200", "--job", "svc",
         "--metrics-port", str(port + 1), "--metrics-addr", "127.0.0.1"],
        env=worker_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 120, "the inference service to answer /healthz")
        assert httpx.get(f"{base}/healthz").json()["workload"] == "gpt"

        async def fire() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                return await asyncio.gather(
                    *(
                        client.post("/predict", json={"id": i, "text": t})
                        for i, t in enumerate(TEXTS)
                    )
                )

        responses = asyncio.run(fire())
        assert all(r.status_code == 200 for r in responses)
        expected = _batch_mode(gpt_dir, tmp_path)
        for i, (response, want) in enumerate(zip(responses, expected, strict=True)):
            body = response.json()
            assert body["id"] == i
            assert body["nll"] == pytest.approx(want["nll"], abs=1e-4)

        bad = httpx.post(f"{base}/predict", json={"text": 7})
        assert bad.status_code == 422 and bad.json()["error"].startswith("text:")
        broken = httpx.post(f"{base}/predict", content=b"{nope")
        assert broken.status_code == 422 and "invalid JSON" in broken.json()["error"]

        metrics = httpx.get(metrics_url).text
        count = _sample(metrics, "trainyard_worker_inference_batch_size_count")
        total = _sample(metrics, "trainyard_worker_inference_batch_size_sum")
        assert total == len(TEXTS)
        assert count < len(TEXTS), "concurrent requests must have shared batches"
        assert _sample(metrics, "trainyard_worker_inference_latency_seconds_count") == len(TEXTS)
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


def _sample(text: str, name: str) -> float:
    prefix = f'{name}{{job="svc",queue="",rank="0"}} '
    return next(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))
