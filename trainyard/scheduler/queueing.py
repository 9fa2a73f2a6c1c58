"""The pending queue, kept ordered incrementally and split into lanes.

A *lane* holds the jobs of one queue that have the same *shape* (per-worker request,
gang size, kind, tolerations), in rank order. Two facts make lanes pay off:

- Within one cycle free capacity only shrinks (until a preemption releases some), so
  once a shape fails to fit, every later job of that shape fails too: the cycle drops
  the whole lane after one try instead of retrying thousands of identical jobs.
- Rank keys that do not depend on time stay valid while jobs wait, so arrivals are
  inserted in O(log n) and nothing is re-sorted per cycle.

The cycle walks lanes with a k-way merge on their heads, which visits jobs in exactly
the global rank order.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator

from sortedcontainers import SortedList

from trainyard.scheduler.ordering import OrderingContext, RankKey
from trainyard.scheduler.policies import Policy
from trainyard.scheduler.types import PendingJob

Shape = tuple[Hashable, ...]
_UNRANKED: tuple = ()  # placeholder while `PendingSet.extend` ranks a batch


def shape_of(job: PendingJob) -> Shape:
    """Jobs with equal shapes are interchangeable for feasibility."""
    return (job.request, job.workers, job.kind, job.tolerations)


class Lane:
    """Jobs of one (queue, shape), ordered by rank key; hashed by identity."""

    __slots__ = ("entries", "number", "queue", "shape", "shape_id")

    def __init__(self, number: int, queue: str, shape: Shape, shape_id: int) -> None:
        self.number = number
        self.queue = queue
        self.shape = shape
        self.shape_id = shape_id  # small int: cheap to hash in per-cycle caches
        self.entries: SortedList = SortedList()  # (rank key, job)

    def __len__(self) -> int:
        return len(self.entries)


class PendingSet:
    """All pending jobs, by id and by lane."""

    def __init__(self, policy_for: Callable[[str], Policy], ctx: OrderingContext) -> None:
        self.policy_for = policy_for
        self.ctx = ctx
        self.lanes: dict[tuple[str, Shape], Lane] = {}
        self.shape_ids: dict[Shape, int] = {}
        self.jobs: dict[str, tuple[RankKey, PendingJob, Lane]] = {}

    def __len__(self) -> int:
        return len(self.jobs)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self.jobs

    def add(self, job: PendingJob) -> None:
        if job.id in self.jobs:
            raise ValueError(f"job {job.id} is already pending")
        shape = shape_of(job)
        lane = self.lanes.get((job.queue, shape))
        if lane is None:
            shape_id = self.shape_ids.setdefault(shape, len(self.shape_ids))
            lane = Lane(len(self.lanes), job.queue, shape, shape_id)
            self.lanes[(job.queue, shape)] = lane
        key = self.policy_for(job.queue).ordering.key(job, self.ctx)
        lane.entries.add((key, job))
        self.jobs[job.id] = (key, job, lane)

    def extend(self, jobs: Iterable[PendingJob]) -> None:
        """Add many jobs; lanes are bulk-built with one sort each when they are new.

        Jobs are grouped by lane first and ranked a lane at a time, so an ordering with
        a batch `keys` scores a whole lane in one call. A duplicate id rejects the whole
        batch and leaves the set as it was."""
        known = self.jobs
        try:
            grouped = self._group(jobs)
        except ValueError:
            for job_id in [j for j, entry in known.items() if entry is _UNRANKED]:
                del known[job_id]
            raise
        for lane, members in grouped.items():
            entries = list(zip(self._keys(lane.queue, members), members, strict=True))
            for key, job in entries:
                known[job.id] = (key, job, lane)
            if len(lane.entries):
                lane.entries.update(entries)
            else:
                lane.entries = SortedList(entries)

    def _group(self, jobs: Iterable[PendingJob]) -> dict[Lane, list[PendingJob]]:
        """Jobs by lane (creating lanes as needed); each id is entered in `self.jobs`
        as `_UNRANKED` so that the set keeps arrival order once ranks are known."""
        grouped: dict[Lane, list[PendingJob]] = {}
        lanes, known = self.lanes, self.jobs
        for job in jobs:
            if job.id in known:
                raise ValueError(f"job {job.id} is already pending")
            queue = job.queue
            shape = (job.request, job.workers, job.kind, job.tolerations)
            lane = lanes.get((queue, shape))
            if lane is None:
                shape_id = self.shape_ids.setdefault(shape, len(self.shape_ids))
                lane = Lane(len(lanes), queue, shape, shape_id)
                lanes[(queue, shape)] = lane
                grouped[lane] = [job]
            else:
                members = grouped.get(lane)
                if members is None:
                    grouped[lane] = [job]
                else:
                    members.append(job)
            known[job.id] = _UNRANKED
        return grouped

    def _keys(self, queue: str, jobs: list[PendingJob]) -> list[RankKey]:
        """Rank keys of `jobs` of one lane (one queue, one shape), in a batch when the
        ordering offers one: `lane_keys` may hoist what a shape fixes out of the loop."""
        ordering = self.policy_for(queue).ordering
        batch = getattr(ordering, "lane_keys", None) or getattr(ordering, "keys", None)
        if batch is not None:
            return batch(jobs, self.ctx)
        key, ctx = ordering.key, self.ctx
        return [key(job, ctx) for job in jobs]

    def remove(self, job_id: str) -> PendingJob:
        key, job, lane = self.jobs.pop(job_id)
        lane.entries.remove((key, job))
        return job

    def get(self, job_id: str) -> PendingJob | None:
        entry = self.jobs.get(job_id)
        return entry[1] if entry else None

    def refresh(self, ctx: OrderingContext) -> None:
        """Recompute every rank key (for time- or usage-dependent orderings).

        Lanes are rebuilt in bulk (one C-level sort each), several times cheaper than
        re-inserting every job."""
        self.ctx = ctx
        known = self.jobs
        for lane in self.lanes.values():
            if not len(lane.entries):
                continue
            jobs = [job for _key, job in lane.entries]
            pairs = list(zip(self._keys(lane.queue, jobs), jobs, strict=True))
            lane.entries = SortedList(pairs)
            known.update((job.id, (key, job, lane)) for key, job in pairs)

    def active_lanes(self) -> Iterator[Lane]:
        return (lane for lane in self.lanes.values() if len(lane))

    def ordered(self) -> list[PendingJob]:
        """All pending jobs in global rank order (for inspection and tests)."""
        return [job for _key, job, _lane in sorted(self.jobs.values(), key=lambda e: e[0])]
