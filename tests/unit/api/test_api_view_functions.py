"""Pure view functions: cluster allocation and queue positions."""

from __future__ import annotations

from typing import Any

from trainyard.api.inventory import NodeCapacity
from trainyard.api.views import cluster_public, queues_public
from trainyard.config import QueueConfig
from trainyard.store import JobRecord, JobState, QueueCounts, QueuePosition


def make_job(
    name: str,
    *,
    state: JobState = JobState.RUNNING,
    placement: dict[int, str] | None = None,
    owner: str = "alice",
    seq: int = 1,
    **resources: Any,
) -> JobRecord:
    return JobRecord(
        seq=seq,
        id=f"id-{name}",
        owner=owner,
        name=name,
        kind="training",
        queue="default",
        priority="normal",
        priority_value=500,
        state=state,
        reason=None,
        spec={"name": name, "resources": {"cpu": "1", "memory": "1Gi", **resources}},
        placement=placement,
        version=1,
        idempotency_key=None,
        request_hash=None,
        created_at=1_000_000 * seq,
        updated_at=1_000_000 * seq,
        started_at=None,
        finished_at=None,
    )


NODES = [
    NodeCapacity("a", 8000, 64 * 2**30, gpu=8, gpu_model="H100"),
    NodeCapacity("b", 8000, 64 * 2**30, gpu=8, gpu_model="H100"),
    NodeCapacity("c", 4000, 32 * 2**30, gpu=4, gpu_model="A100"),
    NodeCapacity("t", 4000, 32 * 2**30, tpu=4, tpu_type="v5e"),
]


def usage(doc: Any, resource: str) -> tuple[int, int, int]:
    entry = {r.resource: r for r in doc.resources}[resource]
    return entry.capacity, entry.allocated, entry.free


def test_allocation_counts_each_placed_worker_on_its_node() -> None:
    jobs = [
        make_job("ddp", placement={0: "a", 1: "b"}, gpu=8, cpu="2"),
        make_job("small", placement={0: "c"}, gpu=1, cpu="500m", memory="2Gi"),
        make_job("tpu", placement={0: "t"}, tpu=4),
        make_job("unplaced", placement=None, gpu=8),
    ]
    doc = cluster_public(backend="kubernetes", nodes=NODES, active_jobs=jobs)
    assert usage(doc, "gpu") == (20, 17, 3)
    assert usage(doc, "cpu") == (24000, 5500, 18500)
    assert usage(doc, "tpu") == (4, 4, 0)
    models = {(a.kind, a.model): (a.capacity, a.allocated, a.free) for a in doc.accelerators}
    assert models == {
        ("gpu", "H100"): (16, 16, 0),
        ("gpu", "A100"): (4, 1, 3),
        ("tpu", "v5e"): (4, 4, 0),
    }
    node_c = next(n for n in doc.nodes if n.name == "c")
    assert {r.resource: r.allocated for r in node_c.resources}["memory"] == 2 * 2**30


def test_workers_on_unknown_nodes_still_count_in_totals() -> None:
    doc = cluster_public(
        backend="local", nodes=NODES[:1], active_jobs=[make_job("x", placement={0: "gone"}, gpu=2)]
    )
    assert usage(doc, "gpu") == (8, 2, 6)


def test_queue_view_reports_counts_waits_and_positions() -> None:
    counts = [
        QueueCounts(
            "default", pending=4, running=1, admitted=0, oldest_pending_created_at=1_000_000
        )
    ]
    positions = [QueuePosition(2, "id-a1", "a1", "alice", "normal", 2_000_000)]
    (queue,) = queues_public(
        queues=[QueueConfig(name="default")],
        counts=counts,
        positions={"default": positions},
        now_us=11_000_000,
    )
    assert (queue.pending, queue.running, queue.oldest_wait_seconds) == (4, 1, 10.0)
    assert [(p.name, p.position, p.wait_seconds) for p in queue.positions] == [("a1", 2, 9.0)]


def test_an_empty_configured_queue_is_still_listed() -> None:
    (queue,) = queues_public(queues=[QueueConfig(name="empty")], counts=[], positions={}, now_us=0)
    assert (queue.pending, queue.running, queue.oldest_wait_seconds, queue.positions) == (
        0,
        0,
        None,
        [],
    )
