"""Least attained service (Tiresias' 2D-LAS): favour jobs that have received the least.

Tiresias (NSDI'19) schedules without knowing runtimes: a job's priority is the GPU
service it has already received (GPUs x time run, the "2D" of its name), so new and
short jobs go first and long ones sink, which is close to shortest-job-first on the
heavy-tailed runtimes of deep-learning clusters. Service is discretised into a few
queues by thresholds (a job moves down when it crosses one) and each queue is FIFO by
submit time, so small differences in service never cause preemption churn.

Preemption goes through the same checkpoint-aware code as `priority`: a waiting job may
evict running jobs of a strictly lower queue (more service received). Starvation guard:
a job that has waited longer than `starvation_seconds` since it last entered the queue
is promoted to the top queue, and when it starts its attained service is counted from
zero again (as Tiresias resets a promoted job), so it is not evicted straight away.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from trainyard.scheduler.ordering import OrderingContext, RankKey
from trainyard.scheduler.running import Placed
from trainyard.scheduler.types import PendingJob

# GPU-seconds: 1, 10 and 100 GPU-hours; starvation after 4 days waiting. Chosen by
# replaying the Philly trace (BENCHMARKS.md).
DEFAULT_THRESHOLDS: tuple[float, ...] = (3600.0, 36_000.0, 360_000.0)
DEFAULT_STARVATION_SECONDS = 96 * 3600.0


@dataclass(frozen=True, slots=True)
class LasSettings:
    """Queue thresholds in attained GPU-seconds (ascending) and the starvation bound."""

    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    starvation_seconds: float | None = DEFAULT_STARVATION_SECONDS  # None: no promotion

    def __post_init__(self) -> None:
        if list(self.thresholds) != sorted(self.thresholds) or any(t <= 0 for t in self.thresholds):
            raise ValueError("LAS thresholds must be positive and ascending (GPU-seconds)")
        if self.starvation_seconds is not None and self.starvation_seconds <= 0:
            raise ValueError("the LAS starvation bound must be > 0 seconds (or None)")

    def level(self, attained_gpu_seconds: float) -> int:
        """0 for the top queue: the number of thresholds the service has reached."""
        return bisect.bisect_right(self.thresholds, attained_gpu_seconds)

    def starving(self, job: PendingJob, now: float) -> bool:
        bound = self.starvation_seconds
        since = job.submit_time if job.queued_since is None else job.queued_since
        return bound is not None and now - since >= bound

    def pending_level(self, job: PendingJob, now: float) -> int:
        return 0 if self.starving(job, now) else self.level(job.attained_gpu_seconds)


@dataclass(frozen=True, slots=True)
class LasOrder:
    """Queue level, then submit time (FIFO within a level), then id.

    Promotion depends on the clock, so keys are recomputed every `refresh_interval`."""

    settings: LasSettings = LasSettings()
    name: str = "las"
    refresh_interval: float | None = 300.0

    def key(self, job: PendingJob, ctx: OrderingContext) -> RankKey:
        return (float(self.settings.pending_level(job, ctx.now)), job.submit_time, job.id)

    def keys(self, jobs: list[PendingJob], ctx: OrderingContext) -> list[RankKey]:
        level, now = self.settings.pending_level, ctx.now
        return [(float(level(job, now)), job.submit_time, job.id) for job in jobs]


@dataclass(frozen=True, slots=True)
class LasRank:
    """Preemption rank: minus the queue level, so less service outranks more."""

    settings: LasSettings = LasSettings()

    def pending(self, job: PendingJob, now: float) -> float:
        return -float(self.settings.pending_level(job, now))

    def running(self, placed: Placed, now: float) -> float:
        # placed.attained_gpu_seconds(now), inlined: every cycle ranks every running job.
        ran = now - placed.start_time
        attained = placed.attained_before + placed.gpus * (ran if ran > 0.0 else 0.0)
        return -float(bisect.bisect_right(self.settings.thresholds, attained))

    def victim_keys(self, placed: list[Placed], now: float) -> list[tuple[float, float, str]]:
        """(rank, GPU-seconds lost, id) of each, as `VictimPool.key`, in one pass."""
        thresholds, find = self.settings.thresholds, bisect.bisect_right
        out: list[tuple[float, float, str]] = []
        append = out.append
        for p in placed:
            start = p.start_time
            gpus = p.gpus
            ran = now - start
            if not ran > 0.0:  # exactly `ran if ran > 0.0 else 0.0`
                ran = 0.0
            checkpoint = p.last_checkpoint
            lost = now - (start if checkpoint is None else checkpoint)
            if not lost > 0.0:
                lost = 0.0
            level = find(thresholds, p.attained_before + gpus * ran)
            append((-float(level), gpus * lost, p.job_id))
        return out

    def victim_ranks(self, placed: list[Placed], now: float) -> list[float]:
        """`running` of each (the first element of `victim_keys`), without the rest: a
        cheap floor lets most asks skip building the victim order."""
        thresholds, find = self.settings.thresholds, bisect.bisect_right
        out: list[float] = []
        append = out.append
        for p in placed:
            ran = now - p.start_time
            if not ran > 0.0:
                ran = 0.0
            append(-float(find(thresholds, p.attained_before + p.gpus * ran)))
        return out

    def admitted_service(self, job: PendingJob, now: float) -> float:
        """Service counted from here on: a promoted job starts again from zero."""
        return 0.0 if self.settings.starving(job, now) else job.attained_gpu_seconds
