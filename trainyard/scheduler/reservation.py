"""EASY backfill's reservation for a queue's highest-ranked blocked job.

The reservation is the earliest time T at which the blocked job fits, found by
releasing the running jobs in order of expected end (start + runtime limit) until a
placement exists. Jobs ranked behind it in the same queue may start now only if their
runtime limit ends by T (EASY's shadow-time rule), so they cannot delay it.

Scope: reservations are per queue, like strict FIFO's blocking. Queues are separate
streams: another queue's jobs may use any free capacity, as they may under `fifo`.
Holding capacity idle across queues for one queue's head was measured to cost more
than it saves on the Philly trace (see BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trainyard.scheduler.capacity import FULL_GPU_MILLI, ClusterIndex
from trainyard.scheduler.freeing import FreeingWalk
from trainyard.scheduler.placement import Tier, choose_nodes
from trainyard.scheduler.running import RunningSet
from trainyard.scheduler.types import PendingJob, WorkerRequest


@dataclass(frozen=True, slots=True)
class ReservationPlan:
    """Where and when the reserved job will start."""

    job: PendingJob
    start_time: float
    chosen: tuple[tuple[int, int], ...] | None  # None when the caller did not ask for nodes

    def ends_in_time(self, job: PendingJob, now: float, use_estimate: bool = False) -> bool:
        """A job that surely ends by T cannot delay the reservation. With `use_estimate`
        "surely" is "is expected to" (the learned estimate stands in for the limit)."""
        runtime = job.runtime_limit
        if use_estimate and job.estimated_runtime is not None:
            runtime = job.estimated_runtime
        return runtime is not None and now + runtime <= self.start_time


class ReservationCache:
    """Reservation plans kept across cycles while nothing they depend on has changed.

    A replay runs a cycle at every arrival, and on a full cluster most cycles change
    nothing (no capacity came free, nothing was admitted) before a backfill queue's plan
    is needed again, which then walks the running jobs by end all over again. A plan
    depends on the head job, the free capacity (`ClusterIndex.changes` counts every
    take, release and restore), the running jobs and their expected ends
    (`RunningSet.changes`), and on `now` only through start = max(end of the last job it
    waits for, now): with equal counters and a later `now`, the kept plan's start moved
    forward to `now` is exactly what `plan_reservation` would return."""

    __slots__ = ("index", "plans", "running")

    def __init__(self, index: ClusterIndex, running: RunningSet) -> None:
        self.index = index
        self.running = running
        self.plans: dict[
            str, tuple[PendingJob, tuple[int, int, bool], float, ReservationPlan | None]
        ] = {}

    def plan(
        self,
        queue: str,
        job: PendingJob,
        tiers: Sequence[Tier],
        now: float,
        *,
        want_nodes: bool = True,
    ) -> ReservationPlan | None:
        """`plan_reservation(index, running, job, tiers, now)`, from the cache when valid."""
        state = (self.index.changes, self.running.changes, want_nodes)
        kept = self.plans.get(queue)
        if kept is not None and kept[0] is job and kept[1] == state and now >= kept[2]:
            plan = kept[3]
            if plan is None or plan.start_time >= now:
                return plan
            return ReservationPlan(job, now, plan.chosen)
        plan = plan_reservation(self.index, self.running, job, tiers, now, want_nodes=want_nodes)
        self.plans[queue] = (job, state, now, plan)
        return plan


def plan_reservation(
    index: ClusterIndex,
    running: RunningSet,
    job: PendingJob,
    tiers: Sequence[Tier],
    now: float,
    *,
    want_nodes: bool = True,
) -> ReservationPlan | None:
    """The earliest (time, nodes) at which `job` fits, or None if no known end frees enough.

    The walk is virtual: released capacity is added up per node in plain dicts instead
    of moving nodes between index buckets, because a reservation is planned in most
    cycles of a busy cluster. Placement is greedy over nodes, so a gang fits exactly
    when the eligible nodes' room sums to its size; that sum is exact for whole
    accelerators and CPU-only work, and an upper bound for GPU shares (whose split
    across physical GPUs it ignores). Nodes, and any inexact answer, are confirmed by a
    real release-and-place walk that is rolled back.
    """
    request = job.request
    units = request.gpus or request.tpu_chips
    eligible = {pool.id for tier in tiers for pool in tier}
    node_pool = index.node_pool
    single = job.workers == 1 and units > 0
    exact = not request.gpu_share_milli
    extra: dict[int, list[int]] = {}  # node -> [cpu, memory, units, gpu milli] released
    slot_freed: dict[tuple[int, int], int] = {}  # (node, shared GPU slot) -> milli released
    total = 0
    if not single and units and not request.cpu_millicores and not request.memory_bytes:
        # Room is set by accelerators alone: sum it from the bucket sizes, not per node.
        total = sum(
            len(p.buckets[k]) * (k // units)
            for tier in tiers
            for p in tier
            for k in range(units, p.max_units + 1)
        )
    elif not single:
        total = sum(
            _room(index, n, request, units, None) for tier in tiers for p in tier for n in p.nodes
        )
    released = 0
    for end, job_id in running.by_end:
        released += 1
        placed = running.by_id[job_id]
        touched = False
        for a in placed.allocations:
            node = a.node
            if node_pool[node].id not in eligible:
                continue
            touched = True
            got = extra.get(node)
            if got is None:
                got = extra[node] = [0, 0, 0, 0]
            before = 0 if single else _room(index, node, request, units, got)
            r = a.request
            got[0] += r.cpu_millicores * a.count
            got[1] += r.memory_bytes * a.count
            got[2] += (r.gpus or r.tpu_chips) * a.count
            got[3] += r.gpu_share_milli * a.count
            for slot in a.share_slots:
                # A shared GPU whose last share ends becomes a whole free GPU again.
                freed = slot_freed.get((node, slot), 0) + r.gpu_share_milli
                slot_freed[(node, slot)] = freed
                slots = index.partial[node]
                if slots is not None and slots.get(slot, 0) + freed >= FULL_GPU_MILLI:
                    got[2] += 1
            if single:
                if _room(index, node, request, units, got) >= 1:
                    return ReservationPlan(job, max(end, now), ((node, 1),))
            else:
                total += _room(index, node, request, units, got) - before
        if touched and not single and total >= job.workers:
            if exact and not want_nodes:
                return ReservationPlan(job, max(end, now), None)
            chosen = _confirm(index, running, job, tiers, released)
            if chosen is not None:
                return ReservationPlan(job, max(end, now), tuple(chosen))
    return None


def _room(
    index: ClusterIndex, node: int, request: WorkerRequest, units: int, extra: list[int] | None
) -> int:
    """Workers of `request` node could take with `extra` released (an upper bound for
    GPU shares, whose per-GPU split is ignored)."""
    cpu, mem, acc, milli = extra if extra is not None else (0, 0, 0, 0)
    room = 1 << 20
    if request.cpu_millicores:
        room = (index.free_cpu[node] + cpu) // request.cpu_millicores
    if request.memory_bytes:
        room = min(room, (index.free_mem[node] + mem) // request.memory_bytes)
    if units:
        room = min(room, (index.free_units[node] + acc) // units)
    elif request.gpu_share_milli:
        free = index.free_gpu_milli(node) + acc * 1000 + milli
        room = min(room, free // request.gpu_share_milli)
    return max(room, 0)


def _confirm(
    index: ClusterIndex, running: RunningSet, job: PendingJob, tiers: Sequence[Tier], count: int
) -> list[tuple[int, int]] | None:
    """Really release the first `count` jobs by end, try the placement, roll back."""
    walk = FreeingWalk(index, tiers, job.request, job.workers, job.kind)
    chosen = None
    for _end, job_id in running.by_end.islice(0, count):
        placed = running.by_id[job_id]
        if walk.touches(placed):
            walk.index.release_all(placed.allocations)
            walk.released.append(placed)
    for tier in tiers:
        chosen = choose_nodes(index, tier, job.request, job.workers, job.kind)
        if chosen is not None:
            break
    walk.rollback()
    return chosen
