"""Turn a replay's raw outcome into the reported figures (pure)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

from trainyard.scheduler.simulator.engine import ReplayResult

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
    "replay_seconds",
)


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
        "preemptions": sum(res.preemptions for res in results),
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
