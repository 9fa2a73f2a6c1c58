"""Pure functions that turn store records into API documents (no I/O, easy to test)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import Response

from trainyard.api.inventory import NodeCapacity
from trainyard.api.schemas import (
    AcceleratorUsage,
    ClusterPublic,
    EventPublic,
    NodePublic,
    QueuedJob,
    QueuePublic,
    ResourceUsage,
)
from trainyard.config import QueueConfig
from trainyard.job_resources import worker_resources as worker_request
from trainyard.store import EventRecord, JobRecord, QueueCounts, QueuePosition, to_datetime


def iso_time(microseconds: int | None) -> str | None:
    """Stored microseconds as an ISO 8601 UTC time ("...Z"), or None."""
    return _iso(microseconds)


def _iso(microseconds: int | None) -> str | None:
    moment = to_datetime(microseconds)
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def job_public(job: JobRecord) -> dict[str, Any]:
    """A stored job as the JobPublic document, ready for JSON.

    Built directly rather than validated into a JobPublic model: the document part was
    validated on the way in, and skipping a second validation per job keeps submits and
    list pages cheap. The schemathesis suite checks that responses match JobPublic.
    """
    return {
        **job.spec,
        "id": job.id,
        "state": job.state.value,
        "reason": job.reason,
        "owner": job.owner,
        "placement": _placement_public(job.placement),
        "version": job.version,
        "attempt": job.attempt,
        "failures": job.failures,
        "stopping": None if job.stop_target is None else job.stop_target.value,
        "created_at": _iso(job.created_at),
        "updated_at": _iso(job.updated_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "estimated_start": _iso(_estimate(job.state.value, job.estimated_start)),
    }


def _estimate(state: str, estimated_start: int | None) -> int | None:
    """A forecast start means something only while the job waits."""
    return estimated_start if state == "PENDING" else None


def _placement_public(placement: Mapping[int, str] | None) -> dict[str, str] | None:
    if placement is None:
        return None
    return {str(index): node for index, node in sorted(placement.items())}


def jobs_page_response(rows: Sequence[Mapping[str, Any]], next_cursor: str | None) -> Response:
    """A JobsPublic page from raw job rows (`trainyard.store.list_job_rows`).

    The same document as `job_public` per job, built without parsing the stored job
    document: its JSON text is spliced into the response next to the lifecycle fields.
    (On a page of 50 jobs, decoding and re-encoding the documents was most of the
    server's work.)
    """
    parts = []
    for m in rows:
        placement = m["placement"]
        lifecycle = {
            "id": m["id"],
            "state": m["state"],
            "reason": m["reason"],
            "owner": m["owner"],
            "placement": None
            if placement is None
            else _placement_public({int(k): v for k, v in json.loads(placement).items()}),
            "version": m["version"],
            "attempt": m["attempt"],
            "failures": m["failures"],
            "stopping": m["stop_target"],
            "created_at": _iso(m["created_at"]),
            "updated_at": _iso(m["updated_at"]),
            "started_at": _iso(m["started_at"]),
            "finished_at": _iso(m["finished_at"]),
            "estimated_start": _iso(_estimate(m["state"], m.get("estimated_start"))),
        }
        spec: str = m["spec"]  # a JSON object ("{...}"), as _dump wrote it
        opening = spec[:-1] + "," if spec != "{}" else "{"
        parts.append(opening + json.dumps(lifecycle, **_COMPACT)[1:])
    tail = json.dumps(next_cursor)
    body = f'{{"data":[{",".join(parts)}],"count":{len(parts)},"next_cursor":{tail}}}'
    return Response(_utf8(body), media_type="application/json")


def _utf8(text: str) -> bytes:
    """`text` as UTF-8; a lone surrogate (which UTF-8 cannot hold) becomes a JSON escape.

    The API refuses lone surrogates on the way in, but a response built after a commit
    must never fail: a stored value from an older version would make its job unreadable.
    """
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join(f"\\u{ord(c):04x}" if "\ud800" <= c <= "\udfff" else c for c in text).encode(
            "utf-8"
        )


_COMPACT: dict[str, Any] = {"ensure_ascii": False, "separators": (",", ":")}


def json_response(
    content: Any, *, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON response from plain data (FastAPI then skips response-model validation)."""
    try:
        body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escaped, as JSON allows (see _utf8)
        body = json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    return Response(body, status_code=status_code, headers=headers, media_type="application/json")


def event_public(event: EventRecord) -> EventPublic:
    return EventPublic(
        at=to_datetime(event.at),  # type: ignore[arg-type]
        from_state=event.from_state,
        to_state=event.to_state,
        reason=event.reason,
    )


def queues_public(
    *,
    queues: Sequence[QueueConfig],
    counts: Iterable[QueueCounts],
    positions: Mapping[str, Sequence[QueuePosition]],
    now_us: int,
    waits: Mapping[str, float] | None = None,
) -> list[QueuePublic]:
    """Per configured queue: counts, oldest wait, and the pending positions given."""
    by_queue = {c.queue: c for c in counts}
    result = []
    for queue in queues:
        c = by_queue.get(queue.name)
        oldest = c.oldest_pending_created_at if c else None
        result.append(
            QueuePublic(
                name=queue.name,
                policy=queue.policy,
                pending=c.pending if c else 0,
                admitted=c.admitted if c else 0,
                running=c.running if c else 0,
                oldest_wait_seconds=None if oldest is None else max(0, now_us - oldest) / 1e6,
                expected_wait_seconds=(waits or {}).get(queue.name),
                positions=[
                    QueuedJob(
                        id=p.id,
                        name=p.name,
                        owner=p.owner,
                        priority=p.priority,
                        position=p.position,
                        wait_seconds=max(0, now_us - p.created_at) / 1e6,
                    )
                    for p in positions.get(queue.name, ())
                ],
            )
        )
    return result


def _usage(resource: str, unit: str, capacity: int, allocated: int) -> ResourceUsage:
    return ResourceUsage(
        resource=resource,
        unit=unit,
        capacity=capacity,
        allocated=allocated,
        free=max(0, capacity - allocated),
    )


def cluster_public(
    *, backend: str, nodes: Sequence[NodeCapacity], active_jobs: Iterable[JobRecord]
) -> ClusterPublic:
    """Capacity, allocated (placed ADMITTED/RUNNING workers) and free, per node and in total.

    A worker placed on a node the inventory does not list still counts in the totals, so
    allocated never silently shrinks when a node disappears.
    """
    allocated: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for job in active_jobs:
        if not job.placement:
            continue
        request = worker_request(job.spec)
        for node in job.placement.values():
            totals = allocated[node]
            for i, amount in enumerate(request):
                totals[i] += amount
    node_docs = []
    accelerators: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for node in nodes:
        used = allocated.get(node.name, [0, 0, 0, 0])
        accelerator = None
        if node.gpu:
            accelerator = _accelerator("gpu", node.gpu_model or "unknown", node.gpu, used[2])
        elif node.tpu:
            accelerator = _accelerator("tpu", node.tpu_type or "unknown", node.tpu, used[3])
        if accelerator is not None:
            entry = accelerators[(accelerator.kind, accelerator.model)]
            entry[0] += accelerator.capacity
            entry[1] += accelerator.allocated
        node_docs.append(
            NodePublic(
                name=node.name,
                resources=[
                    _usage("cpu", "millicores", node.cpu_millicores, used[0]),
                    _usage("memory", "bytes", node.memory_bytes, used[1]),
                    _usage("gpu", "devices", node.gpu, used[2]),
                    _usage("tpu", "chips", node.tpu, used[3]),
                ],
                accelerator=accelerator,
            )
        )
    all_used = [sum(t[i] for t in allocated.values()) for i in range(4)]
    totals = [
        _usage("cpu", "millicores", sum(n.cpu_millicores for n in nodes), all_used[0]),
        _usage("memory", "bytes", sum(n.memory_bytes for n in nodes), all_used[1]),
        _usage("gpu", "devices", sum(n.gpu for n in nodes), all_used[2]),
        _usage("tpu", "chips", sum(n.tpu for n in nodes), all_used[3]),
    ]
    return ClusterPublic(
        backend=backend,
        resources=totals,
        accelerators=[
            _accelerator(kind, model, capacity, used)
            for (kind, model), (capacity, used) in sorted(accelerators.items())
        ],
        nodes=node_docs,
    )


def _accelerator(kind: str, model: str, capacity: int, allocated: int) -> AcceleratorUsage:
    return AcceleratorUsage(
        kind=kind,  # type: ignore[arg-type]
        model=model,
        capacity=capacity,
        allocated=allocated,
        free=max(0, capacity - allocated),
    )
