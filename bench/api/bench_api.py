"""Benchmark the control plane over real HTTP: submits/s and list-page latency.

    .venv/bin/python bench/api/bench_api.py                 # SQLite and PostgreSQL
    .venv/bin/python bench/api/bench_api.py --databases sqlite --duration 20

What it does, per database: starts `trainyard serve` (uvicorn, one process) on loopback
with a fresh store; drives POST /v1/jobs with `wrk` (C, one thread, 32 connections, so
the load generator takes little of the server's CPU) and reads wrk's own latency
percentiles; then stores 100,000 jobs and measures GET /v1/jobs pages (50 jobs, starting
at a random depth each request, 8 connections). It also records the server's CPU time
per request and the machine's load average, because the machine is shared. Every
measurement is repeated (--rounds, a fresh server and database each time for submits) and
the round with the median throughput is reported.

Needs `wrk` (Debian package) and, for PostgreSQL, hack/postgres/up.sh (the URL is read
from TRAINYARD_TEST_DATABASE_URL or .postgres/url; each run uses a fresh schema).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, insert, text

from trainyard.store import make_engine, migrate, new_job_id
from trainyard.store.tables import job_events, jobs

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PORT = 18090
TRAINYARD = str(Path(sys.executable).parent / "trainyard")
SPEC = {
    "name": "bench-job",
    "kind": "training",
    "queue": "default",
    "priority": "normal",
    "workers": 2,
    "resources": {"cpu": "8", "memory": "64Gi", "gpu": 8, "gpu_models": ["H100", "A100"]},
    "workload": {"builtin": "gpt", "args": {"steps": 2000}},
}


def postgres_url() -> str:
    url = os.environ.get("TRAINYARD_TEST_DATABASE_URL")
    if not url and (ROOT / ".postgres" / "url").exists():
        url = (ROOT / ".postgres" / "url").read_text().strip()
    if not url:
        raise SystemExit("no PostgreSQL: run hack/postgres/up.sh first")
    return url


@contextmanager
def fresh_database(kind: str, workdir: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'trainyard.db'}"
        return
    base = postgres_url()
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{base}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def server(home: Path, database_url: str) -> Iterator[tuple[str, str, int]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
    env.update(TRAINYARD_HOME=str(home), TRAINYARD_DATABASE_URL=database_url)
    log = (home.parent / "server.log").open("wb")
    process = subprocess.Popen(
        [TRAINYARD, "serve", "--host", "127.0.0.1", "--port", str(PORT)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{PORT}"
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            raise SystemExit(f"server exited; see {log.name}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("server did not start within 120 s")
        time.sleep(0.2)
    try:
        yield url, (home / "admin-token").read_text().strip(), process.pid
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(
    url: str, token: str, script: str, *, connections: int, duration: int, pid: int
) -> dict[str, Any]:
    env = {**os.environ, "TRAINYARD_TOKEN": token}
    load_before = os.getloadavg()[0]
    cpu_before = cpu_seconds(pid)
    result = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(HERE / script),
            url,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    cpu = cpu_seconds(pid) - cpu_before
    out = result.stdout
    percentiles = {
        p: float(v) * _UNITS[u]
        for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    }
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return {
        "requests_per_s": round(rps, 1),
        "p50_ms": percentiles.get("50"),
        "p99_ms": percentiles.get("99"),
        "requests": total,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "server_cpu_ms_per_request": round(cpu * 1000 / max(total, 1), 3),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def seed(database_url: str, count: int, ids_file: Path) -> None:
    """Store `count` jobs (and their first events) straight through the store's tables;
    their ids go to `ids_file`, one a line (list cursors name a job)."""
    engine = make_engine(database_url)
    migrate(engine)
    spec = json.dumps(SPEC, sort_keys=True, separators=(",", ":"))
    states = ["SUCCEEDED", "FAILED", "CANCELLED", "PENDING", "RUNNING"]
    start = time.time_ns() // 1000 - count * 1000
    batch = 5000
    with engine.begin() as conn:
        for offset in range(0, count, batch):
            rows, events = [], []
            for i in range(offset, min(count, offset + batch)):
                job_id, at = new_job_id(), start + i * 1000
                rows.append(
                    {
                        "id": job_id,
                        "owner": f"user-{i % 50}" if i % 2 else "admin",
                        "name": "bench-job",
                        "kind": "training",
                        "queue": "default",
                        "priority": "normal",
                        "priority_value": 500,
                        "state": states[i % len(states)],
                        "reason": None,
                        "spec": spec,
                        "spec_bytes": len(spec),
                        "placement": None,
                        "version": 1,
                        "idempotency_key": None,
                        "request_hash": None,
                        "created_at": at,
                        "updated_at": at,
                        "started_at": None,
                        "finished_at": None,
                    }
                )
                events.append(
                    {"job_id": job_id, "at": at, "from_state": None, "to_state": "PENDING"}
                )
            conn.execute(insert(jobs), rows)
            conn.execute(insert(job_events), events)
            with ids_file.open("a") as out:
                out.writelines(row["id"] + "\n" for row in rows)
    engine.dispose()


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput, plus every run's figures for the record."""
    ordered = sorted(runs, key=lambda r: r["requests_per_s"])
    return {**ordered[len(ordered) // 2], "all_rounds": runs}


def run(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"database": kind}
    with tempfile.TemporaryDirectory(prefix="trainyard-bench-") as tmp:
        work = Path(tmp)
        submit_runs = []
        for round_ in range(args.rounds):
            round_dir = work / f"round-{round_}"
            round_dir.mkdir()
            with (
                fresh_database(kind, round_dir) as url,
                server(round_dir / "home", url) as (base, token, pid),
            ):
                # Warm up (imports, connection pool, page cache), then measure.
                wrk(
                    f"{base}/v1/jobs",
                    token,
                    "submit.lua",
                    connections=args.connections,
                    duration=3,
                    pid=pid,
                )
                submit_runs.append(
                    wrk(
                        f"{base}/v1/jobs",
                        token,
                        "submit.lua",
                        connections=args.connections,
                        duration=args.duration,
                        pid=pid,
                    )
                )
        results["submit"] = median_run(submit_runs)
        (work / "list").mkdir()
        with fresh_database(kind, work / "list") as url:
            began = time.monotonic()
            ids_file = work / "list" / "job-ids.txt"
            seed(url, args.list_jobs, ids_file)
            results["seed_seconds"] = round(time.monotonic() - began, 1)
            os.environ["TRAINYARD_BENCH_JOB_IDS"] = str(ids_file)
            with server(work / "list" / "home", url) as (base, token, pid):
                wrk(f"{base}/v1/jobs", token, "list.lua", connections=8, duration=3, pid=pid)
                # One client: the latency of a page. Eight: pages under concurrent load.
                for connections in (1, 8):
                    results[f"list_c{connections}"] = median_run(
                        [
                            wrk(
                                f"{base}/v1/jobs",
                                token,
                                "list.lua",
                                connections=connections,
                                duration=args.duration,
                                pid=pid,
                            )
                            for _ in range(args.rounds)
                        ]
                    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--duration", type=int, default=15, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--list-jobs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="repeat; the median is reported")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    all_results = [run(kind, args) for kind in args.databases.split(",")]
    print(json.dumps(all_results, indent=2))
    print()
    print(
        "| database | submits/s | submit p50 | submit p99 | server CPU/submit | "
        "list p50 / p99 (1 client) | list p50 / p99 (8 clients) | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in all_results:
        s, one, eight = r["submit"], r["list_c1"], r["list_c8"]
        print(
            f"| {r['database']} | {s['requests_per_s']:.0f} | {s['p50_ms']:.1f} ms | "
            f"{s['p99_ms']:.1f} ms | {s['server_cpu_ms_per_request']:.2f} ms | "
            f"{one['p50_ms']:.1f} / {one['p99_ms']:.1f} ms | "
            f"{eight['p50_ms']:.1f} / {eight['p99_ms']:.1f} ms | "
            f"{s['load_average'][0]}-{eight['load_average'][1]} |"
        )


if __name__ == "__main__":
    main()
