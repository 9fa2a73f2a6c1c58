"""Shortest-first orderings: by predicted work (`predicted`) or by the truth (oracles).

Helios' QSSF (SC'21) orders jobs by their predicted GPU time (runtime x GPUs) and
reports mean JCT close to the shortest-job-first oracle on Philly. The same ordering
with the true remaining time is the oracle baseline (`sjf-oracle`, and `srtf-oracle`
with preemption by remaining work). Which of the two a policy is depends only on what
the caller puts in `PendingJob.estimated_runtime`: the simulator fills it with the truth
for oracle policies and with the learned estimate otherwise.

Aging guard: the key is size - rate x time waited, which ranks exactly like
size + rate x submit_time, so keys never change while jobs wait (no refresh), yet any
job is eventually overtaken by nothing: a long job waiting long enough goes first.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainyard.scheduler.ordering import OrderingContext, RankKey
from trainyard.scheduler.running import Placed
from trainyard.scheduler.types import PendingJob

UNKNOWN_RUNTIME = 1.0e12  # seconds: a job with neither estimate nor limit sorts last


def expected_runtime(job: PendingJob) -> float:
    """The estimate, else the user's runtime limit, else 'very long'."""
    if job.estimated_runtime is not None:
        return job.estimated_runtime
    if job.runtime_limit is not None:
        return job.runtime_limit
    return UNKNOWN_RUNTIME


def job_gpus(job: PendingJob) -> float:
    return job.request.gpu_milli * job.workers / 1000.0


@dataclass(frozen=True, slots=True)
class ShortestFirstOrder:
    """Smallest expected work first; work is GPU-seconds (`by_gpu_time`) or seconds.

    `aging` is in work units per second waited (GPU-seconds per second with
    `by_gpu_time`); 0 disables the guard (the oracles)."""

    name: str = "shortest"
    by_gpu_time: bool = True
    aging: float = 0.0
    refresh_interval: float | None = None

    def size(self, job: PendingJob) -> float:
        runtime = expected_runtime(job)
        if self.by_gpu_time:
            return runtime * max(job_gpus(job), 1.0e-3)
        return runtime

    def key(self, job: PendingJob, ctx: OrderingContext) -> RankKey:
        return (self.size(job) + self.aging * job.submit_time, job.submit_time, job.id)

    def keys(self, jobs: list[PendingJob], ctx: OrderingContext) -> list[RankKey]:
        size, aging = self.size, self.aging
        return [(size(job) + aging * job.submit_time, job.submit_time, job.id) for job in jobs]


@dataclass(frozen=True, slots=True)
class RemainingWorkRank:
    """Preemption rank for SRTF: minus the remaining work, so less work outranks more."""

    by_gpu_time: bool = True

    def pending(self, job: PendingJob, now: float) -> float:
        runtime = expected_runtime(job)
        return -(runtime * max(job_gpus(job), 1.0e-3) if self.by_gpu_time else runtime)

    def running(self, placed: Placed, now: float) -> float:
        end = placed.estimated_end if placed.estimated_end is not None else placed.expected_end
        left = UNKNOWN_RUNTIME if end is None else max(end - now, 0.0)
        return -(left * max(placed.gpus, 1.0e-3) if self.by_gpu_time else left)

    def victim_keys(self, placed: list[Placed], now: float) -> list[tuple[float, float, str]]:
        """(rank, GPU-seconds lost, id) of each, as `VictimPool.key`: the ranks from
        `victim_ranks` (one copy of that arithmetic), the loss beside them."""
        out: list[tuple[float, float, str]] = []
        append = out.append
        for p, rank in zip(placed, self.victim_ranks(placed, now), strict=True):
            since = p.last_checkpoint if p.last_checkpoint is not None else p.start_time
            lost = now - since
            append((rank, p.gpus * (lost if lost > 0.0 else 0.0), p.job_id))
        return out

    def victim_ranks(self, placed: list[Placed], now: float) -> list[float]:
        """`running` of each (the first element of `victim_keys`), without the rest: a
        cheap floor lets most asks skip building the victim order. `running` inlined
        (every cycle that tries a preemption ranks every running job): `if a < b: a = b`
        is exactly what `max(a, b)` returns, signed zeros included."""
        out: list[float] = []
        append, by_gpu_time = out.append, self.by_gpu_time
        for p in placed:
            end = p.estimated_end if p.estimated_end is not None else p.expected_end
            if end is None:
                left = UNKNOWN_RUNTIME
            else:
                left = end - now
                if left < 0.0:
                    left = 0.0
            if by_gpu_time:
                gpus = p.gpus
                if gpus < 1.0e-3:
                    gpus = 1.0e-3
                append(-(left * gpus))
            else:
                append(-left)
        return out

    def admitted_service(self, job: PendingJob, now: float) -> float:
        return job.attained_gpu_seconds
