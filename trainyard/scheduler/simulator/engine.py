"""Event-driven replay of a job trace through the scheduling core.

Time jumps from event to event (arrivals and completions); at each distinct event time
the state is updated and ONE scheduling cycle runs, exactly as the operator would run
one after a watch event. The capacity index, pending set and running set persist
between cycles and are updated incrementally, so a replay of n jobs costs about
n x (one cycle), not n x (rebuild everything).

A job runs for its recorded duration. A preempted job keeps the work saved at its last
checkpoint (every `checkpoint_interval` seconds of progress), loses the rest, and goes
back to the queue with its original submit time; restarting then costs `restart_cost`
seconds (loading the checkpoint, rebuilding the gang) before it makes progress again, so
preemptive policies pay for what they do.

Runtime knowledge: oracle policies (`sjf-oracle`, `srtf-oracle`) are given the true
remaining time; every other job carries the estimate of an online `RuntimeEstimator`
that learns only from jobs that have already ended. With `forecast_interval`, a
start-time forecast (`trainyard.scheduler.forecast`) is made for newly queued jobs and
recorded beside what really happened.

Pure: no I/O and no wall clock; progress is reported through a callback.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from trainyard.scheduler.api import flavored_pool_keys, ordering_context
from trainyard.scheduler.capacity import ClusterIndex
from trainyard.scheduler.cycle import TierCache, fits_empty, run_cycle
from trainyard.scheduler.estimator import JobFeatures, RuntimeEstimator, remaining
from trainyard.scheduler.fairshare import decay_usage
from trainyard.scheduler.forecast import forecast_starts
from trainyard.scheduler.policies import PolicySettings, get_policy
from trainyard.scheduler.queueing import PendingSet
from trainyard.scheduler.quota import QuotaConfig
from trainyard.scheduler.quota_gate import QuotaLedger
from trainyard.scheduler.reservation import ReservationCache
from trainyard.scheduler.running import Placed, RunningSet
from trainyard.scheduler.types import (
    DEFAULT_RACK_LABEL,
    ClusterSnapshot,
    JobKind,
    Node,
    PendingJob,
    RunningJob,
    WorkerRequest,
)


@dataclass(frozen=True, slots=True)
class SimJob:
    """One trace job: when it arrives, how long it runs, what it needs."""

    id: str
    submit_time: float
    duration: float
    request: WorkerRequest
    workers: int = 1
    queue: str = "default"
    priority: int = 0
    preemptible: bool = True
    kind: JobKind = JobKind.TRAINING
    owner: str = ""  # what the runtime estimator may learn from, when the trace has it
    name: str = ""
    workload: str = ""

    def features(self) -> JobFeatures:
        return JobFeatures(
            owner=self.owner,
            name=self.name,
            queue=self.queue,
            workload=self.workload,
            gpus=self.request.gpu_milli * self.workers / 1000.0,
            workers=self.workers,
            kind=self.kind.value,
        )


@dataclass(frozen=True, slots=True)
class SimConfig:
    """How to replay: which policy, how accurate runtime estimates are, checkpoints."""

    policy: str
    settings: PolicySettings = field(default_factory=PolicySettings)
    checkpoint_interval: float = 1800.0  # seconds; <= 0 means no checkpoints
    runtime_limit_factor: float = 1.0  # runtime limit = duration x factor
    rack_label: str = DEFAULT_RACK_LABEL
    timeline_points: int = 4000
    quotas: QuotaConfig | None = None  # queues under quota, cohorts, fair sharing
    restart_cost: float = 60.0  # seconds from a preempted job's restart to new progress
    forecast_interval: float | None = None  # virtual seconds between start forecasts


@dataclass(slots=True)
class JobRecord:
    """What happened to one job."""

    id: str
    queue: str
    submit_time: float
    duration: float
    gpus: float
    first_start: float | None = None
    end: float | None = None
    preemptions: int = 0
    gpu_seconds: float = 0.0  # GPU time received, including work later lost to preemption
    lost_gpu_seconds: float = 0.0  # unsaved work thrown away plus restart time
    runtime_estimate: float | None = None  # learned estimate at submission (None: oracle)
    estimate_level: str = ""  # which fallback level answered
    forecast_at: float | None = None  # when its start was first forecast
    estimated_start: float | None = None  # that forecast (None: not expected to start)


@dataclass(slots=True)
class ReplayResult:
    """Raw outcome of a replay; `metrics` turns it into the reported figures."""

    policy: str
    records: list[JobRecord]
    total_gpus: int
    busy_gpu_seconds: float = 0.0
    fragmentation_weighted: float = 0.0  # integral of stranded/free GPUs while jobs wait
    fragmentation_time: float = 0.0
    preemptions: int = 0
    unschedulable: int = 0
    cycles: int = 0
    lost_gpu_seconds: float = 0.0
    forecasts: int = 0
    timeline: list[tuple[float, int, float]] = field(default_factory=list)  # t, queued, busy GPUs

    def fingerprint(self) -> str:
        """Every job's record and the replay's totals hashed, floats by repr (bit-exact).

        Why: speed work on the core must not change a decision; the equivalence tests and
        `bench_replay.py --digest` compare these before and after.
        """
        h = hashlib.sha256()
        for r in sorted(self.records, key=lambda r: r.id):
            h.update(repr(dataclasses.astuple(r)).encode())
        totals = (
            self.busy_gpu_seconds,
            self.fragmentation_weighted,
            self.fragmentation_time,
            self.preemptions,
            self.unschedulable,
            self.cycles,
            self.lost_gpu_seconds,
            self.forecasts,
            self.timeline,
        )
        h.update(repr(totals).encode())
        return h.hexdigest()[:16]


ProgressCallback = Callable[[int, int], None]


def replay(
    nodes: Sequence[Node],
    jobs: Sequence[SimJob],
    config: SimConfig,
    progress: ProgressCallback | None = None,
) -> ReplayResult:
    """Replay `jobs` on `nodes` under `config.policy`; deterministic for equal inputs."""
    return _Replay(nodes, jobs, config, progress).run()


class _Replay:
    def __init__(
        self,
        nodes: Sequence[Node],
        jobs: Sequence[SimJob],
        config: SimConfig,
        progress: ProgressCallback | None,
    ) -> None:
        self.config = config
        self.policy = get_policy(config.policy, config.settings)
        quotas = config.quotas
        keys = flavored_pool_keys(nodes, quotas) if quotas is not None else None
        self.index = ClusterIndex(nodes, config.rack_label, pool_keys=keys)
        self.tiers = TierCache(self.index)
        self.running = RunningSet()
        self.reservations = ReservationCache(self.index, self.running)
        self.ledger = QuotaLedger(quotas, self.index) if quotas is not None else None
        self.half_life = quotas.fair_sharing.usage_half_life if quotas is not None else None
        policy = self.policy
        per_queue = {
            q.name: get_policy(q.policy, config.settings)
            for q in (quotas.queues if quotas is not None else ())
            if q.policy is not None
        }
        self.policy_for = (lambda q: per_queue.get(q, policy)) if per_queue else (lambda _q: policy)
        self.pending = PendingSet(
            self.policy_for,
            ordering_context(self.index, self.running, 0.0),
            self.ledger.user_ordered if self.ledger is not None else frozenset(),
        )
        self.jobs = sorted(jobs, key=lambda j: (j.submit_time, j.id))
        self.by_id = {j.id: j for j in self.jobs}
        self.records = {
            j.id: JobRecord(
                j.id, j.queue, j.submit_time, j.duration, j.request.gpu_milli * j.workers / 1000
            )
            for j in self.jobs
        }
        self.remaining = {j.id: max(j.duration, 0.0) for j in self.jobs}
        self.overhead: dict[str, float] = {}  # restart seconds at the start of this run
        self.attained: dict[str, float] = {}
        self.queued_since: dict[str, float] = {}
        self.estimator = RuntimeEstimator()
        self.oracle = policy.oracle
        self.nodes = list(nodes)
        self.next_forecast = -math.inf
        self.unforecast: list[str] = []
        self.epoch: dict[str, int] = {}
        self.started_at: dict[str, float] = {}
        self.completions: list[tuple[float, int, str, int]] = []
        self.seq = 0
        self.progress = progress
        self.result = ReplayResult(config.policy, [], self.index.total_gpus)
        self.busy_gpus = 0.0
        self.refresh_interval = policy.ordering.refresh_interval
        # Cycles may be skipped when nothing fits (`_anything_fits`) only if no job can
        # preempt (a preemption admits without free room) and no quota ledger is kept
        # (its admission bookkeeping runs inside the cycle).
        self._stranded_at: tuple[tuple[int, int] | None, tuple[int, int]] = (None, (0, 0))
        self.can_skip = self.ledger is None and not per_queue and not policy.preemption
        self.next_refresh = -math.inf

    def run(self) -> ReplayResult:
        jobs, n = self.jobs, len(self.jobs)
        nxt = 0
        last_t: float | None = None
        done = 0
        timeline: list[tuple[float, int, float]] = []
        while nxt < n or self.completions:
            t = min(
                jobs[nxt].submit_time if nxt < n else math.inf,
                self.completions[0][0] if self.completions else math.inf,
            )
            if last_t is not None:
                self._accumulate(last_t, t)
            while self.completions and self.completions[0][0] <= t:
                _end, _seq, job_id, epoch = heapq.heappop(self.completions)
                if self.epoch.get(job_id) != epoch:
                    continue  # preempted since this completion was scheduled
                self._complete(job_id, t)
                done += 1
            while nxt < n and jobs[nxt].submit_time <= t:
                if self._arrive(jobs[nxt], t):
                    done += 1
                nxt += 1
            self._cycle(t)
            timeline.append((t, len(self.pending), self.busy_gpus))
            last_t = t
            if self.progress is not None and self.result.cycles % 512 == 0:
                self.progress(done, n)
        if self.progress is not None:
            self.progress(n, n)
        result = self.result
        result.records = list(self.records.values())
        result.timeline = _downsample(timeline, self.config.timeline_points)
        return result

    # ------------------------------------------------------------------ events
    def _arrive(self, job: SimJob, t: float) -> bool:
        """Queue a job; returns True when it is dropped as unschedulable on this cluster."""
        record = self.records[job.id]
        estimate = self.estimator.estimate(job.features())
        record.runtime_estimate, record.estimate_level = estimate.seconds, estimate.level
        pending = self._pending_job(job, self.remaining[job.id])
        if not fits_empty(self.index, pending):
            self.result.unschedulable += 1
            del self.records[job.id]
            return True
        self.pending.add(pending)
        if self.config.forecast_interval is not None:
            self.unforecast.append(job.id)
        return False

    def _pending_job(self, job: SimJob, left: float) -> PendingJob:
        """The job as the core sees it: the truth for oracles, else the learned estimate
        (of the time left, given the work it has saved)."""
        if self.oracle:
            estimate = left
        else:
            total = self.records[job.id].runtime_estimate or 0.0
            estimate = remaining(total, job.duration - left) + self.overhead.get(job.id, 0.0)
        return PendingJob(
            job.id,
            job.request,
            workers=job.workers,
            queue=job.queue,
            priority=job.priority,
            submit_time=job.submit_time,
            runtime_limit=left * self.config.runtime_limit_factor,
            preemptible=job.preemptible,
            kind=job.kind,
            estimated_runtime=estimate,
            attained_gpu_seconds=self.attained.get(job.id, 0.0),
            queued_since=self.queued_since.get(job.id),
        )

    def _complete(self, job_id: str, t: float) -> None:
        placed = self.running.remove(job_id)
        self.index.release_all(placed.allocations)
        if self.ledger is not None:
            self.ledger.release(job_id)
        record = self.records[job_id]
        self.busy_gpus -= record.gpus
        record.gpu_seconds += record.gpus * (t - self.started_at[job_id])
        record.end = t
        wasted = record.gpus * self.overhead.get(job_id, 0.0)  # the last restart's cost
        record.lost_gpu_seconds += wasted
        self.result.lost_gpu_seconds += wasted
        self.estimator.observe(self.by_id[job_id].features(), record.duration)

    def _cycle(self, t: float) -> None:
        if not len(self.pending):
            return
        if self.policy.estimates:
            self._extend_overdue(t)
        if self.refresh_interval is not None and t >= self.next_refresh:
            self.pending.refresh(ordering_context(self.index, self.running, t))
            self.next_refresh = t + self.refresh_interval
        if self.can_skip and not self._anything_fits():
            # Nothing pending fits any node and nothing may preempt: the cycle would
            # admit nothing and change nothing, so it is counted and not run.
            self.result.cycles += 1
            if self.unforecast and t >= self.next_forecast:
                self._forecast(t)
            return
        out = run_cycle(
            self.index,
            self.pending,
            self.running,
            self.policy_for,
            t,
            tiers_for=self.tiers,
            quota=self.ledger,
            reservations=self.reservations,
        )
        self.result.cycles += 1
        for admitted in out.admitted:
            for victim in admitted.victims:
                self._preempted(victim, t)
            job_id = admitted.job.id
            record = self.records[job_id]
            if record.first_start is None:
                record.first_start = t
            self.busy_gpus += record.gpus
            epoch = self.epoch.get(job_id, 0) + 1
            self.epoch[job_id] = epoch
            self.started_at[job_id] = t
            self.seq += 1
            heapq.heappush(self.completions, (t + self.remaining[job_id], self.seq, job_id, epoch))
        if self.unforecast and t >= self.next_forecast:
            self._forecast(t)

    def _expected_end(self, placed: Placed, t: float) -> float | None:
        """When a running job is expected to end, as of `t`: the truth for oracles, else
        the estimator's current view of its total, less the work it has done (as the
        live loop re-estimates running jobs)."""
        if self.oracle:
            return placed.estimated_end
        job_id = placed.job_id
        job = self.by_id[job_id]
        overhead = self.overhead.get(job_id, 0.0)
        ran = t - placed.start_time
        done = job.duration - self.remaining[job_id] + overhead + max(ran - overhead, 0.0)
        total = self.estimator.estimate(job.features()).seconds
        return t + remaining(total, done) + max(overhead - ran, 0.0)

    def _extend_overdue(self, t: float) -> None:
        """Backfill by estimate: a job that outlived its estimate keeps running (only
        max_runtime kills) and is now expected to run as long again as it has, so that
        reservations are planned with a future end instead of a past one."""
        running = self.running
        by_end, by_id = running.by_end, running.by_id
        while by_end and by_end[0][0] < t:
            job_id = by_end[0][1]
            running.move_end(job_id, t + max(t - by_id[job_id].start_time, 60.0))

    def _preempted(self, victim: Placed, t: float) -> None:
        """Keep the checkpointed work, lose the rest, requeue with the original submit
        time; the next run starts with `restart_cost` seconds of no progress."""
        job_id = victim.job_id
        ran = t - victim.start_time
        overhead = self.overhead.get(job_id, 0.0)
        progress = max(ran - overhead, 0.0)
        interval = self.config.checkpoint_interval
        saved = math.floor(progress / interval) * interval if interval > 0 else 0.0
        work_left = max(self.remaining[job_id] - overhead - saved, 0.0)
        restart = max(self.config.restart_cost, 0.0)
        self.remaining[job_id] = work_left + restart
        self.overhead[job_id] = restart
        self.attained[job_id] = victim.attained_gpu_seconds(t)
        self.queued_since[job_id] = t
        self.epoch[job_id] = self.epoch.get(job_id, 0) + 1
        record = self.records[job_id]
        record.gpu_seconds += record.gpus * ran
        record.preemptions += 1
        lost = record.gpus * (ran - saved)
        record.lost_gpu_seconds += lost
        self.result.lost_gpu_seconds += lost
        self.result.preemptions += 1
        self.busy_gpus -= record.gpus
        self.pending.add(self._pending_job(self.by_id[job_id], self.remaining[job_id]))

    def _forecast(self, t: float) -> None:
        """Forecast the start of every job queued since the last forecast that is still
        pending, from the state after this cycle (what the live loop would show)."""
        targets = [j for j in self.unforecast if j in self.pending]
        self.unforecast.clear()
        self.next_forecast = t + (self.config.forecast_interval or 0.0)
        if not targets:
            return
        names = [n.name for n in self.index.nodes]
        running = tuple(
            RunningJob(
                p.job_id,
                p.request,
                tuple(names[a.node] for a in p.allocations for _ in range(a.count)),
                p.start_time,
                queue=p.queue,
                priority=p.priority,
                submit_time=self.by_id[p.job_id].submit_time,
                expected_end=p.expected_end,
                preemptible=p.preemptible,
                estimated_end=self._expected_end(p, t),
                attained_gpu_seconds=p.attained_before,
                kind=self.by_id[p.job_id].kind,
            )
            for p in self.running.by_id.values()
        )
        pending = tuple(job for _key, job, _lane in self.pending.jobs.values())
        snapshot = ClusterSnapshot(tuple(self.nodes), running, pending, self.config.rack_label)
        policy = self.policy
        forecast = forecast_starts(
            snapshot, t, lambda _q: policy, targets=targets, restart_cost=self.config.restart_cost
        )
        self.result.forecasts += 1
        for job_id in targets:
            record = self.records[job_id]
            record.forecast_at = t
            record.estimated_start = forecast.starts.get(job_id)

    # ----------------------------------------------------------------- metrics
    def _accumulate(self, t0: float, t1: float) -> None:
        span = t1 - t0
        if span <= 0:
            return
        ledger = self.ledger
        if ledger is not None and self.half_life is not None:
            ledger.history = decay_usage(
                ledger.history, ledger.usage_shares(), span, self.half_life
            )
            if ledger.user_ordered:
                ledger.user_history = decay_usage(
                    ledger.user_history, ledger.user_usage_shares(), span, self.half_life
                )
        self.result.busy_gpu_seconds += self.busy_gpus * span
        if len(self.pending):
            stranded, free = self._stranded()
            if free > 0:
                self.result.fragmentation_weighted += span * stranded / free
                self.result.fragmentation_time += span

    def _anything_fits(self) -> bool:
        """False only when no pending job can start: every lane needs whole accelerator
        units per worker, more than the freest node of any pool has. A job of any other
        kind (CPU-only, GPU shares) is never ruled out here."""
        demand = None
        for lane in self.pending.lanes.values():
            if lane.count:
                request = lane.shape[0]
                units = request.gpus or request.tpu_chips  # type: ignore[attr-defined]
                if not units:
                    return True
                if demand is None or units < demand:
                    demand = units
        if demand is None:
            return False
        for pool in self.index.pools:
            buckets = pool.buckets
            for k in range(pool.max_units, demand - 1, -1):
                if buckets[k]:
                    return True
        return False

    def _stranded(self) -> tuple[int, int]:
        """Free whole GPUs, and those on nodes with fewer free than any waiting worker needs."""
        demand = 0
        for lane in self.pending.lanes.values():
            if lane.count:
                gpus = lane.shape[0].gpus  # type: ignore[attr-defined]
                if gpus and (not demand or gpus < demand):
                    demand = gpus
        demand = demand or 1
        # The answer depends only on the buckets and the demand: kept while both hold
        # (it is asked at every event, most of which change neither).
        token = (self.index.changes, demand)
        if self._stranded_at[0] == token:
            return self._stranded_at[1]
        stranded = free = 0
        for pool in self.index.pools:
            if pool.key.accelerator != "gpu":
                continue
            for k in range(1, pool.max_units + 1):
                size = len(pool.buckets[k])
                if size:
                    free += k * size
                    if k < demand:
                        stranded += k * size
        self._stranded_at = (token, (stranded, free))
        return stranded, free


def _downsample(
    points: list[tuple[float, int, float]], limit: int
) -> list[tuple[float, int, float]]:
    if len(points) <= limit:
        return points
    step = len(points) / limit
    return [points[int(i * step)] for i in range(limit)] + [points[-1]]
