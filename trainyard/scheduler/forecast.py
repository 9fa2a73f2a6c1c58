"""Start-time forecasts: when will each pending job start, if nothing new arrives?

The answer is a forward simulation of the current state through the same core the
control plane runs: running jobs end after their estimated remaining time, pending jobs
run for their estimated runtime once admitted, and every event (an end) triggers one
scheduling cycle under each queue's own policy, preemptions included. That is how
Slurm's backfill computes its expected start times, here with learned runtimes instead
of user limits. It ignores future arrivals (which can only delay jobs under priority
orderings), so it is an estimate, refreshed every few cycles by its callers.

Pure: snapshot and estimates in, {job id: start time} out; no clock, no I/O.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace

from trainyard.scheduler.api import build_running, ordering_context
from trainyard.scheduler.capacity import ClusterIndex
from trainyard.scheduler.cycle import TierCache, run_cycle
from trainyard.scheduler.policies import Policy
from trainyard.scheduler.queueing import PendingSet
from trainyard.scheduler.reservation import ReservationCache
from trainyard.scheduler.types import ClusterSnapshot, PendingJob, RunningJob

DEFAULT_RUNTIME = 3600.0  # seconds, for a job with neither an estimate nor a limit


@dataclass(frozen=True, slots=True)
class Forecast:
    """Expected start per pending job; a job absent from `starts` is not expected to
    start within the horizon (or never fits)."""

    starts: dict[str, float]
    cycles: int
    horizon_reached: bool


def _runtime(job: PendingJob) -> float:
    if job.estimated_runtime is not None:
        return job.estimated_runtime
    if job.runtime_limit is not None:
        return job.runtime_limit
    return DEFAULT_RUNTIME


def forecast_starts(
    snapshot: ClusterSnapshot,
    now: float,
    policy_for: Callable[[str], Policy],
    *,
    targets: Collection[str] | None = None,
    restart_cost: float = 0.0,
    horizon: float = math.inf,
    max_cycles: int = 1_000_000,
) -> Forecast:
    """Simulate forward from `snapshot` at `now` until every job in `targets` (default:
    every pending job) has started, nothing more can happen, or `horizon` seconds pass.

    A running job ends at its `estimated_end` (else `expected_end`, else in an hour); one
    already past it is expected to run as long again as it has (see `estimator.remaining`).
    A job preempted in the forecast waits again for its remaining time plus `restart_cost`.
    """
    index = ClusterIndex(snapshot.nodes, snapshot.rack_label, defer_buckets=True)
    running = build_running(index, snapshot.running)
    index.build_buckets()
    pending = PendingSet(policy_for, ordering_context(index, running, now))
    pending.extend(snapshot.pending)
    jobs: dict[str, PendingJob] = {job.id: job for job in snapshot.pending}
    wanted = set(jobs) if targets is None else {t for t in targets if t in jobs}
    for job in snapshot.running:
        jobs.setdefault(job.id, _as_pending(job))
    ends: list[tuple[float, int, str, int]] = []
    epoch: dict[str, int] = {}
    for seq, job in enumerate(snapshot.running):
        end = job.estimated_end if job.estimated_end is not None else job.expected_end
        if end is None:
            end = now + DEFAULT_RUNTIME
        elif end <= now:
            end = now + max(now - job.start_time, 60.0)
        ends.append((end, seq, job.id, 0))
    heapq.heapify(ends)
    seq = len(ends)
    starts: dict[str, float] = {}
    tiers = TierCache(index)
    reservations = ReservationCache(index, running)
    intervals = [policy_for(job.queue).ordering.refresh_interval for job in snapshot.pending]
    interval = min((r for r in intervals if r is not None), default=None)
    next_refresh = now + interval if interval is not None else math.inf
    t, cycles = now, 0
    while wanted and cycles < max_cycles:
        if t >= next_refresh:
            pending.refresh(ordering_context(index, running, t))
            next_refresh = t + interval  # type: ignore[operator]
        out = run_cycle(
            index, pending, running, policy_for, t, tiers_for=tiers, reservations=reservations
        )
        cycles += 1
        for admitted in out.admitted:
            for victim in admitted.victims:
                epoch[victim.job_id] = epoch.get(victim.job_id, 0) + 1  # its end is void
                left = _left(victim.estimated_end, victim.expected_end, t) + restart_cost
                pending.add(
                    replace(
                        jobs[victim.job_id],
                        estimated_runtime=left,
                        queued_since=t,
                        attained_gpu_seconds=victim.attained_gpu_seconds(t),
                    )
                )
            job = admitted.job
            starts.setdefault(job.id, t)
            wanted.discard(job.id)
            mark = epoch[job.id] = epoch.get(job.id, 0) + 1
            seq += 1
            heapq.heappush(ends, (t + _runtime(job), seq, job.id, mark))
        if not wanted:
            break
        released = False
        while ends and not released:  # advance to the next current end time
            end = ends[0][0]
            if end - now > horizon:
                return Forecast(starts, cycles, True)
            while ends and ends[0][0] <= end:
                _end, _seq, job_id, mark = heapq.heappop(ends)
                if epoch.get(job_id, 0) == mark and job_id in running.by_id:
                    index.release_all(running.remove(job_id).allocations)
                    released = True
            t = max(t, end)
        if not released:
            break  # nothing left to end: what is still pending never fits
    return Forecast(starts, cycles, False)


def _left(estimated_end: float | None, expected_end: float | None, t: float) -> float:
    end = estimated_end if estimated_end is not None else expected_end
    return max(end - t, 1.0) if end is not None else DEFAULT_RUNTIME


def _as_pending(job: RunningJob) -> PendingJob:
    """A running job as it would wait again if a forecast preemption evicted it."""
    return PendingJob(
        job.id,
        job.request,
        workers=job.workers,
        queue=job.queue,
        priority=job.priority,
        submit_time=job.submit_time,
        preemptible=job.preemptible,
        kind=job.kind,
    )
