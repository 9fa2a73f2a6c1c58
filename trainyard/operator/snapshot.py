"""Stored jobs -> the core's types (PendingJob, RunningJob): the one place that knows both.

A job's document is turned into a `JobShape` once (documents never change after submit)
and cached by the loop; per cycle only the lifecycle columns are combined with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trainyard.durations import duration_seconds
from trainyard.operator.launch import per_worker_resources
from trainyard.scheduler.types import (
    JobKind,
    PendingJob,
    RunningJob,
    TaintEffect,
    Toleration,
    WorkerRequest,
)
from trainyard.store.scheduling import LiveJob

US = 1_000_000
# Jobs on their way out are the cheapest possible victims: they are going anyway.
STOPPING_PRIORITY = -(2**62)


@dataclass(frozen=True, slots=True)
class JobShape:
    """What the core needs from a job document, parsed once."""

    request: WorkerRequest
    workers: int
    kind: JobKind
    preemptible: bool
    runtime_limit: float | None
    tolerations: tuple[Toleration, ...]


def job_shape(spec: Mapping[str, Any]) -> JobShape:
    """Parse the scheduling-relevant part of a stored job document."""
    cpu, memory, gpus, tpus = per_worker_resources(spec)
    resources = spec.get("resources") or {}
    request = WorkerRequest(
        cpu_millicores=cpu,
        memory_bytes=memory,
        gpus=gpus,
        gpu_models=tuple(resources.get("gpu_models") or ()),
        tpu_chips=tpus,
        tpu_type=resources.get("tpu_type"),
        tpu_topology=resources.get("tpu_topology"),
    )
    max_runtime = spec.get("max_runtime")
    return JobShape(
        request=request,
        workers=int(spec.get("workers", 1)),
        kind=JobKind(spec.get("kind", "training")),
        preemptible=bool(spec.get("preemptible", True)),
        runtime_limit=float(duration_seconds(max_runtime)) if max_runtime else None,
        tolerations=tuple(_toleration(t) for t in spec.get("tolerations") or ()),
    )


def _toleration(raw: Mapping[str, Any]) -> Toleration:
    effect = raw.get("effect")
    return Toleration(
        key=str(raw.get("key", "")),
        operator=str(raw.get("operator", "Equal")),
        value=str(raw.get("value", "")),
        effect=TaintEffect(effect) if effect else None,
    )


def pending_job(job: LiveJob, shape: JobShape) -> PendingJob:
    return PendingJob(
        id=job.id,
        request=shape.request,
        workers=shape.workers,
        queue=job.queue,
        priority=job.priority_value,
        submit_time=job.created_at / US,
        runtime_limit=shape.runtime_limit,
        preemptible=shape.preemptible,
        kind=shape.kind,
        tolerations=shape.tolerations,
        user=job.owner,
    )


def running_job(
    job: LiveJob, shape: JobShape, holds: Mapping[int, str], *, stopping: bool, now: float
) -> RunningJob:
    start = (job.attempt_started_at or job.created_at) / US
    return RunningJob(
        id=job.id,
        request=shape.request,
        placement=tuple(node for _, node in sorted(holds.items())),
        start_time=min(start, now),
        queue=job.queue,
        priority=STOPPING_PRIORITY if stopping else job.priority_value,
        submit_time=job.created_at / US,
        expected_end=None if shape.runtime_limit is None else start + shape.runtime_limit,
        preemptible=True if stopping else shape.preemptible,
        kind=shape.kind,
        user=job.owner,
    )
