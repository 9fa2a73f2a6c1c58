"""Benchmark the scheduling loop: its own cost, separated from torch start-up.

    .venv/bin/python bench/loop/bench_loop.py lifecycle --jobs 1000
    .venv/bin/python bench/loop/bench_loop.py cycle --pending 10000
    .venv/bin/python bench/loop/bench_loop.py cycle-compare --old /work/main --repeats 3
    .venv/bin/python bench/loop/bench_loop.py submit-under-load --pending 10000

lifecycle: a real `trainyard serve` (local backend, its loop process) receives N jobs
    whose workload is the `true` command, submitted at once by 16 concurrent clients
    (or at a steady --rate);
    reports jobs completed per second (first submit -> last SUCCEEDED) and submit ->
    RUNNING p50/p99 from the stored timestamps (one server clock).
cycle: one SchedulingLoop.cycle() in-process over a store holding N pending jobs:
    (a) on this machine's local backend (one node), (b) on a static 2,000 x 8-GPU node
    list (a bench harness standing in for a big cluster: it reports launched gangs as
    running and starts nothing). Reports the first cycle (writes every reason) and the
    median of the following ones, split into store read / core / store write / act.
submit-under-load: POST /v1/jobs latency (sequential client) against a server whose
    store holds N pending jobs, with the loop cycling every 0.1 s and with the loop off,
    side by side: the loop's own process must not stall the API.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from trainyard.operator.backend import GangLaunch, WorkerPhase, WorkerStatus
from trainyard.operator.loop import SchedulingLoop
from trainyard.scheduler import SchedulerConfig
from trainyard.scheduler.types import GPU_PRODUCT_LABEL, ZONE_LABEL, Node
from trainyard.store import Submission, make_engine, migrate, submit_jobs

TRAINYARD = str(Path(sys.executable).parent / "trainyard")
PORT = 18095


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _serve(home: Path, **env_extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
    env.update(TRAINYARD_HOME=str(home), TRAINYARD_LOCAL_CPUS="2")
    env.update(env_extra)
    process = subprocess.Popen(
        [TRAINYARD, "serve", "--port", str(PORT)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(home.parent / "serve.err", "ab"),  # noqa: SIM115
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{PORT}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("serve did not start")


def _wait_for_loop(home: Path) -> None:
    """Until the loop process has run its first cycle (it publishes the node view then):
    `serve` answers /healthz before its loop child is up, and jobs submitted earlier
    would measure the loop process's start-up, not the loop."""
    engine = create_engine(f"sqlite:///{home / 'trainyard.db'}")
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if conn.execute(text("SELECT count(*) FROM cluster_nodes")).scalar_one():
                    return
            time.sleep(0.1)
    finally:
        engine.dispose()
    raise RuntimeError("the loop did not run a cycle")


def lifecycle(jobs: int, cpus: int, rate: float | None = None) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp()) / "home"
    home.mkdir(parents=True)
    # `cpus` sizes the node: at 10m per job, 100 CPUs keep capacity free for every job,
    # so submit -> RUNNING measures the loop, not queueing.
    process = _serve(home, TRAINYARD_LOOP_PERIOD_SECONDS="1", TRAINYARD_LOCAL_CPUS=str(cpus))
    try:
        _wait_for_loop(home)
        token = (home / "admin-token").read_text().strip()
        body = {
            "name": "t",
            "resources": {"cpu": "10m", "memory": "1Mi"},
            "workload": {"command": ["true"]},
        }
        with httpx.Client(
            base_url=f"http://127.0.0.1:{PORT}", headers={"Authorization": f"Bearer {token}"}
        ) as client:

            def one(_: int) -> int:
                return client.post("/v1/jobs", json=body).status_code

            if rate is None:  # all at once, from 16 concurrent clients
                with ThreadPoolExecutor(16) as pool:
                    codes = list(pool.map(one, range(jobs)))
            else:  # a steady arrival rate: latency when the loop is not behind a burst
                codes = []
                start = time.monotonic()
                for i in range(jobs):
                    delay = start + i / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    codes.append(one(i))
            assert codes.count(201) == jobs, set(codes)
            engine = create_engine(f"sqlite:///{home / 'trainyard.db'}")
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    done = conn.execute(
                        text("SELECT count(*) FROM jobs WHERE state='SUCCEEDED'")
                    ).scalar_one()
                if done == jobs:
                    break
                time.sleep(0.5)
            with engine.connect() as conn:
                rows = conn.execute(
                    text("SELECT created_at, started_at, finished_at FROM jobs ORDER BY seq")
                ).all()
            engine.dispose()
    finally:
        process.terminate()
        process.wait(timeout=60)
    to_running = [(r.started_at - r.created_at) / 1e6 for r in rows if r.started_at]
    span = (max(r.finished_at for r in rows) - min(r.created_at for r in rows)) / 1e6
    return {
        "jobs": jobs,
        "arrival": "burst" if rate is None else f"{rate:g}/s",
        "node_cpus": cpus,
        "succeeded": done,
        "jobs_per_second": round(jobs / span, 1),
        "submit_to_running_p50_s": round(_percentile(to_running, 0.5), 3),
        "submit_to_running_p99_s": round(_percentile(to_running, 0.99), 3),
        "submit_to_running_max_s": round(max(to_running), 3),
        # Where the slowest are in submission order (a start-up effect or a stall).
        "slowest_by_submit_order": sorted(range(len(to_running)), key=lambda i: -to_running[i])[:5],
    }


class StaticNodes:
    """Bench harness: a fixed node list; launched gangs are reported as running."""

    name = "static"

    def __init__(self, nodes: Sequence[Node]) -> None:
        self._nodes = tuple(nodes)
        self._workers: list[WorkerStatus] = []

    def start(self, wake: Any) -> None: ...

    def nodes(self) -> Sequence[Node]:
        return self._nodes

    def workers(self) -> Sequence[WorkerStatus]:
        return list(self._workers)

    def launch(self, gang: GangLaunch) -> None:
        self._workers += [
            WorkerStatus(gang.job_id, gang.attempt, w.index, w.node, WorkerPhase.RUNNING)
            for w in gang.workers
        ]

    def stop(self, job_id: str, *, grace_seconds: float, reason: str) -> None: ...

    def log_tail(self, job_id: str, index: int, *, lines: int = 20) -> str:
        return ""

    def rendezvous(self, job_id: str, attempt: int) -> tuple[str, int]:
        return ("127.0.0.1", 29500)

    def close(self) -> None: ...


def _store_with_pending(pending: int, gpu: bool) -> Any:
    home = Path(tempfile.mkdtemp())
    engine = make_engine(f"sqlite:///{home / 'trainyard.db'}")
    migrate(engine)
    subs = []
    for i in range(pending):
        resources: dict[str, Any] = {"cpu": "1", "memory": "1Gi"}
        workers = 1
        if gpu:
            resources.update(gpu=(1, 2, 4, 8)[i % 4])
            workers = (1, 1, 2, 4)[i % 4]
        spec = {
            "name": f"j{i}",
            "kind": "training",
            "queue": ("default", "research")[i % 2],
            "priority": "normal",
            "workers": workers,
            "resources": resources,
            "workload": {"command": ["true"]},
        }
        subs.append(Submission(owner="bench", spec=spec, priority_value=500 + i % 3))
    for start in range(0, pending, 1000):
        submit_jobs(engine, submissions=subs[start : start + 1000])
    return engine, home


def cycle(pending: int, rounds: int) -> dict[str, Any]:
    """The loop's cycle as its process runs it: garbage collection paced between cycles
    where the code under test has `trainyard.operator.collector` (the automatic
    collector otherwise, as the loop process had it)."""
    try:
        from trainyard.operator.collector import CollectionPacing
    except ImportError:  # an older tree: the automatic collector
        CollectionPacing = None
    out: dict[str, Any] = {}
    nodes = [
        Node(
            f"gpu-{i}",
            96_000,
            1024 * 2**30,
            gpus=8,
            labels={GPU_PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3", ZONE_LABEL: f"z{i % 4}"},
        )
        for i in range(2000)
    ]
    for label, gpu in (("static_2000x8gpu", True),):
        engine, home = _store_with_pending(pending, gpu)
        loop = SchedulingLoop(
            engine, StaticNodes(nodes), home=home, scheduler_config=SchedulerConfig()
        )
        pacing = CollectionPacing() if CollectionPacing is not None else None
        if pacing is not None:
            pacing.start()
        first = loop.cycle()
        between = []
        later = []
        for _ in range(rounds):
            if pacing is not None:
                between.append(pacing.after_cycle()[1])
            later.append(loop.cycle())
        if pacing is not None:
            pacing.stop()
        med = statistics.median
        out[label] = {
            "first_cycle_ms": round(first.total_s * 1000, 1),
            "first_admitted": len(first.admitted),
            "live_jobs": later[-1].live_jobs,
            "median_cycle_ms": round(med(r.total_s for r in later) * 1000, 1),
            "max_cycle_ms": round(max(r.total_s for r in later) * 1000, 1),
            "median_read_ms": round(med(r.read_s for r in later) * 1000, 1),
            # reconcile + snapshot + the core; `schedule` alone where the report has it
            "median_core_ms": round(med(r.core_s for r in later) * 1000, 1),
            "median_schedule_ms": round(
                med(getattr(r, "schedule_s", float("nan")) for r in later) * 1000, 1
            ),
            "median_write_ms": round(med(r.write_s for r in later) * 1000, 1),
            "median_act_ms": round(med(r.act_s for r in later) * 1000, 1),
            "median_gc_between_cycles_ms": round(med(between) * 1000, 1) if between else None,
            "max_gc_between_cycles_ms": round(max(between) * 1000, 1) if between else None,
        }
    return out


def cycle_compare(old: str, pending: int, rounds: int, repeats: int) -> dict[str, Any]:
    """`cycle` with the trainyard of `old` (PYTHONPATH) and of this tree, in
    alternating fresh processes, `repeats` times each: medians over every cycle."""
    new = str(Path(__file__).resolve().parents[2])
    runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    for _ in range(repeats):
        for label, tree in (("old", old), ("new", new)):
            env = {**os.environ, "PYTHONPATH": tree}
            command = [sys.executable, __file__, "cycle", "--pending", str(pending)]
            command += ["--rounds", str(rounds)]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            runs[label].append(json.loads(done.stdout)["static_2000x8gpu"])
    out: dict[str, Any] = {"old_tree": old, "new_tree": new, "repeats": repeats}
    for label, results in runs.items():
        keys = [k for k in results[0] if k.startswith("median_") and results[0][k] is not None]
        out[label] = {k: round(statistics.median(r[k] for r in results), 1) for k in keys}
        out[label]["max_cycle_ms"] = max(r["max_cycle_ms"] for r in results)
        out[label]["first_cycle_ms"] = round(
            statistics.median(r["first_cycle_ms"] for r in results), 1
        )
    return out


def submit_under_load(pending: int, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, loop_on in (("loop_on", "true"), ("loop_off", "false"), ("loop_on_2", "true")):
        engine, home_dir = _store_with_pending(pending, gpu=False)
        engine.dispose()
        home = home_dir
        process = _serve(
            home,
            TRAINYARD_LOOP=loop_on,
            TRAINYARD_LOOP_PERIOD_SECONDS="0.1",
            TRAINYARD_LOCAL_CPUS="1",
        )
        try:
            token = (home / "admin-token").read_text().strip()
            body = {"name": "s", "resources": {"cpu": "64"}, "workload": {"command": ["true"]}}
            latencies = []
            with httpx.Client(
                base_url=f"http://127.0.0.1:{PORT}", headers={"Authorization": f"Bearer {token}"}
            ) as client:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    t0 = time.perf_counter()
                    assert client.post("/v1/jobs", json=body).status_code == 201
                    latencies.append(time.perf_counter() - t0)
        finally:
            process.terminate()
            process.wait(timeout=60)
        out[label] = {
            "submits": len(latencies),
            "p50_ms": round(_percentile(latencies, 0.5) * 1000, 2),
            "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("lifecycle")
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--cpus", type=int, default=100, help="the local node's CPUs")
    p.add_argument("--rate", type=float, default=None, help="submits/s (default: all at once)")
    p = sub.add_parser("cycle")
    p.add_argument("--pending", type=int, default=10000)
    p.add_argument("--rounds", type=int, default=5)
    p = sub.add_parser("cycle-compare")
    p.add_argument("--old", default="/work/main", help="the other tree (PYTHONPATH)")
    p.add_argument("--pending", type=int, default=10000)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p = sub.add_parser("submit-under-load")
    p.add_argument("--pending", type=int, default=10000)
    p.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    if args.what == "lifecycle":
        result = lifecycle(args.jobs, args.cpus, args.rate)
    elif args.what == "cycle":
        result = cycle(args.pending, args.rounds)
    elif args.what == "cycle-compare":
        result = cycle_compare(args.old, args.pending, args.rounds, args.repeats)
    else:
        result = submit_under_load(args.pending, args.seconds)
    result["load_average"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
