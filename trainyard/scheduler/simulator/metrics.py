"""Turn a replay's raw outcome into the reported figures (pure)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

from trainyard.scheduler.estimator import Accuracy
from trainyard.scheduler.simulator.engine import JobRecord, ReplayResult

METRIC_KEYS = (
    "jobs",
    "jct_mean",
    "jct_p50",
    "jct_p95",
    "jct_p99",
    "wait_mean",
    "wait_p95",
    "wait_max",
    "makespan",
    "gpu_utilization",
    "fragmentation",
    "preemptions",
    "preemptions_per_job",
    "gpu_hours_lost",
    "estimate_within_10",
    "estimate_within_50",
    "estimate_within_100",
    "start_estimates",
    "start_within_tolerance",
    "replay_seconds",
)

# A start estimate is right when the real wait is within max(5 minutes, 25 %) of it.
START_TOLERANCE_SECONDS = 300.0
START_TOLERANCE_SHARE = 0.25


def start_estimate_hit(record: JobRecord) -> bool | None:
    """Whether a forecast job started within tolerance of its estimate (None: no forecast).

    Waits are counted from the forecast (made at most one forecast interval after the
    submission), so a late forecast gets no credit for the time already waited. A job
    forecast never to start that did start is a miss."""
    if record.forecast_at is None or record.first_start is None:
        return None
    if record.estimated_start is None:
        return False
    estimated = record.estimated_start - record.forecast_at
    actual = record.first_start - record.forecast_at
    tolerance = max(START_TOLERANCE_SECONDS, START_TOLERANCE_SHARE * estimated)
    return abs(actual - estimated) <= tolerance


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks (numpy's default)."""
    if not values:
        return 0.0
    if len(values) == 1:
        return float(values[0])
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    if q >= 100:
        return float(max(values))
    if q <= 0:
        return float(min(values))
    return float(cuts[int(q) - 1])


def summarize(results: Sequence[ReplayResult], replay_seconds: float) -> dict[str, float | int]:
    """Metrics of one policy; several results are sub-clusters replayed separately.

    - jct: completion - submit; wait: first start - submit (seconds).
    - makespan: last completion - first submission.
    - gpu_utilization: busy GPU-seconds / (GPUs x makespan).
    - fragmentation: while jobs wait and GPUs are free, the time-averaged share of free
      GPUs sitting on nodes with fewer free GPUs than any waiting worker needs.
    - gpu_hours_lost: work thrown away by preemptions (since the last checkpoint) plus
      the restart time of every resumed run.
    - estimate_within_X: share of jobs whose runtime estimate at submission was within
      X % of the real runtime (Helios' table).
    - start_within_tolerance: of the `start_estimates` jobs whose start was forecast
      while they waited, the share that started within max(5 min, 25 %) of the forecast.
    """
    records = [r for res in results for r in res.records if r.end is not None]
    jct = sorted(r.end - r.submit_time for r in records)  # type: ignore[operator]
    wait = sorted(r.first_start - r.submit_time for r in records)  # type: ignore[operator]
    ends = [r.end for r in records if r.end is not None]
    makespan = max(ends) - min(r.submit_time for r in records) if records else 0.0
    gpus = sum(res.total_gpus for res in results)
    busy = sum(res.busy_gpu_seconds for res in results)
    frag_time = sum(res.fragmentation_time for res in results)
    frag = sum(res.fragmentation_weighted for res in results) / frag_time if frag_time else 0.0
    preemptions = sum(res.preemptions for res in results)
    accuracy = Accuracy.of(
        (r.runtime_estimate, r.duration) for r in records if r.runtime_estimate is not None
    )
    hits = [h for h in map(start_estimate_hit, records) if h is not None]
    return {
        "jobs": len(records),
        "jct_mean": statistics.fmean(jct) if jct else 0.0,
        "jct_p50": percentile(jct, 50),
        "jct_p95": percentile(jct, 95),
        "jct_p99": percentile(jct, 99),
        "wait_mean": statistics.fmean(wait) if wait else 0.0,
        "wait_p95": percentile(wait, 95),
        "wait_max": max(wait) if wait else 0.0,
        "makespan": makespan,
        "gpu_utilization": min(busy / (gpus * makespan), 1.0) if gpus and makespan else 0.0,
        "fragmentation": frag,
        "preemptions": preemptions,
        "preemptions_per_job": preemptions / len(records) if records else 0.0,
        "gpu_hours_lost": sum(res.lost_gpu_seconds for res in results) / 3600.0,
        "estimate_within_10": accuracy.within_10,
        "estimate_within_50": accuracy.within_50,
        "estimate_within_100": accuracy.within_100,
        "start_estimates": len(hits),
        "start_within_tolerance": sum(hits) / len(hits) if hits else 0.0,
        "replay_seconds": replay_seconds,
    }


def merged_timeline(results: Sequence[ReplayResult]) -> list[tuple[float, int, float]]:
    """Sum the step-function timelines of sub-clusters into one (t, queued, busy GPUs)."""
    if len(results) == 1:
        return list(results[0].timeline)
    events = sorted(
        (t, i, queued, busy) for i, res in enumerate(results) for t, queued, busy in res.timeline
    )
    last_q = [0] * len(results)
    last_b = [0.0] * len(results)
    merged: list[tuple[float, int, float]] = []
    for t, i, queued, busy in events:
        last_q[i], last_b[i] = queued, busy
        merged.append((t, sum(last_q), sum(last_b)))
    return merged


TENANT_KEYS = (
    "jobs",
    "unfinished",
    "jct_mean",
    "jct_p95",
    "wait_mean",
    "gpu_hours",
    "preemptions",
    "alone_jct_mean",
    "ftf_ratio",
)


def tenant_summary(
    results: Sequence[ReplayResult],
    alone: Mapping[str, Sequence[ReplayResult]] | None = None,
) -> dict[str, dict[str, float | int | None]]:
    """Per queue (tenant): JCT, wait, GPU-hours received and finish-time fairness.

    `ftf_ratio` (Themis' finish-time fairness) is the tenant's mean JCT on the shared
    cluster over its mean JCT replayed alone on a partition of its nominal quota
    (`alone[queue]`), both over the jobs that finished in the two runs; above 1.0 the
    tenant is worse off sharing. None when it has no partition (nominal quota 0) or no
    job finished in both. `unfinished` counts jobs never completed (a quota that can
    never hold them, or the replay's end).
    """
    by_queue: dict[str, list] = {}
    for res in results:
        for r in res.records:
            by_queue.setdefault(r.queue, []).append(r)
    out: dict[str, dict[str, float | int | None]] = {}
    for queue in sorted(by_queue):
        records = by_queue[queue]
        done = [r for r in records if r.end is not None]
        jct = sorted(r.end - r.submit_time for r in done)
        wait = [r.first_start - r.submit_time for r in done]
        row: dict[str, float | int | None] = {
            "jobs": len(done),
            "unfinished": len(records) - len(done),
            "jct_mean": statistics.fmean(jct) if jct else 0.0,
            "jct_p95": percentile(jct, 95),
            "wait_mean": statistics.fmean(wait) if wait else 0.0,
            "gpu_hours": sum(r.gpu_seconds for r in records) / 3600,
            "preemptions": sum(r.preemptions for r in records),
            "alone_jct_mean": None,
            "ftf_ratio": None,
        }
        alone_results = (alone or {}).get(queue)
        if alone_results:
            alone_end = {
                r.id: r.end - r.submit_time
                for res in alone_results
                for r in res.records
                if r.end is not None
            }
            common = [r for r in done if r.id in alone_end]
            if common:
                shared_mean = statistics.fmean(r.end - r.submit_time for r in common)
                alone_mean = statistics.fmean(alone_end[r.id] for r in common)
                row["alone_jct_mean"] = alone_mean
                row["ftf_ratio"] = shared_mean / alone_mean if alone_mean > 0 else None
        out[queue] = row
    return out
