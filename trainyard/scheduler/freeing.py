"""Release running jobs one at a time until a job would fit, then roll back.

Preemption (which jobs must be evicted?) asks this against the live index, as Kueue
simulates removing victims and restores; reservation planning uses it to confirm what its
cheaper virtual walk found (which running jobs must end before the blocked job fits?).
Trying a full placement after every release would cost O(releases x placement), so a
cheap necessary condition is kept incrementally and the real placement is only tried
when the condition holds: for a one-worker job, "some node just touched can now take
it" (placement is exhaustive, so no other node can); for a gang, "the eligible pools
have room for W workers" summed from the bucket sizes.
"""

from __future__ import annotations

from collections.abc import Sequence

from trainyard.scheduler.capacity import ClusterIndex
from trainyard.scheduler.placement import Tier, choose_nodes
from trainyard.scheduler.running import Placed
from trainyard.scheduler.types import JobKind, WorkerRequest


class FreeingWalk:
    """One walk: `release` jobs in the caller's order, `rollback` when done."""

    def __init__(
        self,
        index: ClusterIndex,
        tiers: Sequence[Tier],
        request: WorkerRequest,
        workers: int,
        kind: JobKind,
    ) -> None:
        self.index = index
        self.tiers = tiers
        self.request = request
        self.workers = workers
        self.kind = kind
        self.units = request.gpus or request.tpu_chips
        self.eligible = {pool.id for tier in tiers for pool in tier}
        self.released: list[Placed] = []
        self.version = index.version
        self.total = self._baseline() if workers > 1 else 0

    def _node_room(self, node: int) -> int:
        if self.units:
            return self.index.free_units[node] // self.units
        return min(self.index.capacity_of(node, self.request), self.workers)

    def _baseline(self) -> int:
        total = 0
        for tier in self.tiers:
            for pool in tier:
                if self.units:
                    for k in range(self.units, pool.max_units + 1):
                        total += len(pool.buckets[k]) * (k // self.units)
                else:
                    total += sum(self._node_room(n) for n in pool.nodes)
        return total

    def touches(self, placed: Placed) -> bool:
        node_pool = self.index.node_pool
        return any(node_pool[a.node].id in self.eligible for a in placed.allocations)

    def release(self, placed: Placed) -> list[tuple[int, int]] | None:
        """Release `placed`; return a placement for the job if it now fits, else None."""
        index = self.index
        touched: list[int] = []
        before: list[int] = []
        for a in placed.allocations:
            if index.node_pool[a.node].id in self.eligible:
                touched.append(a.node)
                before.append(self._node_room(a.node) if self.workers > 1 else 0)
        index.release_all(placed.allocations)
        self.released.append(placed)
        if not touched:
            return None
        if self.workers == 1:
            if not any(index.capacity_of(n, self.request) >= 1 for n in touched):
                return None
        else:
            seen: set[int] = set()
            for n, old in zip(touched, before, strict=True):
                if n not in seen:
                    seen.add(n)
                    self.total += self._node_room(n) - old
            if self.total < self.workers:
                return None
        for tier in self.tiers:
            chosen = choose_nodes(index, tier, self.request, self.workers, self.kind)
            if chosen is not None:
                return chosen
        return None

    def rollback(self, keep_released: frozenset[str] = frozenset()) -> None:
        """Re-take what was released (latest first, each exactly as it was), except jobs
        in `keep_released`."""
        index = self.index
        for placed in reversed(self.released):
            if placed.job_id in keep_released:
                continue
            placed.allocations = [index.restore(a) for a in placed.allocations]
        self.released.clear()
        if not keep_released:
            index.version = self.version
