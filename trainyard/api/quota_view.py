"""Quota state for the API: the store's view (published nodes, placed jobs) -> the core's
`quota_status`, so `GET /v1/queues`, `trainyard queues` and the metrics show the numbers
the loop admits by."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection

from trainyard.config import Settings
from trainyard.job_resources import worker_resources as worker_request
from trainyard.quotas import quota_file
from trainyard.scheduler.quota_status import QueueQuotaStatus, quota_status
from trainyard.scheduler.types import (
    Node,
    PendingJob,
    RunningJob,
    Taint,
    TaintEffect,
    Toleration,
    WorkerRequest,
)
from trainyard.store import list_active, list_pending
from trainyard.store.records import JobRecord
from trainyard.store.scheduling import published_nodes


def node_from_document(name: str, doc: Mapping[str, Any]) -> Node:
    """A node as the loop published it (see operator.loop.node_document)."""
    return Node(
        name,
        int(doc["cpu_millicores"]),
        int(doc["memory_bytes"]),
        gpus=int(doc.get("gpus") or 0),
        tpu_chips=int(doc.get("tpu_chips") or 0),
        labels=dict(doc.get("labels") or {}),
        taints=tuple(
            Taint(t["key"], t.get("value", ""), TaintEffect(t.get("effect", "NoSchedule")))
            for t in doc.get("taints") or ()
        ),
        ready=bool(doc.get("ready", True)),
    )


def _request(spec: Mapping[str, Any]) -> WorkerRequest:
    cpu, memory, gpus, tpus = worker_request(spec)
    resources = spec.get("resources") or {}
    return WorkerRequest(
        cpu_millicores=cpu,
        memory_bytes=memory,
        gpus=gpus,
        tpu_chips=tpus,
        gpu_models=tuple(resources.get("gpu_models") or ()),
    )


def pending_from_records(records: Iterable[JobRecord]) -> list[PendingJob]:
    """Waiting jobs as the core sees their demand (request, gang size, tolerations)."""
    out = []
    for job in records:
        tolerations = tuple(
            Toleration(
                key=str(t.get("key", "")),
                operator=str(t.get("operator", "Equal")),
                value=str(t.get("value", "")),
                effect=TaintEffect(t["effect"]) if t.get("effect") else None,
            )
            for t in job.spec.get("tolerations") or ()
        )
        out.append(
            PendingJob(
                job.id,
                _request(job.spec),
                workers=int(job.spec.get("workers", 1) or 1),
                queue=job.queue,
                priority=job.priority_value,
                submit_time=job.created_at / 1e6,
                tolerations=tolerations,
                user=job.owner,
            )
        )
    return out


def running_from_records(records: Iterable[JobRecord]) -> list[RunningJob]:
    out = []
    for job in records:
        if not job.placement:
            continue
        request = _request(job.spec)
        out.append(
            RunningJob(
                job.id,
                request,
                tuple(node for _i, node in sorted(job.placement.items())),
                0.0,
                queue=job.queue,
                priority=job.priority_value,
                submit_time=job.created_at / 1e6,
                user=job.owner,
            )
        )
    return out


def queue_quotas(settings: Settings, conn: Connection) -> dict[str, QueueQuotaStatus]:
    """Quota state per queue under quota (empty without a quota file)."""
    source = quota_file(settings)
    if source is None:
        return {}
    nodes = [node_from_document(n, d) for n, d in sorted(published_nodes(conn).items())]
    config = source.current()
    running = running_from_records(list_active(conn))
    waiting = [job for q in config.queues for job in list_pending(conn, queue=q.name)]
    pending = pending_from_records(waiting)
    return {s.queue: s for s in quota_status(config, nodes, running, pending)}
