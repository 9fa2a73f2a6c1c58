"""The pending queue, kept ordered incrementally and split into lanes.

A *lane* holds the jobs of one queue that have the same *shape* (per-worker request,
gang size, kind, tolerations), in rank order. Two facts make lanes pay off:

- Within one cycle free capacity only shrinks (until a preemption releases some), so
  once a shape fails to fit, every later job of that shape fails too: the cycle drops
  the whole lane after one try instead of retrying thousands of identical jobs.
- Rank keys that do not depend on time stay valid while jobs wait, so arrivals are
  inserted in O(log n) and nothing is re-sorted per cycle.
- Keys that DO depend on time (multifactor's age and usage) may still leave the order
  within a lane unchanged: a `StableLaneOrdering` says for which jobs. Such a lane keeps
  one group per `stable_group`, each sorted by its `stable_key` once, and rank keys are
  computed only for the jobs a cycle actually visits (`ranked`), from the context of the
  last `refresh`. A refresh then costs nothing instead of re-ranking every pending job,
  and a cycle, which drops a lane at its first failure, ranks a handful of jobs per lane.
  The walk is the same: the keys are the ones a full re-rank would have stored (each
  job's `key` in the set's context) and the groups, each in rank order, are merged by
  them, so jobs come out in exactly the order of the fully re-ranked lane.

The cycle walks lanes with a k-way merge on their heads, which visits jobs in exactly
the global rank order.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable, Iterable, Iterator

from sortedcontainers import SortedList

from trainyard.scheduler.ordering import OrderingContext, RankKey, StableLaneOrdering
from trainyard.scheduler.policies import Policy
from trainyard.scheduler.types import PendingJob

Shape = tuple[Hashable, ...]
_UNRANKED: tuple = ()  # placeholder while `PendingSet.extend` ranks a batch


def shape_of(job: PendingJob) -> Shape:
    """Jobs with equal shapes are interchangeable for feasibility."""
    return (job.request, job.workers, job.kind, job.tolerations)


class Lane:
    """Jobs of one (queue, shape), ordered by rank key; hashed by identity.

    `entries` holds (rank key, job) pairs; for a stable ordering (`stable` set) the jobs
    are instead in `groups`, each a sorted list of (stable key, job), and `entries` is
    unused. `count` is the number of jobs either way."""

    __slots__ = (
        "count",
        "entries",
        "groups",
        "number",
        "queue",
        "shape",
        "shape_id",
        "stable",
        "user",
    )

    def __init__(
        self,
        number: int,
        queue: str,
        shape: Shape,
        shape_id: int,
        stable: StableLaneOrdering | None = None,
        user: str | None = None,
    ) -> None:
        self.number = number
        self.queue = queue
        self.user = user  # set only in a queue whose lanes are per user (`user_lanes`)
        self.shape = shape
        self.shape_id = shape_id  # small int: cheap to hash in per-cycle caches
        self.entries: SortedList = SortedList()  # (rank key, job)
        self.stable = stable
        self.groups: dict[Hashable, SortedList] = {}  # stable group -> (stable key, job)
        self.count = 0

    def __len__(self) -> int:
        return self.count


class PendingSet:
    """All pending jobs, by id and by lane.

    `jobs` maps an id to (the key its lane sorts it by, job, lane): the rank key, or the
    stable key in a stable lane (`rank_key` gives the rank key of any job). In the
    queues of `user_lanes` a lane holds one user's jobs (lane key (queue, shape, user)),
    so that the cycle can order that queue's users (quota `order_users_by_usage`)."""

    def __init__(
        self,
        policy_for: Callable[[str], Policy],
        ctx: OrderingContext,
        user_lanes: frozenset[str] = frozenset(),
    ) -> None:
        self.policy_for = policy_for
        self.ctx = ctx
        self.user_lanes = user_lanes
        self.lanes: dict[tuple, Lane] = {}
        self.shape_ids: dict[Shape, int] = {}
        self.jobs: dict[str, tuple[tuple, PendingJob, Lane]] = {}
        self._stable: dict[str, StableLaneOrdering | None] = {}  # queue -> its stable ordering

    def __len__(self) -> int:
        return len(self.jobs)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self.jobs

    def _stable_ordering(self, queue: str) -> StableLaneOrdering | None:
        try:
            return self._stable[queue]
        except KeyError:
            ordering = self.policy_for(queue).ordering
            stable = ordering if getattr(ordering, "stable_lanes", False) else None
            self._stable[queue] = stable  # type: ignore[assignment]
            return stable  # type: ignore[return-value]

    def _lane_key(self, job: PendingJob, shape: Shape) -> tuple:
        queue = job.queue
        if queue in self.user_lanes:
            return (queue, shape, job.user)
        return (queue, shape)

    def _lane(self, key: tuple) -> Lane:
        lane = self.lanes.get(key)
        if lane is None:
            queue, shape = key[0], key[1]
            shape_id = self.shape_ids.setdefault(shape, len(self.shape_ids))
            lane = Lane(
                len(self.lanes),
                queue,
                shape,
                shape_id,
                self._stable_ordering(queue),
                key[2] if len(key) > 2 else None,
            )
            self.lanes[key] = lane
        return lane

    def add(self, job: PendingJob) -> None:
        if job.id in self.jobs:
            raise ValueError(f"job {job.id} is already pending")
        lane = self._lane(self._lane_key(job, shape_of(job)))
        stable = lane.stable
        if stable is not None:
            key: tuple = stable.stable_key(job)
            group = stable.stable_group(job)
            members = lane.groups.get(group)
            if members is None:
                members = lane.groups[group] = SortedList()
            members.add((key, job))
        else:
            key = self.policy_for(job.queue).ordering.key(job, self.ctx)
            lane.entries.add((key, job))
        lane.count += 1
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
            lane.count += len(members)
            if lane.stable is not None:
                self._extend_stable(lane, members)
                continue
            entries = list(zip(self._keys(lane.queue, members), members, strict=True))
            for key, job in entries:
                known[job.id] = (key, job, lane)
            if len(lane.entries):
                lane.entries.update(entries)
            else:
                lane.entries = SortedList(entries)

    def _extend_stable(self, lane: Lane, members: list[PendingJob]) -> None:
        stable, known = lane.stable, self.jobs
        assert stable is not None
        by_group: dict[Hashable, list[tuple[tuple, PendingJob]]] = {}
        for job in members:
            key = stable.stable_key(job)
            known[job.id] = (key, job, lane)
            by_group.setdefault(stable.stable_group(job), []).append((key, job))
        for group, entries in by_group.items():
            sorted_list = lane.groups.get(group)
            if sorted_list is None:
                lane.groups[group] = SortedList(entries)
            else:
                sorted_list.update(entries)

    def _group(self, jobs: Iterable[PendingJob]) -> dict[Lane, list[PendingJob]]:
        """Jobs by lane (creating lanes as needed); each id is entered in `self.jobs`
        as `_UNRANKED` so that the set keeps arrival order once ranks are known."""
        grouped: dict[Lane, list[PendingJob]] = {}
        lanes, known, by_user = self.lanes, self.jobs, self.user_lanes
        for job in jobs:
            if job.id in known:
                raise ValueError(f"job {job.id} is already pending")
            queue = job.queue
            shape = (job.request, job.workers, job.kind, job.tolerations)
            key = (queue, shape, job.user) if by_user and queue in by_user else (queue, shape)
            lane = lanes.get(key)
            if lane is None:
                lane = self._lane(key)
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
        stable = lane.stable
        if stable is not None:
            lane.groups[stable.stable_group(job)].remove((key, job))
        else:
            lane.entries.remove((key, job))
        lane.count -= 1
        return job

    def get(self, job_id: str) -> PendingJob | None:
        entry = self.jobs.get(job_id)
        return entry[1] if entry else None

    def rank_key(self, job_id: str) -> RankKey:
        """The job's rank key in the current context."""
        key, job, lane = self.jobs[job_id]
        if lane.stable is None:
            return key  # type: ignore[return-value]
        return lane.stable.key(job, self.ctx)

    def refresh(self, ctx: OrderingContext) -> None:
        """Recompute every rank key (for time- or usage-dependent orderings).

        Lanes are rebuilt in bulk (one C-level sort each), several times cheaper than
        re-inserting every job. Stable lanes need nothing: their keys are computed from
        `ctx` when a cycle walks them, and their groups' order does not change."""
        self.ctx = ctx
        known = self.jobs
        for lane in self.lanes.values():
            if not lane.count or lane.stable is not None:
                continue
            jobs = [job for _key, job in lane.entries]
            pairs = list(zip(self._keys(lane.queue, jobs), jobs, strict=True))
            lane.entries = SortedList(pairs)
            known.update((job.id, (key, job, lane)) for key, job in pairs)

    def ranked(self, lane: Lane) -> Iterator[tuple[RankKey, PendingJob]]:
        """The lane's (rank key, job) pairs in rank order, computed as they are consumed.

        A stable lane's groups are each in rank order (`StableLaneOrdering`), so merging
        them by the keys of the current context yields exactly the order of the lane
        fully re-ranked; keys end with the job id, so the merge never compares jobs."""
        stable = lane.stable
        if stable is None:
            return iter(lane.entries)
        runs = [_keyed(stable, group, self.ctx) for group in lane.groups.values() if group]
        if len(runs) == 1:
            return runs[0]
        return heapq.merge(*runs)

    def active_lanes(self) -> Iterator[Lane]:
        return (lane for lane in self.lanes.values() if lane.count)

    def ordered(self) -> list[PendingJob]:
        """All pending jobs in global rank order (for inspection and tests)."""
        keyed = [(self.rank_key(job_id), job) for job_id, (_k, job, _l) in self.jobs.items()]
        return [job for _key, job in sorted(keyed, key=lambda e: e[0])]


def _keyed(
    ordering: StableLaneOrdering, group: SortedList, ctx: OrderingContext
) -> Iterator[tuple[RankKey, PendingJob]]:
    key = ordering.key
    for _stable_key, job in group:
        yield key(job, ctx), job
