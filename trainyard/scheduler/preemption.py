"""Preemption: evict preemptible lower-priority jobs when nothing else frees room.

Victims are tried lowest priority first, then fewest GPU-seconds lost (work since the
last checkpoint), then id. Releasing stops as soon as the preemptor fits; a second pass
then puts back every released job the preemptor turns out not to need (most valuable
first), so the victim set is minimal. If even all candidates together would not make
room, nothing is evicted: never preempt for a job that would still not fit.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from trainyard.scheduler.capacity import Allocation, ClusterIndex
from trainyard.scheduler.freeing import FreeingWalk
from trainyard.scheduler.placement import Tier, choose_nodes
from trainyard.scheduler.running import Placed, RunningSet
from trainyard.scheduler.types import PendingJob


class PreemptionRank(Protocol):
    """Who may evict whom, for policies whose notion of importance is not `priority`.

    Higher ranks are more important; a job may evict preemptible jobs of strictly lower
    rank. LAS ranks by attained service and the SRTF oracle by remaining work, both of
    which change as jobs run, hence `now`. Policies without one rank by `priority`."""

    def pending(self, job: PendingJob, now: float) -> float: ...

    def running(self, placed: Placed, now: float) -> float: ...

    def admitted_service(self, job: PendingJob, now: float) -> float:
        """The attained service a job starts with when admitted now."""
        ...


@dataclass(slots=True)
class PreemptionResult:
    allocations: list[Allocation]
    victims: list[Placed]


class VictimPool:
    """Preemptible running jobs in victim order, sorted once per cycle on first use.

    A job may be preempted only when it is preemptible and of strictly lower priority
    than the preemptor: `below` returns exactly those, already in the order victims
    are tried (the full `victim_key`), so a preemption attempt neither filters nor
    sorts every running job. Evicted jobs are taken out with `discard`; should jobs
    leave `running` any other way, the pool notices and re-filters itself.
    """

    def __init__(self, running: RunningSet, now: float, rank: PreemptionRank | None = None) -> None:
        self.running = running
        self.now = now
        self.rank = rank
        self._sorted: list[Placed] | None = None
        self._keys: list[tuple[float, float, str]] = []  # victim key of each, same order
        self._priorities: list[float] = []
        self._removals = running.removals
        self._floor: float | None = None  # lowest priority (or rank) of a preemptible job
        # The victim order: `victim_key`, with the policy's rank in place of priority.
        self.key: Callable[[Placed], tuple[float, float, str]]
        if rank is None:
            self.key = lambda p: victim_key(p, now)
        else:
            self.key = lambda p: (rank.running(p, now), p.lost_gpu_seconds(now), p.job_id)

    def below(self, priority: float) -> list[Placed]:
        """Still-running candidates of priority (or rank) < `priority`, in victim order."""
        if self._sorted is None:
            # Most asks find nobody below (a one-class workload under `priority`; under
            # LAS, jobs that have already received more than everything running): answer
            # from the lowest priority or rank without building the victim order. The
            # order, when it is built later, comes from `running` as it is then; the jobs
            # that differ from an order built now are those admitted since, which the
            # caller protects (`try_preempt`'s `protected`), so candidates are the same.
            if self._floor is None:
                self._floor = self._lowest()
            if priority <= self._floor:
                return []
        if self._sorted is None:
            key = self.key
            candidates = [p for p in self.running.by_id.values() if p.preemptible]
            batch = getattr(self.rank, "victim_keys", None)
            keys = batch(candidates, self.now) if batch is not None else map(key, candidates)
            # Keys end with the job id, so they are unique: Placed is never compared.
            pairs = sorted(zip(keys, candidates, strict=False))
            self._sorted = [p for _k, p in pairs]
            self._keys = [k for k, _p in pairs]
            self._priorities = [k[0] for k in self._keys]
            self._removals = self.running.removals
        elif self._removals != self.running.removals:
            self._drop_gone()
        end = bisect.bisect_left(self._priorities, priority)
        return self._sorted[:end]

    def _lowest(self) -> float:
        """The lowest priority (or rank) of a preemptible running job; -inf when the
        rank has no cheap `victim_ranks` (then the order is always built)."""
        candidates = [p for p in self.running.by_id.values() if p.preemptible]
        if self.rank is None:
            return min((p.priority for p in candidates), default=math.inf)
        ranks = getattr(self.rank, "victim_ranks", None)
        if ranks is None:
            return -math.inf
        return min(ranks(candidates, self.now), default=math.inf)

    def discard(self, victims: list[Placed]) -> None:
        """Forget jobs just removed from `running` (by bisection on their key)."""
        if self._sorted is None:
            return
        for victim in victims:
            i = bisect.bisect_left(self._keys, self.key(victim))
            if i < len(self._sorted) and self._sorted[i] is victim:
                del self._sorted[i]
                del self._keys[i]
                del self._priorities[i]
                self._removals += 1

    def _drop_gone(self) -> None:
        by_id = self.running.by_id
        kept = [
            (k, p)
            for k, p in zip(self._keys, self._sorted or (), strict=True)
            if by_id.get(p.job_id) is p
        ]
        self._sorted = [p for _k, p in kept]
        self._keys = [k for k, _p in kept]
        self._priorities = [k[0] for k in self._keys]
        self._removals = self.running.removals


def victim_key(placed: Placed, now: float) -> tuple[int, float, str]:
    """Lowest priority first, then fewest GPU-seconds lost, then id (a total order)."""
    return (placed.priority, placed.lost_gpu_seconds(now), placed.job_id)


def try_preempt(
    index: ClusterIndex,
    running: RunningSet,
    job: PendingJob,
    tiers: Sequence[Tier],
    now: float,
    protected: frozenset[str] | set[str] = frozenset(),
    pool: VictimPool | None = None,
    level: float | None = None,
) -> PreemptionResult | None:
    """Find a minimal victim set, evict it and place `job`; or change nothing.

    `protected` jobs (those admitted earlier in the same cycle) are never victims: a
    cycle must not undo its own decisions. `level` is the job's rank when the pool
    ranks by a `PreemptionRank` (default: its priority)."""
    walk = FreeingWalk(index, tiers, job.request, job.workers, job.kind)
    pool = pool or VictimPool(running, now)
    everywhere = len(walk.eligible) == len(index.pools)  # then every victim touches the job
    candidates = [
        p
        for p in pool.below(job.priority if level is None else level)
        if p.job_id not in protected and (everywhere or walk.touches(p))
    ]
    if not candidates:
        return None  # `candidates` is already in victim order (see VictimPool)
    if not _room_after_all(index, walk, candidates):
        return None  # the walk below would release everything, fail and roll back
    chosen = None
    for placed in candidates:
        chosen = walk.release(placed)
        if chosen is not None:
            break
    if chosen is None:
        walk.rollback()
        return None
    released = list(walk.released)
    needed: list[Placed] = [released[-1]]
    for placed in reversed(released[:-1]):
        placed.allocations = [index.take(a.node, a.request, a.count) for a in placed.allocations]
        fit = _fits(index, tiers, job)
        if fit is None:
            index.release_all(placed.allocations)
            needed.append(placed)
        else:
            chosen = fit
    walk.released.clear()
    allocations = [index.take(node, job.request, count) for node, count in chosen]
    for victim in needed:
        running.remove(victim.job_id)
    pool.discard(needed)
    needed.sort(key=pool.key)
    return PreemptionResult(allocations, needed)


def _room_after_all(index: ClusterIndex, walk: FreeingWalk, candidates: list[Placed]) -> bool:
    """Could releasing every candidate make room for the job? False only when the walk
    surely fails, so skipping it decides exactly the same, without releasing and
    restoring dozens of jobs (what most failed attempts of LAS and SRTF cost).

    The bound is on whole accelerator units, which is what the walk itself tests before
    it tries a placement (`FreeingWalk.release`): a one-worker job needs a touched node
    with room for one worker, a gang needs room for all its workers summed over the
    eligible nodes. Units only grow as jobs are released, so the room with everything
    released bounds the room at every step. A released GPU share may give back a whole
    GPU: each distinct shared slot counts as one (an upper bound). Requests without
    whole units (CPU-only, GPU shares) are not bounded here."""
    units = walk.units
    if not units:
        return True
    node_pool, eligible, free_units = index.node_pool, walk.eligible, index.free_units
    extra: dict[int, int] = {}
    for placed in candidates:
        for a in placed.allocations:
            node = a.node
            if node_pool[node].id not in eligible:
                continue
            r = a.request
            freed = (r.gpus or r.tpu_chips) * a.count + len(set(a.share_slots))
            if freed:
                extra[node] = extra.get(node, 0) + freed
    if walk.workers == 1:
        return any((free_units[n] + got) // units >= 1 for n, got in extra.items())
    total = walk.total
    for node, got in extra.items():
        free = free_units[node]
        total += (free + got) // units - free // units
    return total >= walk.workers


def _fits(
    index: ClusterIndex, tiers: Sequence[Tier], job: PendingJob
) -> list[tuple[int, int]] | None:
    for tier in tiers:
        chosen = choose_nodes(index, tier, job.request, job.workers, job.kind)
        if chosen is not None:
            return chosen
    return None
