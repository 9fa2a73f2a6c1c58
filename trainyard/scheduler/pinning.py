"""Worker 0 back on the node that holds its checkpoint: a soft placement preference.

Where a deployment has no ReadWriteMany storage, a job's checkpoints stay on the node
its worker 0 ran on (node-local storage, see operator/kubernetes/storage.py). A
restarted or preempted gang resumes from them only if its new worker 0 lands on that
same node, so a pending job may name `PendingJob.preferred_node`.

The preference is scoring, never a filter: a gang that cannot have worker 0 there is
placed as if it named no node (and restarts from scratch), it never waits for the node.
It outranks the placement's own packing (a checkpoint is hours of work, a tighter pack
is not), so a gang that would have fit one other node may be split to keep it. Within
the tiers the filters allow:

1. if the plain placement already uses the node, worker 0 goes there (allocation order
   is worker order);
2. otherwise as many workers as the node holds (one for an inference gang, which
   spreads) go there, and the rest of the gang is placed around them;
3. otherwise (the node is gone, not ready, of a pool the job may not use, or full) the
   plain placement.

A replica added to a running model service names instead the nodes its other replicas
run on (`PendingJob.avoid_nodes`): it goes on another node when one has room (the
placement's own order among those), else where the plain placement puts it. Also
scoring, never a filter.

Pure and deterministic like the rest of the core: the trials take capacity from the
index and give exactly that back.
"""

from __future__ import annotations

from collections.abc import Sequence

from trainyard.scheduler.capacity import Allocation, ClusterIndex
from trainyard.scheduler.placement import Tier, choose_nodes
from trainyard.scheduler.types import JobKind, PendingJob, WorkerRequest

Chosen = list[tuple[int, int]]


def place_preferring(
    index: ClusterIndex, tiers: Sequence[Tier], job: PendingJob
) -> list[Allocation] | None:
    """Place and commit `job`'s gang with worker 0 on its preferred node when it can."""
    chosen = choose_preferring(index, tiers, job)
    if chosen is None:
        return None
    return [index.take(i, job.request, count) for i, count in chosen]


def choose_preferring(index: ClusterIndex, tiers: Sequence[Tier], job: PendingJob) -> Chosen | None:
    """(node, workers) pairs for the gang, the preferred node first when it is used;
    None when the gang does not fit at all. Commits nothing."""
    target = index.index_of.get(job.preferred_node or "")
    if target is not None:
        for tier in tiers:
            if index.node_pool[target] not in tier:
                continue
            pinned = _pinned(index, tier, job.request, job.workers, job.kind, target)
            if pinned is not None:
                return pinned
    if job.avoid_nodes:
        for tier in tiers:
            elsewhere = _avoiding(index, tier, job)
            if elsewhere is not None:
                return elsewhere
    for tier in tiers:
        chosen = choose_nodes(index, tier, job.request, job.workers, job.kind)
        if chosen is not None:
            return chosen
    return None


def _avoiding(index: ClusterIndex, tier: Tier, job: PendingJob) -> Chosen | None:
    """The tier's placement with the avoided nodes' room held back for the trial."""
    version = index.version
    held = []
    for name in sorted(set(job.avoid_nodes)):
        i = index.index_of.get(name)
        if i is None:
            continue
        cap = index.capacity_of(i, job.request)
        if cap >= 1:
            held.append(index.take(i, job.request, cap))
    try:
        return choose_nodes(index, tier, job.request, job.workers, job.kind)
    finally:
        for allocation in reversed(held):
            index.release(allocation)
        index.version = version  # the exact inverse of the takes: no capacity came free


def _pinned(
    index: ClusterIndex,
    tier: Tier,
    request: WorkerRequest,
    workers: int,
    kind: JobKind,
    target: int,
) -> Chosen | None:
    plain = choose_nodes(index, tier, request, workers, kind)
    if plain is not None and any(i == target for i, _ in plain):
        return sorted(plain, key=lambda pair: pair[0] != target)  # stable: target first
    cap = index.capacity_of(target, request)
    if cap < 1:
        return None
    spread = kind == JobKind.INFERENCE and workers > 1
    here = 1 if spread else min(cap, workers)
    if here == workers:
        return [(target, workers)]
    version = index.version
    trial = index.take(target, request, here)
    try:
        rest = choose_nodes(index, tier, request, workers - here, kind)
    finally:
        index.release(trial)
        index.version = version  # the exact inverse of the take: no capacity came free
    if rest is None:
        return None
    chosen: Chosen = [(target, here)]
    for i, count in rest:
        if i == target:  # a spread gang that ran out of other nodes
            chosen[0] = (target, chosen[0][1] + count)
        else:
            chosen.append((i, count))
    return chosen
