"""A model service's rolling update under load: how long it takes and what clients see.

    PYTHONPATH=$PWD python bench/inference/bench_rollout.py --concurrency 4 --replicas 2

Runs a real `trainyard serve` (local backend), trains two tiny gpt checkpoints as jobs,
starts a `--replicas` service from the older one and keeps `--concurrency` clients
sending POST /v1/jobs/{id}/predict through the control plane. Measures latency (p50,
p99), requests/s and failures in three phases: steady before the update, during it
(from the PATCH to the "rolled out" event), and steady after; plus the rollout's
duration. One JSON line per run; interleave runs and quote medians (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.integration.operator.loop_support import serve, tiny_gpt
from tests.support.servers import wait_for


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _phase(samples: list[tuple[float, float, int]], start: float, end: float) -> dict:
    inside = [s for s in samples if start <= s[0] < end]
    ok = [latency for _, latency, code in inside if code == 200]
    return {
        "requests": len(inside),
        "failed": sum(1 for _, _, code in inside if code != 200),
        "rps": round(len(inside) / (end - start), 1) if end > start else None,
        "p50_ms": round(statistics.median(ok) * 1000, 1) if ok else None,
        "p99_ms": round(_percentile(ok, 0.99) * 1000, 1) if ok else None,
    }


def run(concurrency: int, replicas: int, steady_seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp, serve(Path(tmp) / "home") as server:
        trained = [
            server.submit(
                {
                    "name": f"gpt-{steps}",
                    "resources": {"cpu": "1", "memory": "1Gi"},
                    "workload": {"builtin": "gpt", "args": tiny_gpt(steps)},
                    "ddp": False,
                }
            )["id"]
            for steps in (4, 6)
        ]
        for job_id in trained:
            server.wait_state(job_id, "SUCCEEDED", timeout=300)
        job_id = server.submit(
            {
                "name": "svc",
                "kind": "inference",
                "mode": "service",
                "replicas": replicas,
                "checkpoint_job": trained[0],
                "precision": "fp32",
                "resources": {"cpu": "250m", "memory": "512Mi"},
                "workload": {"builtin": "gpt", "args": {"batch_size": 8, "max_wait_ms": 2}},
            }
        )["id"]
        wait_for(
            lambda: server.job(job_id).get("ready_replicas") == replicas,
            timeout=300,
            interval=0.2,
            what="replicas ready",
        )
        samples: list[tuple[float, float, int]] = []
        stop = threading.Event()

        def client_loop() -> None:
            with server.client() as client:
                while not stop.is_set():
                    began = time.perf_counter()
                    try:
                        code = client.post(
                            f"/v1/jobs/{job_id}/predict", json={"text": "The train"}
                        ).status_code
                    except httpx.HTTPError:
                        code = -1
                    samples.append((began, time.perf_counter() - began, code))

        threads = [threading.Thread(target=client_loop) for _ in range(concurrency)]
        for thread in threads:
            thread.start()
        try:
            t0 = time.perf_counter()
            wait_for(lambda: time.perf_counter() - t0 >= steady_seconds, timeout=600)
            t1 = time.perf_counter()
            with server.client() as client:
                reply = client.patch(f"/v1/jobs/{job_id}", json={"checkpoint_job": trained[1]})
                reply.raise_for_status()
            wait_for(
                lambda: any(
                    "rolled out revision 2" in (e["reason"] or "") for e in server.events(job_id)
                ),
                timeout=600,
                interval=0.1,
                what="rolled out",
            )
            t2 = time.perf_counter()
            wait_for(lambda: time.perf_counter() - t2 >= steady_seconds, timeout=600)
            t3 = time.perf_counter()
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        return {
            "replicas": replicas,
            "concurrency": concurrency,
            "rollout_seconds": round(t2 - t1, 1),
            "before": _phase(samples, t0, t1),
            "during": _phase(samples, t1, t2),
            "after": _phase(samples, t2, t3),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--steady-seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    for _ in range(args.repeats):
        print(json.dumps(run(args.concurrency, args.replicas, args.steady_seconds)), flush=True)


if __name__ == "__main__":
    main()
