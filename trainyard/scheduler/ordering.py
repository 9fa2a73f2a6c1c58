"""Queue ordering parts: how a policy ranks the pending jobs of a queue.

A rank key is a tuple compared ascending (smaller runs first), always ending with the
submit time and the job id so that ties are broken the same way every time (as Volcano
falls back to creation time then uid). Keys of different queues are comparable, so a
cycle can interleave queues by one merged order.

Orderings whose key does not depend on `now` (`refresh_interval is None`) let callers
keep the queue sorted incrementally: linear aging has that property, because
priority + rate * (now - submit) ranks jobs exactly as priority - rate * submit does.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from trainyard.scheduler.types import PendingJob

RankKey = tuple[float, float, str]


@dataclass(frozen=True, slots=True)
class OrderingContext:
    """What a time- or usage-dependent ordering may look at."""

    now: float
    total_gpus: int = 0
    queue_gpu_share: Mapping[str, float] = field(default_factory=dict)


class QueueOrdering(Protocol):
    """Queue-sort extension point."""

    name: str
    refresh_interval: float | None  # None: keys never change while a job waits

    def key(self, job: PendingJob, ctx: OrderingContext) -> RankKey: ...


class StableLaneOrdering(QueueOrdering, Protocol):
    """Optional refinement: keys change with the context (age, usage), but within one
    lane and one `stable_group` the order is `stable_key` order at every context, as long
    as `stable_lanes` is True. Lets a refresh cost nothing: see `PendingSet`."""

    @property
    def stable_lanes(self) -> bool: ...

    def stable_group(self, job: PendingJob) -> Hashable: ...

    def stable_key(self, job: PendingJob) -> tuple[float, str]: ...


@dataclass(frozen=True, slots=True)
class FifoOrder:
    """Submit time, then id."""

    name: str = "fifo"
    refresh_interval: float | None = None

    def key(self, job: PendingJob, ctx: OrderingContext) -> RankKey:
        return (0.0, job.submit_time, job.id)

    def keys(self, jobs: list[PendingJob], ctx: OrderingContext) -> list[RankKey]:
        """`key` for many jobs at once (a queue of 10,000 is ranked per cycle)."""
        return [(0.0, job.submit_time, job.id) for job in jobs]


@dataclass(frozen=True, slots=True)
class PriorityAgingOrder:
    """Priority class first, then age; `aging_per_hour` priority points per hour waited.

    Aging is linear and unbounded so that a low-priority job always overtakes eventually
    (no starvation), and so that the order never needs recomputing (see module doc).
    """

    aging_per_hour: float = 1.0
    name: str = "priority"
    refresh_interval: float | None = None

    def key(self, job: PendingJob, ctx: OrderingContext) -> RankKey:
        effective = job.priority - self.aging_per_hour * job.submit_time / 3600.0
        return (-effective, job.submit_time, job.id)

    def keys(self, jobs: list[PendingJob], ctx: OrderingContext) -> list[RankKey]:
        """`key` for many jobs at once: the same arithmetic, without a call per job."""
        rate = self.aging_per_hour
        return [
            (-(job.priority - rate * job.submit_time / 3600.0), job.submit_time, job.id)
            for job in jobs
        ]


@dataclass(frozen=True, slots=True)
class MultifactorWeights:
    """Slurm-style weights; each factor is normalised to 0-1 before weighting."""

    priority_class: float = 1000.0
    age: float = 100.0
    job_size: float = 50.0
    queue_usage: float = 200.0
    priority_scale: float = 1000.0  # a priority of this value gets the full class factor
    max_age_seconds: float = 7 * 24 * 3600.0  # age factor saturates here, as PriorityMaxAge


@dataclass(frozen=True, slots=True)
class MultifactorOrder:
    """Weighted sum of class, age, size and (inverse) queue usage, like Slurm multifactor.

    The age and usage factors change with time, so callers recompute keys every
    `refresh_interval` seconds (Slurm's PriorityCalcPeriod is 5 minutes).
    """

    weights: MultifactorWeights = field(default_factory=MultifactorWeights)
    name: str = "multifactor"
    refresh_interval: float | None = 300.0

    def score(self, job: PendingJob, ctx: OrderingContext) -> float:
        w = self.weights
        cls = min(max(job.priority / w.priority_scale, 0.0), 1.0)
        age = min(max((ctx.now - job.submit_time) / w.max_age_seconds, 0.0), 1.0)
        gpus = job.request.gpu_milli * job.workers / 1000.0
        size = min(gpus / ctx.total_gpus, 1.0) if ctx.total_gpus else 0.0
        usage = 1.0 - min(max(ctx.queue_gpu_share.get(job.queue, 0.0), 0.0), 1.0)
        return w.priority_class * cls + w.age * age + w.job_size * size + w.queue_usage * usage

    def key(self, job: PendingJob, ctx: OrderingContext) -> RankKey:
        return (-self.score(job, ctx), job.submit_time, job.id)

    def keys(self, jobs: list[PendingJob], ctx: OrderingContext) -> list[RankKey]:
        """`key` for many jobs at once: the same arithmetic as `score`, hoisted out of
        the loop (weights in locals, the usage term once per queue), because every
        cycle ranks the whole queue. Results are bit-identical to `key`."""
        w = self.weights
        now, total = ctx.now, ctx.total_gpus
        w_class, w_age, w_size = w.priority_class, w.age, w.job_size
        scale, max_age = w.priority_scale, w.max_age_seconds
        usage_terms: dict[str, float] = {}
        out: list[RankKey] = []
        for job in jobs:
            cls = job.priority / scale
            cls = 0.0 if cls < 0.0 else 1.0 if cls > 1.0 else cls
            age = (now - job.submit_time) / max_age
            age = 0.0 if age < 0.0 else 1.0 if age > 1.0 else age
            request = job.request
            milli = request.gpus * 1000 + request.gpu_share_milli  # request.gpu_milli
            size = milli * job.workers / 1000.0 / total if total else 0.0
            size = 1.0 if size > 1.0 else size
            usage = usage_terms.get(job.queue)
            if usage is None:
                usage = usage_terms[job.queue] = self._usage_term(job.queue, ctx)
            score = w_class * cls + w_age * age + w_size * size + usage
            out.append((-score, job.submit_time, job.id))
        return out

    def lane_keys(self, jobs: list[PendingJob], ctx: OrderingContext) -> list[RankKey]:
        """`keys` for jobs of ONE lane (same queue, request and gang size), as the pending
        set ranks them: the size and usage terms are the lane's, and the class term is
        one per priority value, so each job costs its age term only. Same arithmetic in
        the same order as `score`, so the keys are bit-identical (tested)."""
        if not jobs:
            return []
        w = self.weights
        now, total = ctx.now, ctx.total_gpus
        w_class, w_age, scale, max_age = (
            w.priority_class,
            w.age,
            w.priority_scale,
            w.max_age_seconds,
        )
        first = jobs[0]
        request = first.request
        milli = request.gpus * 1000 + request.gpu_share_milli
        size = milli * first.workers / 1000.0 / total if total else 0.0
        size_term = w.job_size * (1.0 if size > 1.0 else size)
        usage = self._usage_term(first.queue, ctx)
        class_terms: dict[int, float] = {}
        out: list[RankKey] = []
        append = out.append
        for job in jobs:
            priority = job.priority
            class_term = class_terms.get(priority)
            if class_term is None:
                cls = priority / scale
                cls = 0.0 if cls < 0.0 else 1.0 if cls > 1.0 else cls
                class_term = class_terms[priority] = w_class * cls
            submit = job.submit_time
            age = (now - submit) / max_age
            age = 0.0 if age < 0.0 else 1.0 if age > 1.0 else age
            append((-(class_term + w_age * age + size_term + usage), submit, job.id))
        return out

    @property
    def stable_lanes(self) -> bool:
        """True when, within one lane and one priority value, the rank order is
        (submit time, id) at EVERY context, so the pending set may keep such groups
        sorted once and compute keys only for the jobs a cycle visits (see queueing).

        Why it holds: in one lane the size and usage terms are equal and so is the class
        term for one priority, so jobs differ only in their age term. With a non-negative
        age weight and a positive max age, the score is a chain of correctly rounded
        IEEE operations each monotone in the submit time (now - submit, / max_age, the
        clamp, x weight, + a term equal for all), so an earlier submit never scores
        lower; equal scores fall back to the key's submit time, then id."""
        w = self.weights
        return w.age >= 0.0 and w.max_age_seconds > 0.0

    @staticmethod
    def stable_group(job: PendingJob) -> int:
        """The group within a lane whose order never changes (see `stable_lanes`)."""
        return job.priority

    @staticmethod
    def stable_key(job: PendingJob) -> tuple[float, str]:
        """That order: submit time, then id (as the rank key breaks ties)."""
        return (job.submit_time, job.id)

    def _usage_term(self, queue: str, ctx: OrderingContext) -> float:
        share = ctx.queue_gpu_share.get(queue, 0.0)
        share = 0.0 if share < 0.0 else 1.0 if share > 1.0 else share
        return self.weights.queue_usage * (1.0 - share)
