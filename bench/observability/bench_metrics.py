"""Cost of one /metrics scrape's store work (StoreCollector, cache off) at scale.

    python bench/observability/bench_metrics.py --pending 10000 --finished 50000 [--url URL]

Fills a fresh store (a SQLite file, or on PostgreSQL a schema of its own, dropped after)
with `pending` PENDING jobs and `finished` SUCCEEDED jobs (each with its 4 events and 1
attempt row, as the loop writes them; tables analyzed, as in a long-lived database), then
times the collector's queries and exposition: median and max of `--runs` scrapes (the
max is the first, which counts every settled row once).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

from trainyard.api.metrics import StoreCollector
from trainyard.store import make_engine, migrate, now_us, write_transaction
from trainyard.store.tables import job_attempts, job_events, jobs

SPEC = json.dumps({"name": "b", "kind": "training", "queue": "q", "workers": 1})


def fill(engine, *, pending: int, finished: int, queues: int) -> None:  # type: ignore[no-untyped-def]
    at = now_us() - 86_400_000_000
    job_rows, events, attempts = [], [], []
    for i in range(pending + finished):
        job_id = uuid.uuid4().hex
        queue = f"q{i % queues}"
        done = i >= pending
        job_rows.append(
            dict(
                id=job_id, owner=f"user{i % 20}", name="b", kind="training", queue=queue,
                priority="normal", priority_value=500, state="SUCCEEDED" if done else "PENDING",
                spec=SPEC, version=1, created_at=at + i, updated_at=at + i,
                started_at=at + i + 5_000_000 if done else None,
                finished_at=at + i + 65_000_000 if done else None, attempt=1 if done else 0,
            )
        )  # fmt: skip
        events.append(dict(job_id=job_id, at=at, from_state=None, to_state="PENDING"))
        if done:
            for src, dst in (
                ("PENDING", "ADMITTED"),
                ("ADMITTED", "RUNNING"),
                ("RUNNING", "SUCCEEDED"),
            ):
                events.append(dict(job_id=job_id, at=at, from_state=src, to_state=dst))
            attempts.append(
                dict(
                    job_id=job_id, attempt=1, queue=queue, owner=f"user{i % 20}",
                    placement='{"0":"n"}',
                    workers=1, cpu_millicores=1000, memory_bytes=2**30, gpus=1, tpu_chips=0,
                    accelerator_model="H100", admitted_at=at + i, started_at=at + i + 5_000_000,
                    ended_at=at + i + 65_000_000, outcome="SUCCEEDED",
                )
            )  # fmt: skip
    with write_transaction(engine) as conn:
        for table, rows in ((jobs, job_rows), (job_events, events), (job_attempts, attempts)):
            for start in range(0, len(rows), 5000):
                conn.execute(insert(table), rows[start : start + 5000])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--finished", type=int, default=50_000)
    parser.add_argument("--queues", type=int, default=8)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--url", help="database URL (default: a fresh SQLite file)")
    args = parser.parse_args()
    url = args.url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    schema = None
    if make_url(url).get_backend_name() == "postgresql":
        schema = f"bench_obs_{uuid.uuid4().hex[:12]}"
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url += ("&" if "?" in url else "?") + "options=" + quote(f"-csearch_path={schema}")
    try:
        run(url, args)
    finally:
        if schema is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


def run(url: str, args: argparse.Namespace) -> None:
    engine = make_engine(url)
    migrate(engine)
    fill(engine, pending=args.pending, finished=args.finished, queues=args.queues)
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
    collector = StoreCollector(
        engine,
        queues=[f"q{i}" for i in range(args.queues)],
        priority_classes=["low", "normal", "high"],
        inventory=None,
        cache_seconds=0,
    )
    registry = CollectorRegistry()
    registry.register(collector)
    times, size = [], 0
    for _ in range(args.runs):
        started = time.perf_counter()
        size = len(generate_latest(registry))
        times.append(time.perf_counter() - started)
    print(
        f"{engine.dialect.name}: {args.pending} pending + {args.finished} finished jobs "
        f"({args.finished * 4 + args.pending} events): scrape median "
        f"{statistics.median(times) * 1e3:.1f} ms, max {max(times) * 1e3:.1f} ms, "
        f"{size} bytes"
    )


if __name__ == "__main__":
    main()
