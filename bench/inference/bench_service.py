"""Model service throughput and latency: one replica per runtime, direct and through the
control plane's /predict proxy.

    PYTHONPATH=$PWD python bench/inference/bench_service.py --requests 300 --concurrency 8

Trains a tiny gpt checkpoint (seconds), then for each runtime (torch fp32, torch int8)
starts `python -m trainyard.worker infer --serve` and sends `--requests` POST /predict
with `--concurrency` clients in flight: requests/s, p50 and p99 latency, the mean batch
the dynamic batcher formed. With `--proxy`, the fp32 replica is also run as a service
job of a real `trainyard serve` and the same load goes through /v1/jobs/{id}/predict, so
the proxy's own cost is the difference. Cost per 1,000 requests = price per hour of the
resources the replica holds / (requests/s * 3600) * 1000 (`--price-per-hour`).
Interleave runs and quote medians: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.integration.operator.loop_support import free_port, serve
from tests.support.servers import wait_for

TEXT = {"text": "The 6 o'clock train carried coal to Ashford.", "max_new_tokens": 0}


def train(out: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "trainyard.worker", "train", "--output-dir", str(out),
         "--steps", "2", "--batch-size", "4", "--metrics-port", "0"],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip


async def load(url: str, requests: int, concurrency: int, headers: dict[str, str]) -> dict:
    latencies: list[float] = []
    failures = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    async with httpx.AsyncClient(timeout=60, headers=headers) as client:
        for _ in range(5):  # warm connections and shapes
            await client.post(url, json=TEXT)

        async def worker() -> None:
            nonlocal failures
            while not queue.empty():
                queue.get_nowait()
                started = time.perf_counter()
                reply = await client.post(url, json=TEXT)
                latencies.append(time.perf_counter() - started)
                failures += reply.status_code != 200

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - began
    latencies.sort()
    return {
        "rps": requests / seconds,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))] * 1e3,
        "failures": failures,
    }


def direct(checkpoint: Path, quantize: bool, args: argparse.Namespace) -> dict:
    port = free_port()
    command = [sys.executable, "-m", "trainyard.worker", "infer", "--serve",
               "--checkpoint-dir", str(checkpoint), "--port", str(port), "--precision", "fp32",
               "--batch-size", str(args.batch_size), "--max-wait-ms", str(args.max_wait_ms),
               "--metrics-port", str(port)]  # fmt: skip
    if quantize:
        command.append("--quantize")
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _up(f"{base}/healthz"), timeout=120, interval=0.1, what="replica")
        return asyncio.run(load(f"{base}/predict", args.requests, args.concurrency, {}))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def proxied(checkpoint: Path, args: argparse.Namespace, home: Path) -> dict:
    with serve(home) as server:
        job = server.submit(
            {
                "name": "bench-svc",
                "kind": "inference",
                "mode": "service",
                "replicas": 1,
                "checkpoint": str(checkpoint),
                "precision": "fp32",
                "resources": {"cpu": "1", "memory": "1Gi"},
                "workload": {
                    "builtin": "gpt",
                    "args": {"batch_size": args.batch_size, "max_wait_ms": args.max_wait_ms},
                },
            }
        )
        wait_for(
            lambda: server.job(job["id"]).get("ready_replicas") == 1,
            timeout=240,
            interval=0.2,
            what="the service ready",
        )
        url = f"{server.url}/v1/jobs/{job['id']}/predict"
        headers = {"Authorization": f"Bearer {server.token}"}
        return asyncio.run(load(url, args.requests, args.concurrency, headers))


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--proxy", action="store_true")
    parser.add_argument(
        "--price-per-hour",
        type=float,
        default=0.04,
        help="price of the replica's resources per hour (default: one CPU core, $0.04)",
    )
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "gpt"
        train(checkpoint)
        rows = {
            "torch-fp32 direct": direct(checkpoint, False, args),
            "torch-int8 direct": direct(checkpoint, True, args),
        }
        if args.proxy:
            rows["torch-fp32 via proxy"] = proxied(checkpoint, args, Path(tmp) / "home")
    for row in rows.values():
        row["usd_per_1000"] = args.price_per_hour / (row["rps"] * 3600) * 1000
    print(json.dumps({"args": vars(args), "results": rows}, indent=2))


if __name__ == "__main__":
    main()
