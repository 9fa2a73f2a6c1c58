"""Autoscaling a model service from what its replicas report: the decision, purely.

The job document's `autoscale` block names a metric and a target:

- `inflight`: requests being answered per replica (the replicas' own
  `trainyard_worker_inference_inflight` gauge, averaged over the window);
- `p95_latency_ms`: the 95th percentile of request latency over the window, from the
  replicas' `trainyard_worker_inference_latency_seconds` histograms (bucket deltas).

Above the target the service grows at once, by the ratio observed/target (what the
Kubernetes HPA does), within `max_replicas`; well below it (under `LOW_RATIO` x target)
it shrinks by one, and only after `cooldown` has passed both since the last change and
since the metric fell low, so a short lull does not drop a replica that the next burst
needs. No observation (no traffic yet, no scrape) changes nothing.

Every replica the decision adds is placed by the scheduling core like any other work
(service_control.py): the decision says how many, never where.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trainyard.durations import duration_seconds

US = 1_000_000
LOW_RATIO = 0.5
METRICS = ("inflight", "p95_latency_ms")


@dataclass(frozen=True, slots=True)
class AutoscalePolicy:
    metric: str
    target: float
    cooldown_s: float
    low: int
    high: int

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> AutoscalePolicy | None:
        """The document's policy; None when it does not autoscale."""
        block = spec.get("autoscale")
        if not block:
            return None
        replicas = int(spec.get("replicas") or spec.get("workers") or 1)
        low = int(spec.get("min_replicas") or 1)
        high = int(spec.get("max_replicas") or max(replicas, low))
        return cls(
            metric=str(block["metric"]),
            target=float(block["target"]),
            cooldown_s=float(duration_seconds(str(block.get("cooldown") or "60s"))),
            low=low,
            high=max(high, low),
        )

    def clamp(self, replicas: int) -> int:
        return min(max(replicas, self.low), self.high)


@dataclass(frozen=True, slots=True)
class ScaleState:
    """What the decision remembers between cycles (kept by the loop, in memory)."""

    target: int
    changed_at_us: int
    low_since_us: int | None = None


def decide(
    state: ScaleState, observed: float | None, policy: AutoscalePolicy, *, now_us: int
) -> ScaleState:
    """The next state: a new target when the observation says so, else the same."""
    target = policy.clamp(state.target)
    if observed is None:
        return (
            ScaleState(target, state.changed_at_us, state.low_since_us)
            if (target != state.target)
            else state
        )
    if observed > policy.target:
        wanted = policy.clamp(math.ceil(target * observed / policy.target))
        if wanted > target:
            return ScaleState(wanted, now_us, None)
        return ScaleState(target, state.changed_at_us, None)
    if observed < policy.target * LOW_RATIO and target > policy.low:
        low_since = state.low_since_us if state.low_since_us is not None else now_us
        cooldown = policy.cooldown_s * US
        if now_us - low_since >= cooldown and now_us - state.changed_at_us >= cooldown:
            return ScaleState(target - 1, now_us, None)
        return ScaleState(target, state.changed_at_us, low_since)
    return ScaleState(target, state.changed_at_us, None)


# ------------------------------------------------------------------ observations


def quantile_from_buckets(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """The q-quantile of a histogram's cumulative (upper bound, count) buckets, linearly
    interpolated inside its bucket (as PromQL's histogram_quantile); None without data."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # in the open top bucket: its lower edge, as PromQL
            width = count - lower_count
            share = (rank - lower_count) / width if width > 0 else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


def observe(
    metric: str,
    *,
    latency_delta: Sequence[tuple[float, float]],
    inflight_samples: Sequence[float],
    replicas: int,
    rounds: int,
) -> float | None:
    """The number the policy compares with its target, from one window of scrapes:
    p95 latency in milliseconds over every replica, or mean in-flight per replica.
    None without two rounds of scrapes; a window without a request is 0 (idle)."""
    if rounds < 2:
        return None
    if metric == "p95_latency_ms":
        seconds = quantile_from_buckets(latency_delta, 0.95)
        return 0.0 if seconds is None else seconds * 1000.0
    if not inflight_samples or replicas <= 0:
        return None
    return sum(inflight_samples) / len(inflight_samples) / replicas
