"""Gang placement: put all workers of a job on nodes at once, or nothing.

Scoring here is the order in which the capacity index is walked rather than a number
per node, because the walk is what keeps placement O(buckets) instead of O(nodes):

- *best fit* (training): the node with the FEWEST free units that still holds the
  workers, so whole nodes stay free for big gangs;
- *fewest nodes*: a gang that fits one node goes on one node; a larger one takes the
  biggest free blocks first and finishes with a best-fit node for the remainder;
- *topology*: a multi-node gang is tried within one rack, then one zone (the tightest
  domain that can hold it, so roomy domains stay whole), then across the cluster;
- *spread* (inference): replicas go one per node, on the nodes with the most room.

`place` either commits every allocation and returns them, or changes nothing and
returns None. That is the transaction Volcano calls a Statement.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from trainyard.scheduler.capacity import Allocation, ClusterIndex, Pool
from trainyard.scheduler.types import JobKind, WorkerRequest

Tier = tuple[Pool, ...]
Domain = tuple[int, ...] | None  # leaf ids, or None for the whole cluster


def place(
    index: ClusterIndex,
    tiers: Sequence[Tier],
    request: WorkerRequest,
    workers: int,
    kind: JobKind = JobKind.TRAINING,
) -> list[Allocation] | None:
    """Place and commit a whole gang, trying the preferred tier first."""
    for tier in tiers:
        chosen = choose_nodes(index, tier, request, workers, kind)
        if chosen is not None:
            return [index.take(i, request, count) for i, count in chosen]
    return None


def choose_nodes(
    index: ClusterIndex, tier: Tier, request: WorkerRequest, workers: int, kind: JobKind
) -> list[tuple[int, int]] | None:
    """Pick (node, workers-on-it) pairs for the gang within one tier, without committing."""
    units = request.gpus or request.tpu_chips
    if kind == JobKind.INFERENCE and workers > 1:
        spread = _spread(index, tier, request, workers, units)
        if spread is not None:
            return spread
    if units == 0:
        return _unitless(index, tier, request, workers)
    max_units = max(p.max_units for p in tier)
    if workers * units <= max_units:
        node = _best_fit(index, tier, None, request, workers, units, ())
        if node is not None:
            return [(node, workers)]
        if workers == 1:
            return None
    if not _domains_by_fit(index, tier, [None], units, workers):
        return None  # not even the whole cluster has room: skip the per-domain sums
    for level in _levels(index):
        for domain in _domains_by_fit(index, tier, level, units, workers):
            chosen = _build(index, tier, domain, request, workers, units)
            if chosen is not None:
                return chosen
    return None


def _levels(index: ClusterIndex) -> list[list[Domain]]:
    """Topology levels from tightest to loosest; each is a list of domains."""
    levels: list[list[Domain]] = []
    if index.has_racks:
        levels.append([(leaf,) for leaf in range(len(index.leaf_names))])
    if len(index.zones) > 1:
        levels.append([leaves for _zone, leaves in index.zones])
    levels.append([None])
    return levels


def _buckets(pool: Pool, domain: Domain) -> Iterator[list]:
    if domain is None:
        yield pool.buckets
        return
    for leaf in domain:
        buckets = pool.leaf_buckets.get(leaf)
        if buckets is not None:
            yield buckets


def _domains_by_fit(
    index: ClusterIndex, tier: Tier, level: list[Domain], units: int, workers: int
) -> list[Domain]:
    """Domains whose free units could hold the gang, tightest first (an upper bound:
    CPU and memory are checked when nodes are actually chosen)."""
    feasible: list[tuple[int, int, Domain]] = []
    need = workers * units
    for order, domain in enumerate(level):
        free = _free_units(tier, domain)
        if free < need:
            continue  # not even the raw free units suffice: skip the bucket sums
        bound = 0
        for pool in tier:
            for buckets in _buckets(pool, domain):
                for k in range(units, pool.max_units + 1):
                    size = len(buckets[k])
                    if size:
                        bound += size * (k // units)
        if bound >= workers:
            feasible.append((bound, order, domain))
    feasible.sort(key=lambda t: (t[0], t[1]))
    return [d for _b, _o, d in feasible]


def _free_units(tier: Tier, domain: Domain) -> int:
    """Free units of the tier's pools within `domain` (plain loops: this runs for every
    rack of every gang that does not fit, so generator overhead shows)."""
    free = 0
    if domain is None:
        for pool in tier:
            free += pool.free_total
        return free
    for pool in tier:
        leaf_free = pool.leaf_free
        for leaf in domain:
            free += leaf_free.get(leaf, 0)
    return free


def _best_fit(
    index: ClusterIndex,
    tier: Tier,
    domain: Domain,
    request: WorkerRequest,
    workers: int,
    units: int,
    exclude: Sequence[int],
) -> int | None:
    """The node with the fewest free units that takes `workers` workers."""
    capacity_of = index.capacity_of
    for k in range(workers * units, max(p.max_units for p in tier) + 1):
        for pool in tier:
            if k > pool.max_units:
                continue
            for buckets in _buckets(pool, domain):
                for i in buckets[k]:
                    if i not in exclude and capacity_of(i, request) >= workers:
                        return i
    return None


def _largest(
    index: ClusterIndex,
    tier: Tier,
    domain: Domain,
    request: WorkerRequest,
    units: int,
    exclude: set[int],
) -> tuple[int, int] | None:
    """The node with the most free units that takes at least one worker."""
    capacity_of = index.capacity_of
    for k in range(max(p.max_units for p in tier), units - 1, -1):
        for pool in tier:
            if k > pool.max_units:
                continue
            for buckets in _buckets(pool, domain):
                for i in buckets[k]:
                    if i in exclude:
                        continue
                    cap = capacity_of(i, request)
                    if cap >= 1:
                        return i, cap
    return None


def _build(
    index: ClusterIndex,
    tier: Tier,
    domain: Domain,
    request: WorkerRequest,
    workers: int,
    units: int,
) -> list[tuple[int, int]] | None:
    """Biggest blocks first, then a best-fit node for the remainder (fewest nodes)."""
    chosen: list[tuple[int, int]] = []
    used: set[int] = set()
    remaining = workers
    while remaining:
        node = _best_fit(index, tier, domain, request, remaining, units, used)
        if node is not None:
            chosen.append((node, remaining))
            return chosen
        found = _largest(index, tier, domain, request, units, used)
        if found is None:
            return None
        node, cap = found
        take = min(cap, remaining)
        chosen.append((node, take))
        used.add(node)
        remaining -= take
    return chosen


def _spread(
    index: ClusterIndex, tier: Tier, request: WorkerRequest, workers: int, units: int
) -> list[tuple[int, int]] | None:
    """One replica per node, roomiest nodes first."""
    chosen: list[tuple[int, int]] = []
    capacity_of = index.capacity_of
    max_units = max(p.max_units for p in tier)
    for k in range(max_units, units - 1, -1):
        for pool in tier:
            if k > pool.max_units:
                continue
            for i in pool.buckets[k]:
                if capacity_of(i, request) >= 1:
                    chosen.append((i, 1))
                    if len(chosen) == workers:
                        return chosen
    return None


def _unitless(
    index: ClusterIndex, tier: Tier, request: WorkerRequest, workers: int
) -> list[tuple[int, int]] | None:
    """Work with no whole accelerator unit (CPU-only, or a GPU share), first fit.

    Shares go first to GPUs already partly used, then to the node with the fewest whole
    GPUs free; CPU-only work on accelerator nodes prefers nodes whose accelerators are
    all busy, so it does not strand free GPUs behind exhausted CPU.
    """
    chosen: list[tuple[int, int]] = []
    remaining = workers
    capacity_of = index.capacity_of
    seen: set[int] = set()
    candidates: list[Iterator[int]] = []
    if request.gpu_share_milli:
        candidates.extend(iter(p.partial_nodes) for p in tier)
    max_units = max(p.max_units for p in tier)
    start = 1 if request.gpu_share_milli else 0
    for k in range(start, max_units + 1):
        candidates.extend(iter(p.buckets[k]) for p in tier if k <= p.max_units)
    for iterator in candidates:
        for i in iterator:
            if i in seen:
                continue
            seen.add(i)
            cap = capacity_of(i, request)
            if cap >= 1:
                take = min(cap, remaining)
                chosen.append((i, take))
                remaining -= take
                if not remaining:
                    return chosen
    return None


def placement_names(index: ClusterIndex, allocations: Sequence[Allocation]) -> tuple[str, ...]:
    """Expand allocations into worker -> node name, worker order = allocation order."""
    names: list[str] = []
    for a in allocations:
        names.extend([index.nodes[a.node].name] * a.count)
    return tuple(names)
