"""Feasibility filters: which node pools a job may use at all.

These are the kube-scheduler "Filter" extension point, evaluated once per pool instead
of once per node (every node of a pool shares model, accelerator and taints), and each
filter is one small predicate. The result is a tuple of *tiers*: the placement tries
the first tier and falls back to the next only when the first cannot hold the job. Each
tier adds pools to the previous one, so a gang may still mix them as a last resort. CPU-only
work uses that to prefer CPU nodes and only then spill onto accelerator nodes (taking CPU
and memory there, never an accelerator); every job prefers nodes without a
PreferNoSchedule taint it does not tolerate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from trainyard.scheduler.capacity import Pool, PoolKey
from trainyard.scheduler.types import Toleration, WorkerRequest

PoolFilter = Callable[[PoolKey, WorkerRequest, tuple[Toleration, ...]], bool]


def tolerates_taints(
    key: PoolKey, _request: WorkerRequest, tolerations: tuple[Toleration, ...]
) -> bool:
    """Every hard (NoSchedule / NoExecute) taint must be tolerated."""
    return all(any(t.tolerates(taint) for t in tolerations) for taint in key.taints)


def matches_gpu_model(
    key: PoolKey, request: WorkerRequest, _tolerations: tuple[Toleration, ...]
) -> bool:
    """GPU work needs a GPU pool whose product contains one of the acceptable models."""
    if not request.uses_gpu:
        return True
    if key.accelerator != "gpu":
        return False
    if not request.gpu_models:
        return True
    product = key.product.lower()
    return any(model.lower() in product for model in request.gpu_models)


def matches_tpu(key: PoolKey, request: WorkerRequest, _tolerations: tuple[Toleration, ...]) -> bool:
    """TPU work needs a TPU pool of the asked type and topology (when given)."""
    if not request.tpu_chips:
        return True
    if key.accelerator != "tpu":
        return False
    if request.tpu_type and request.tpu_type != key.tpu_type:
        return False
    return not (request.tpu_topology and request.tpu_topology != key.tpu_topology)


DEFAULT_FILTERS: tuple[PoolFilter, ...] = (tolerates_taints, matches_gpu_model, matches_tpu)


def eligible_tiers(
    pools: Sequence[Pool],
    request: WorkerRequest,
    tolerations: tuple[Toleration, ...],
    filters: Sequence[PoolFilter] = DEFAULT_FILTERS,
) -> tuple[tuple[Pool, ...], ...]:
    """Pools that pass every filter, grouped into preference tiers (first is preferred)."""
    passing = [p for p in pools if all(f(p.key, request, tolerations) for f in filters)]

    def rank(pool: Pool) -> int:
        accel = 1 if request.cpu_only and pool.key.accelerator != "cpu" else 0
        avoided = any(not any(t.tolerates(s) for t in tolerations) for s in pool.key.soft_taints)
        return accel * 2 + (1 if avoided else 0)

    tiers: list[tuple[Pool, ...]] = []
    for level in range(4):
        tier = tuple(p for p in passing if rank(p) <= level)
        if tier and (not tiers or len(tier) > len(tiers[-1])):
            tiers.append(tier)
    return tuple(tiers)
