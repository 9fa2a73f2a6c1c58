"""Model service throughput and latency per runtime, direct to the replica and through the
control plane's /predict proxy.

    PYTHONPATH=$PWD TRAINYARD_ACCELERATOR_PRICES='{"cpu": 0.04}' \\
        python bench/inference/bench_service.py --repeats 3 --requests 200

Trains a tiny gpt checkpoint (the worker's default shape: 2 layers, 64 wide, 64-byte
context; seconds), starts one real `trainyard serve` (local backend) and in it one
single-replica service job per runtime x max batch size (`--runtimes`, `--batch-sizes`),
each replica pinned to one thread (OMP_NUM_THREADS=1, 1 CPU requested). Then, repeatedly and
interleaved so a change of machine load hits every row alike, it sends `--requests` POST
/predict of a 45-byte text with `--concurrency` clients in flight, once straight to the
replica's loopback address (read from the store's service_endpoints row, so the same process
is measured both ways) and once through /v1/jobs/{id}/predict: the difference is the proxy's
own cost (authentication, owner check, the hop). Reports requests/s and p50/p99 latency,
the median over repeats of each.

Cost per 1,000 requests = price of what the replica holds per hour / (requests/s x 3600) x
1000. The price is read from TRAINYARD_ACCELERATOR_PRICES (the control plane's setting,
price per accelerator-hour by model name) under `--accelerator`; a replica here holds no
accelerator but one CPU core, so the default name is "cpu" and its price is read as per
core-hour. Unset, the price is `--price-per-hour` (0.04, the output says which was used).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.integration.operator.loop_support import Serve, serve
from tests.support.servers import wait_for

TEXT = {"text": "The 6 o'clock train carried coal to Ashford.", "max_new_tokens": 0}
RUNTIMES = {  # name -> (document runtime, quantize)
    "torch-fp32": ("torch", False),
    "torch-int8": ("torch", True),
    "onnx-fp32": ("onnx", False),
    "onnx-int8": ("onnx", True),
}


def train(out: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "trainyard.worker", "train", "--output-dir", str(out),
         "--steps", "2", "--batch-size", "4", "--metrics-port", "0"],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip


async def load(url: str, requests: int, concurrency: int, headers: dict[str, str]) -> dict:
    latencies: list[float] = []
    failures = 0
    remaining = requests
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, headers=headers, limits=limits) as client:
        for _ in range(concurrency):  # open the connections, warm the shapes
            await client.post(url, json=TEXT)

        async def worker() -> None:
            nonlocal failures, remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                reply = await client.post(url, json=TEXT)
                latencies.append(time.perf_counter() - started)
                failures += reply.status_code != 200

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - began
    latencies.sort()
    return {
        "rps": len(latencies) / seconds,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))] * 1e3,
        "failures": failures,
    }


def service_document(name: str, checkpoint: Path, runtime: str, batch: int) -> dict[str, Any]:
    model_runtime, quantize = RUNTIMES[runtime]
    return {
        "name": name,
        "kind": "inference",
        "mode": "service",
        "replicas": 1,
        "serve_checkpoint": str(checkpoint),
        "runtime": model_runtime,
        "precision": "fp32",
        "resources": {"cpu": "1", "memory": "1Gi"},
        "env": {"OMP_NUM_THREADS": "1"},
        "workload": {
            "builtin": "gpt",
            "args": {"batch_size": batch, "max_wait_ms": 2, "quantize": quantize},
        },
    }


def replica_address(server: Serve, job_id: str) -> str | None:
    """The replica's own loopback address, as the loop stored it for the proxy."""
    with sqlite3.connect(server.home / "trainyard.db") as db:
        row = db.execute(
            "SELECT ready FROM service_endpoints WHERE job_id = ?", (job_id,)
        ).fetchone()
    ready = json.loads(row[0]) if row else []
    return ready[0] if ready else None


def price_per_hour(args: argparse.Namespace) -> tuple[float, str]:
    prices = json.loads(os.environ.get("TRAINYARD_ACCELERATOR_PRICES") or "{}")
    if args.accelerator in prices:
        return float(prices[args.accelerator]), (
            f"TRAINYARD_ACCELERATOR_PRICES[{args.accelerator!r}] x 1 held"
        )
    return args.price_per_hour, f"--price-per-hour (no {args.accelerator!r} price configured)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", default="1,8", help="comma-separated client counts")
    parser.add_argument("--batch-sizes", default="1,8", help="comma-separated max batch sizes")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES))
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--price-per-hour", type=float, default=0.04)
    args = parser.parse_args()
    runtimes = args.runtimes.split(",")
    batches = [int(b) for b in args.batch_sizes.split(",")]
    samples: dict[tuple[str, int, int, str], list[dict]] = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "gpt"
        train(checkpoint)
        cpus = str(max(2, len(runtimes) * len(batches)))
        with serve(Path(tmp) / "home", local_cpus=cpus, local_memory_bytes=str(64 << 30)) as server:
            jobs = {}
            for runtime in runtimes:
                for batch in batches:
                    document = service_document(f"{runtime}-b{batch}", checkpoint, runtime, batch)
                    jobs[runtime, batch] = server.submit(document)["id"]
            addresses: dict[tuple[str, int], str] = {}

            def all_ready() -> bool:
                for key, job_id in jobs.items():
                    address = replica_address(server, job_id)
                    if address is None:
                        return False
                    addresses[key] = address
                return True

            try:
                wait_for(all_ready, timeout=600, interval=0.5, what="every replica ready")
                measure(server, jobs, addresses, args, samples)
            finally:  # local replicas outlive their server (adoption): stop them
                for job_id in jobs.values():
                    with server.client() as client:
                        client.post(f"/v1/jobs/{job_id}/cancel")
                for job_id in jobs.values():
                    server.wait_state(job_id, "CANCELLED", "FAILED", timeout=120)
    print(json.dumps(report(samples, args, load_before), indent=1))


def measure(
    server: Serve,
    jobs: dict[tuple[str, int], str],
    addresses: dict[tuple[str, int], str],
    args: argparse.Namespace,
    samples: dict[tuple[str, int, int, str], list[dict]],
) -> None:
    """Every (runtime, batch, clients, path) once per repeat, interleaved."""
    headers = {"Authorization": f"Bearer {server.token}"}
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    for _ in range(args.repeats):
        for (runtime, batch), job_id in jobs.items():
            for clients in concurrencies:
                for path in ("direct", "proxy"):
                    if path == "direct":
                        url = f"http://{addresses[runtime, batch]}/predict"
                        result = asyncio.run(load(url, args.requests, clients, {}))
                    else:
                        url = f"{server.url}/v1/jobs/{job_id}/predict"
                        result = asyncio.run(load(url, args.requests, clients, headers))
                    samples.setdefault((runtime, batch, clients, path), []).append(result)


def report(
    samples: dict[tuple[str, int, int, str], list[dict]],
    args: argparse.Namespace,
    load_before: tuple[float, float, float],
) -> dict[str, Any]:
    price, price_source = price_per_hour(args)
    rows = []
    for (runtime, batch, clients, path), runs in samples.items():
        rps = statistics.median(r["rps"] for r in runs)
        rows.append(
            {
                "runtime": runtime,
                "max_batch": batch,
                "clients": clients,
                "path": path,
                "rps": round(rps, 1),
                "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 2),
                "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 2),
                "failures": sum(r["failures"] for r in runs),
                "usd_per_1000": round(price / (rps * 3600) * 1000, 6),
                "rps_runs": [round(r["rps"], 1) for r in runs],
            }
        )
    return {
        "args": vars(args),
        "price_per_hour": price,
        "price_source": price_source,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "results": rows,
    }


if __name__ == "__main__":
    main()
