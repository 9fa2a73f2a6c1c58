"""Inference throughput and latency of the `gpt` workload, side by side, medians.

    nice .venv/bin/python bench/worker/bench_infer.py --repeats 3

1. Batch mode (JSONL in/out, in-process): records/s for bf16 autocast, fp32 and dynamic int8.
The model is a wider GPT than the training default (4 layers, d=256, context 128), so that
model time rather than HTTP handling dominates a request, as it does in real services.

2. Service mode (a real HTTP server on loopback, `concurrency` clients in flight): latency
   p50/p99 and throughput with no batching (max batch 1) vs dynamic batching (max batch 32,
   5 ms window). One process serves at a time; configurations are interleaved per repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

TEXTS = [
    "The driver counted the wagons of coal bound for Ashford before noon.",
    "Fog over Carrow.",
    "Timetable: Jarrow 07:15, Penrith 09:40, Lydford 11:02.",
    "At the siding, the porter and the guard talked about the cold wind that came at dusk.",
]


# Wide enough that model time, not HTTP handling, dominates a request (as in real services).
WIDE = ["--n-layer", "4", "--n-head", "4", "--n-embd", "256", "--block-size", "128"]


def free_port() -> int:
    for port in range(27900, 28000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 27900-27999")


def make_checkpoint(out: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "trainyard.worker", "train", "--output-dir", str(out),
         "--steps", "5", "--metrics-port", "0", *WIDE],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip


def batch_mode(checkpoint: Path, records: int) -> dict[str, float]:
    import torch

    from trainyard.worker.inference.batch import run_batch
    from trainyard.worker.inference.loading import load_predictor

    torch.set_num_threads(1)
    lines = "".join(json.dumps({"text": TEXTS[i % len(TEXTS)]}) + "\n" for i in range(records))
    rates = {}
    for name, kwargs in {
        "bf16": {"precision": "bf16"},
        "fp32": {"precision": "fp32"},
        "int8 dynamic": {"quantize": True},
    }.items():
        predictor, _ = load_predictor(checkpoint, torch.device("cpu"), **kwargs)
        predictor.warm_up(32)
        t0 = time.perf_counter()
        run_batch(predictor, io.StringIO(lines), io.StringIO(), 32)
        rates[name] = records / (time.perf_counter() - t0)
    return rates


async def _load(base: str, requests: int, concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            t0 = time.perf_counter()
            response = await http.post("/predict", json={"text": TEXTS[i % len(TEXTS)]})
            response.raise_for_status()
            latencies.append(time.perf_counter() - t0)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return latencies, elapsed


def service_mode(checkpoint: Path, max_batch: int, wait_ms: float, requests: int, conc: int):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainyard.worker", "infer", "--serve", "--checkpoint-dir",
         str(checkpoint), "--port", str(port), "--batch-size", str(max_batch),
         "--max-wait-ms", str(wait_ms), "--metrics-port", "0"],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        asyncio.run(_load(base, 64, conc))  # warm-up
        latencies, elapsed = asyncio.run(_load(base, requests, conc))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    q = statistics.quantiles(latencies, n=100)
    return {"p50_ms": q[49] * 1e3, "p99_ms": q[98] * 1e3, "rps": requests / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--records", type=int, default=2048)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--checkpoint-dir", type=Path, help="default: a fresh wide gpt (5 steps)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint_dir or Path(tmp) / "gpt"
        if args.checkpoint_dir is None:
            make_checkpoint(checkpoint)
        batch_runs = [batch_mode(checkpoint, args.records) for _ in range(args.repeats)]
        services = {"no batching (max 1)": (1, 0.0), "dynamic (max 32, 5 ms)": (32, 5.0)}
        service_runs: dict[str, list[dict]] = {name: [] for name in services}
        for _ in range(args.repeats):
            for name, (max_batch, wait) in services.items():
                service_runs[name].append(
                    service_mode(checkpoint, max_batch, wait, args.requests, args.concurrency)
                )
    print(f"Batch mode, {args.records} records, batch 32, 1 thread (median of {args.repeats}):")
    print("| precision | records/s |\n|---|---|")
    for name in batch_runs[0]:
        print(f"| {name} | {statistics.median(r[name] for r in batch_runs):,.0f} |")
    print(f"\nService, {args.requests} requests, {args.concurrency} concurrent clients:")
    print("| batching | p50 ms | p99 ms | requests/s |\n|---|---|---|---|")
    for name, runs in service_runs.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"| {name} | {med['p50_ms']:.1f} | {med['p99_ms']:.1f} | {med['rps']:,.0f} |")


if __name__ == "__main__":
    main()
