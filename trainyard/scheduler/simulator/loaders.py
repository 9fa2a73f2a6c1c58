"""Trace loaders: read the published trace files, unchanged, into simulator jobs/nodes.

- Philly (Microsoft, ATC'19, as published with the Pollux artifact): one row per job,
  `timestamp,duration,num_gpus,gpu_time,cluster`. Philly nodes had 8 GPUs: a job of up
  to 8 GPUs is one worker, a bigger one is a gang of ceil(n/8) equal workers.
- Alibaba openb (ATC'23): a node list (`sn,cpu_milli,memory_mib,gpu,model`) and a pod
  list with fractional GPUs (`gpu_milli` < 1000), allowed GPU types (`gpu_spec`, `|`
  separated) and a QoS class used as priority.
- native: JSON lines (or CSV with the same columns) of the job fields, documented on
  `load_native`.
- the store (`--from-store`): this installation's own finished jobs, see `load_store`.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from trainyard.scheduler.quantity import QuantityError, cpu_millicores, memory_bytes
from trainyard.scheduler.quota import QuotaConfig
from trainyard.scheduler.quota_file import QuotaFileError, load_quota_text
from trainyard.scheduler.simulator.engine import SimJob
from trainyard.scheduler.types import (
    GPU_PRODUCT_LABEL,
    ZONE_LABEL,
    JobKind,
    Node,
    Taint,
    TaintEffect,
    WorkerRequest,
)

MIB = 2**20
PHILLY_GPUS_PER_NODE = 8
# QoS -> priority: latency-sensitive and guaranteed pods outrank burstable and best-effort.
ALIBABA_QOS_PRIORITY = {"Guaranteed": 300, "LS": 200, "Burstable": 100, "BE": 0}


class TraceError(ValueError):
    """A trace row that cannot be read, with file and line."""


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(newline="") as fh:
        yield from enumerate(csv.DictReader(fh), start=2)


def load_philly(path: Path) -> list[SimJob]:
    """Philly jobs; submit times are seconds since the first submission in the file."""
    raw: list[tuple[datetime, float, int, str, int]] = []
    for line, row in _rows(path):
        try:
            stamp = datetime.strptime(row["timestamp"], "%Y-%m-%d %H:%M:%S")
            duration = float(row["duration"])
            gpus = int(float(row["num_gpus"]))
            queue = row["cluster"]
        except (KeyError, ValueError) as exc:
            raise TraceError(f"{path}:{line}: {exc}") from exc
        if gpus < 1 or duration < 0:
            raise TraceError(f"{path}:{line}: num_gpus must be >= 1 and duration >= 0")
        raw.append((stamp, duration, gpus, queue, line))
    if not raw:
        return []
    origin = min(r[0] for r in raw)
    jobs: list[SimJob] = []
    for stamp, duration, gpus, queue, line in raw:
        workers = math.ceil(gpus / PHILLY_GPUS_PER_NODE)
        per_worker = math.ceil(gpus / workers)
        jobs.append(
            SimJob(
                id=f"philly-{line - 1:05d}",
                submit_time=(stamp - origin).total_seconds(),
                duration=max(duration, 1.0),
                request=WorkerRequest(gpus=per_worker),
                workers=workers,
                queue=queue,
            )
        )
    return jobs


def synthetic_nodes(
    count: int, gpus_per_node: int, prefix: str = "node", product: str = "GPU"
) -> list[Node]:
    """`count` identical GPU nodes (Philly-style clusters given only a size)."""
    labels = {GPU_PRODUCT_LABEL: product} if gpus_per_node else {}
    return [
        Node(
            f"{prefix}-{i:05d}",
            96_000 * max(gpus_per_node, 1),
            2**40,
            gpus=gpus_per_node,
            labels=labels,
        )
        for i in range(count)
    ]


def load_alibaba_nodes(path: Path) -> list[Node]:
    """The openb node list: one GPU model per node, as `nvidia.com/gpu.product`."""
    nodes: list[Node] = []
    for line, row in _rows(path):
        try:
            nodes.append(
                Node(
                    row["sn"],
                    int(row["cpu_milli"]),
                    int(row["memory_mib"]) * MIB,
                    gpus=int(row["gpu"]),
                    labels={GPU_PRODUCT_LABEL: row["model"]} if int(row["gpu"]) else {},
                )
            )
        except (KeyError, ValueError) as exc:
            raise TraceError(f"{path}:{line}: {exc}") from exc
    return nodes


def load_alibaba(path: Path) -> list[SimJob]:
    """openb pods: runtime from scheduling (or creation) to deletion; QoS as priority.

    Best-effort pods are preemptible, the others are not. Pods that never ran in the
    production cluster (no scheduled_time) are replayed for their lifetime in the trace.
    """
    jobs: list[SimJob] = []
    for line, row in _rows(path):
        try:
            created = float(row["creation_time"])
            deleted = float(row["deletion_time"])
            scheduled = float(row["scheduled_time"]) if row["scheduled_time"] else created
            num_gpu = int(row["num_gpu"])
            gpu_milli = int(row["gpu_milli"])
            qos = row["qos"]
            models = tuple(m for m in row["gpu_spec"].split("|") if m)
            request = WorkerRequest(
                cpu_millicores=int(row["cpu_milli"]),
                memory_bytes=int(row["memory_mib"]) * MIB,
                gpus=num_gpu if gpu_milli >= 1000 or num_gpu > 1 else 0,
                gpu_share_milli=gpu_milli if num_gpu == 1 and 0 < gpu_milli < 1000 else 0,
                gpu_models=models if num_gpu else (),
            )
        except (KeyError, ValueError) as exc:
            raise TraceError(f"{path}:{line}: {exc}") from exc
        jobs.append(
            SimJob(
                id=row["name"],
                submit_time=created,
                duration=max(deleted - scheduled, 1.0),
                request=request,
                queue=qos,
                priority=ALIBABA_QOS_PRIORITY.get(qos, 0),
                preemptible=qos == "BE",
            )
        )
    return jobs


def load_native(path: Path) -> list[SimJob]:
    """Native trace: JSON lines (`.jsonl`) or CSV with these fields per job:

    id, submit_time (s), duration (s), workers, queue, priority, preemptible, kind
    (training|inference), cpu_millicores, memory_bytes, gpus, gpu_share_milli,
    gpu_models (list, or `|`-separated in CSV), tpu_chips, tpu_type, tpu_topology.
    Only id, submit_time and duration are required.
    """
    if path.suffix == ".csv":
        records = [row for _line, row in _rows(path)]
    else:
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    jobs: list[SimJob] = []
    for number, rec in enumerate(records, start=1):
        try:
            models = rec.get("gpu_models") or ()
            if isinstance(models, str):
                models = [m for m in models.split("|") if m]
            request = WorkerRequest(
                cpu_millicores=int(rec.get("cpu_millicores") or 0),
                memory_bytes=int(rec.get("memory_bytes") or 0),
                gpus=int(rec.get("gpus") or 0),
                gpu_share_milli=int(rec.get("gpu_share_milli") or 0),
                gpu_models=tuple(models),
                tpu_chips=int(rec.get("tpu_chips") or 0),
                tpu_type=rec.get("tpu_type") or None,
                tpu_topology=rec.get("tpu_topology") or None,
            )
            preemptible = rec.get("preemptible", True)
            if isinstance(preemptible, str):
                preemptible = preemptible.strip().lower() in ("1", "true", "yes")
            jobs.append(
                SimJob(
                    id=str(rec["id"]),
                    submit_time=float(rec["submit_time"]),
                    duration=max(float(rec["duration"]), 0.0),
                    request=request,
                    workers=int(rec.get("workers") or 1),
                    queue=str(rec.get("queue") or "default"),
                    priority=int(rec.get("priority") or 0),
                    preemptible=bool(preemptible),
                    kind=JobKind(rec.get("kind") or "training"),
                )
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise TraceError(f"{path}: record {number}: {exc}") from exc
    seen: set[str] = set()
    for job in jobs:
        if job.id in seen:
            raise TraceError(f"{path}: job id {job.id!r} appears twice; ids must be unique")
        seen.add(job.id)
    return jobs


def load_nodes_file(path: Path) -> list[Node]:
    """Nodes from the openb CSV layout, or JSON lines with the `Node` fields
    (name, cpu_millicores, memory_bytes, gpus, tpu_chips, labels, taints, zone, gpu_product)."""
    if path.suffix == ".csv":
        return load_alibaba_nodes(path)
    nodes: list[Node] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            labels = dict(rec.get("labels") or {})
            if rec.get("zone"):
                labels[ZONE_LABEL] = rec["zone"]
            if rec.get("gpu_product"):
                labels[GPU_PRODUCT_LABEL] = rec["gpu_product"]
            taints = tuple(
                Taint(t["key"], t.get("value", ""), TaintEffect(t.get("effect", "NoSchedule")))
                for t in rec.get("taints") or ()
            )
            nodes.append(
                Node(
                    rec["name"],
                    int(rec["cpu_millicores"]),
                    int(rec["memory_bytes"]),
                    gpus=int(rec.get("gpus") or 0),
                    tpu_chips=int(rec.get("tpu_chips") or 0),
                    labels=labels,
                    taints=taints,
                    ready=bool(rec.get("ready", True)),
                )
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise TraceError(f"{path}:{number}: {exc}") from exc
    return nodes


def load_queue_nodes(path: Path) -> dict[str, int]:
    """`queue,nodes` CSV: each listed queue gets its own cluster of that many nodes."""
    sizes: dict[str, int] = {}
    for line, row in _rows(path):
        try:
            sizes[row["queue"]] = int(row["nodes"])
        except (KeyError, ValueError) as exc:
            raise TraceError(f"{path}:{line}: {exc}") from exc
        if sizes[row["queue"]] < 1:
            raise TraceError(f"{path}:{line}: nodes must be >= 1")
    return sizes


def load_quota_file(path: Path) -> QuotaConfig:
    """A quota file (see scheduler.quota_file); errors name the file and the key."""
    try:
        return load_quota_text(path.read_text())
    except QuotaFileError as exc:
        raise TraceError(f"{path}: {exc}") from exc


# ---------------------------------------------------------------- the store
STORE_US = 1_000_000  # store times are microseconds


@dataclass(frozen=True, slots=True)
class StoreTrace:
    jobs: list[SimJob]
    skipped_unfinished: int  # pending, admitted or running: run time not known yet
    skipped_never_ran: int  # finished without any attempt that started (cancelled early)


def _request(spec: dict[str, Any], attempt: Any | None) -> WorkerRequest:
    """Per-worker request: what the last attempt held, else what the document asked for."""
    resources = spec.get("resources") or {}
    models = tuple(resources.get("gpu_models") or ())
    if attempt is not None:
        return WorkerRequest(
            cpu_millicores=int(attempt.cpu_millicores),
            memory_bytes=int(attempt.memory_bytes),
            gpus=int(attempt.gpus),
            gpu_models=models if attempt.gpus else (),
            tpu_chips=int(attempt.tpu_chips),
            tpu_type=resources.get("tpu_type"),
            tpu_topology=resources.get("tpu_topology"),
        )
    try:
        cpu = cpu_millicores(resources.get("cpu", "1"))
        memory = memory_bytes(resources.get("memory", "1Gi"))
    except QuantityError:
        cpu, memory = 1000, 2**30
    return WorkerRequest(
        cpu_millicores=cpu,
        memory_bytes=memory,
        gpus=int(resources.get("gpu") or 0),
        gpu_models=models if resources.get("gpu") else (),
        tpu_chips=int(resources.get("tpu") or 0),
        tpu_type=resources.get("tpu_type"),
        tpu_topology=resources.get("tpu_topology"),
    )


def _workload(spec: dict[str, Any]) -> str:
    workload = spec.get("workload") or {}
    if workload.get("builtin"):
        return str(workload["builtin"])
    command = workload.get("command") or []
    return str(command[0]) if command else ""


def load_store(url: str) -> StoreTrace:
    """Read the finished jobs of the store at `url` (read-only) into simulator jobs.

    Each finished job becomes a simulator job: submitted at its `created_at`, asking for
    what its attempts held per worker (else what its document asked for), and running
    for its real run time summed over its attempts (started -> ended), as the Philly
    trace sums a job's attempts. Jobs that never ran, or have not finished, are counted
    and left out: their run time is not known. Replaying the rest under another policy
    answers "what would this change have done to the jobs we really ran"."""
    # Imported here: only --from-store needs the store (and SQLAlchemy) at all.
    from sqlalchemy import select

    from trainyard.store.engine import make_engine, read_transaction
    from trainyard.store.states import TERMINAL_STATES
    from trainyard.store.tables import job_attempts, jobs

    engine = make_engine(url)
    try:
        with read_transaction(engine) as conn:
            job_rows = conn.execute(select(jobs).order_by(jobs.c.seq)).all()
            attempt_rows = conn.execute(
                select(job_attempts).order_by(job_attempts.c.job_id, job_attempts.c.attempt)
            ).all()
    finally:
        engine.dispose()
    attempts: dict[str, list[Any]] = {}
    for row in attempt_rows:
        attempts.setdefault(row.job_id, []).append(row)
    terminal = {str(s) for s in TERMINAL_STATES}
    rows = [r for r in job_rows if r.state in terminal]
    origin = min((r.created_at for r in rows), default=0)
    out: list[SimJob] = []
    never_ran = 0
    for row in rows:
        ran = [a for a in attempts.get(row.id, ()) if a.started_at is not None]
        seconds = sum(
            max((a.ended_at or row.finished_at or a.started_at) - a.started_at, 0) for a in ran
        )
        if not ran:
            never_ran += 1
            continue
        spec = json.loads(row.spec)
        out.append(
            SimJob(
                id=row.id,
                submit_time=(row.created_at - origin) / STORE_US,
                duration=max(seconds / STORE_US, 1.0),
                request=_request(spec, ran[-1]),
                workers=int(ran[-1].workers),
                queue=row.queue,
                priority=int(row.priority_value),
                kind=JobKind(row.kind),
                owner=row.owner,
                name=row.name,
                workload=_workload(spec),
            )
        )
    return StoreTrace(out, len(job_rows) - len(rows), never_ran)
