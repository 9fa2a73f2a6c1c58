"""The free-capacity index: nodes grouped into pools and bucketed by free units.

Scanning every node for every job is what makes naive schedulers quadratic. Here each
*pool* (nodes with the same accelerator model, TPU type/topology and taints) keeps its
nodes in buckets keyed by how many accelerator units (GPUs or TPU chips) are free, both
cluster-wide and per topology leaf (zone, rack). "Which is the fullest node that still
takes 4 GPUs" is then a walk over at most G+1 buckets, and "can this zone hold 3 x 8
GPUs" is a sum over bucket sizes: O(buckets), not O(nodes).

The index is updated incrementally by `take` and `release`, so a cycle (or a whole
simulated replay) keeps it current without rebuilding. Every change goes through these
two methods, which is what makes a gang placement or a preemption a transaction: the
caller keeps the returned allocations and releases them to roll back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sortedcontainers import SortedList

from trainyard.scheduler.types import (
    TPU_ACCELERATOR_LABEL,
    TPU_TOPOLOGY_LABEL,
    ZONE_LABEL,
    Node,
    Taint,
    TaintEffect,
    WorkerRequest,
)

UNBOUNDED = 1 << 40
FULL_GPU_MILLI = 1000


class PoolKey(NamedTuple):
    """What makes nodes interchangeable for feasibility: accelerator, model, taints.

    A named tuple rather than a dataclass: indexing hashes one key per node, and a
    tuple hashes in C."""

    accelerator: str  # "gpu", "tpu" or "cpu"
    product: str
    tpu_type: str
    tpu_topology: str
    taints: tuple[Taint, ...]  # hard taints (NoSchedule, NoExecute)
    soft_taints: tuple[Taint, ...] = ()  # PreferNoSchedule: avoided, never excluded
    flavor: str = ""  # the quota resource flavor of its nodes ("" without quotas)


class Pool:
    """Nodes sharing one PoolKey, bucketed by free accelerator units."""

    __slots__ = (
        "buckets",
        "free_total",
        "id",
        "key",
        "leaf_buckets",
        "leaf_free",
        "max_units",
        "nodes",
        "partial_nodes",
    )

    def __init__(self, pool_id: int, key: PoolKey, max_units: int) -> None:
        self.id = pool_id
        self.key = key
        self.max_units = max_units
        self.nodes: list[int] = []
        self.buckets: list[SortedList] = [SortedList() for _ in range(max_units + 1)]
        self.leaf_buckets: dict[int, list[SortedList]] = {}
        self.partial_nodes: SortedList = SortedList()
        # Free units per topology leaf and in all: an O(1) upper bound that lets gang
        # placement skip domains (and busy clusters skip most) without summing buckets.
        self.leaf_free: dict[int, int] = {}
        self.free_total = 0


@dataclass(frozen=True, slots=True)
class Allocation:
    """`count` workers of `request` on node index `node`; shares record their GPU slot."""

    node: int
    count: int
    request: WorkerRequest
    share_slots: tuple[int, ...] = ()


def node_pool_key(node: Node) -> PoolKey:
    """The pool a node belongs to. Hard taints exclude jobs that do not tolerate them;
    PreferNoSchedule only marks the pool as a last resort."""
    soft = tuple(
        sorted(
            (t for t in node.taints if t.effect == TaintEffect.PREFER_NO_SCHEDULE),
            key=lambda t: (t.key, t.value),
        )
    )
    hard = tuple(
        sorted(
            (t for t in node.taints if t.effect != TaintEffect.PREFER_NO_SCHEDULE),
            key=lambda t: (t.key, t.value, t.effect.value),
        )
    )
    if node.gpus > 0:
        return PoolKey("gpu", node.gpu_product, "", "", hard, soft)
    if node.tpu_chips > 0:
        labels = node.labels
        return PoolKey(
            "tpu",
            "",
            labels.get(TPU_ACCELERATOR_LABEL, ""),
            labels.get(TPU_TOPOLOGY_LABEL, ""),
            hard,
            soft,
        )
    return PoolKey("cpu", "", "", "", hard, soft)


class ClusterIndex:
    """Mutable free capacity of the ready nodes of a snapshot.

    Node indices follow the order of the `nodes` argument, so two identical inputs give
    identical indices and therefore identical decisions.
    """

    def __init__(
        self,
        nodes: Sequence[Node],
        rack_label: str,
        *,
        defer_buckets: bool = False,
        pool_keys: Sequence[PoolKey] | None = None,
    ) -> None:
        """Index the ready nodes. With `defer_buckets`, `take` only updates the free
        arrays until `build_buckets()` is called: charging thousands of running jobs
        first and bucketing once is much cheaper than moving nodes between buckets.
        `pool_keys` (one per ready node) skips recomputing them: see `empty_copy`."""
        self.nodes: list[Node] = [n for n in nodes if n.ready]
        self.index_of: dict[str, int] = {n.name: i for i, n in enumerate(self.nodes)}
        n = len(self.nodes)
        self.free_cpu: list[int] = [0] * n
        self.free_mem: list[int] = [0] * n
        self.free_units: list[int] = [0] * n
        self.partial: list[dict[int, int] | None] = [None] * n
        self._next_slot: list[int] = [0] * n
        self.node_pool: list[Pool] = []
        self.node_leaf: list[int] = [0] * n
        self.pools: list[Pool] = []

        node_leaves = [
            (nd.labels.get(ZONE_LABEL, ""), nd.labels.get(rack_label, "")) for nd in self.nodes
        ]
        leaf_keys = sorted(set(node_leaves))
        self.leaf_ids: dict[tuple[str, str], int] = {k: i for i, k in enumerate(leaf_keys)}
        self.leaf_names: list[tuple[str, str]] = leaf_keys
        zones: dict[str, list[int]] = {}
        for (zone, _rack), leaf_id in self.leaf_ids.items():
            zones.setdefault(zone, []).append(leaf_id)
        self.zones: list[tuple[str, tuple[int, ...]]] = [
            (z, tuple(ids)) for z, ids in sorted(zones.items())
        ]
        self.has_racks = any(rack for _zone, rack in leaf_keys)

        if pool_keys is None:
            pool_keys = [node_pool_key(nd) for nd in self.nodes]
        keys = self.pool_keys = list(pool_keys)
        self._build_pools(keys)
        leaf_ids = self.leaf_ids
        for i, nd in enumerate(self.nodes):
            self.free_cpu[i] = nd.cpu_millicores - nd.used_cpu_millicores
            self.free_mem[i] = nd.memory_bytes - nd.used_memory_bytes
            self.free_units[i] = max(self._units_of(nd, keys[i]), 0)
            self.node_leaf[i] = leaf_ids[node_leaves[i]]
        self.total_gpus = sum(max(nd.gpus - nd.used_gpus, 0) for nd in self.nodes)
        self.version = 0  # bumped by every release: lets callers know capacity grew
        # Bumped by every take, release and restore: equal counts mean equal free
        # capacity, so results derived from it (reservation plans) may be kept.
        self.changes = 0
        self.empty_twin: ClusterIndex | None = None  # same nodes, nothing running (lazy)
        self.fits_empty_by_shape: dict[tuple, bool] = {}  # answers on empty_twin, by shape
        self.bucketed = False
        if not defer_buckets:
            self.build_buckets()

    def _build_pools(self, keys: list[PoolKey]) -> None:
        """One pool per distinct key, numbered in order of first appearance."""
        members: dict[PoolKey, list[int]] = {}
        for i, key in enumerate(keys):
            group = members.get(key)
            if group is None:
                members[key] = [i]
            else:
                group.append(i)
        node_pool: list[Pool] = [None] * len(keys)  # type: ignore[list-item]
        for key, nodes in members.items():
            units = max(0, *(self._units_of(self.nodes[i], key) for i in nodes))
            pool = Pool(len(self.pools), key, units)
            pool.nodes = nodes
            self.pools.append(pool)
            for i in nodes:
                node_pool[i] = pool
        self.node_pool = node_pool

    def build_buckets(self) -> None:
        """Put every node in the bucket of its current free units."""
        for pool in self.pools:
            # Bulk-build the buckets: nodes arrive in index order, so lists are sorted.
            flat: list[list[int]] = [[] for _ in range(pool.max_units + 1)]
            leaves: dict[int, list[list[int]]] = {}
            for i in pool.nodes:
                units = self.free_units[i]
                flat[units].append(i)
                leaf = leaves.get(self.node_leaf[i])
                if leaf is None:
                    leaf = leaves[self.node_leaf[i]] = [[] for _ in range(pool.max_units + 1)]
                leaf[units].append(i)
            pool.buckets = [SortedList(b) for b in flat]
            pool.leaf_buckets = {
                lid: [SortedList(b) for b in bs] for lid, bs in sorted(leaves.items())
            }
            pool.partial_nodes = SortedList(i for i in pool.nodes if self.partial[i])
            pool.leaf_free = dict.fromkeys(pool.leaf_buckets, 0)
            for i in pool.nodes:
                pool.leaf_free[self.node_leaf[i]] += self.free_units[i]
            pool.free_total = sum(pool.leaf_free.values())
        self.bucketed = True

    def empty_copy(self) -> ClusterIndex:
        """The same ready nodes with nothing of ours running, leaves by zone only.

        Answers "could this job ever fit" for pending reasons. It reuses this index's
        pool keys, the costliest part of indexing (sorting every node's taints)."""
        return ClusterIndex(self.nodes, "", pool_keys=self.pool_keys)

    @staticmethod
    def _units_of(node: Node, key: PoolKey) -> int:
        if key.accelerator == "gpu":
            return node.gpus - node.used_gpus
        if key.accelerator == "tpu":
            return node.tpu_chips - node.used_tpu_chips
        return 0

    # ----------------------------------------------------------------- queries
    def capacity_of(self, i: int, request: WorkerRequest) -> int:
        """How many more workers of `request` node `i` can take right now."""
        cap = UNBOUNDED
        if request.cpu_millicores:
            cap = self.free_cpu[i] // request.cpu_millicores
        if request.memory_bytes:
            cap = min(cap, self.free_mem[i] // request.memory_bytes)
        units = request.gpus or request.tpu_chips
        if units:
            cap = min(cap, self.free_units[i] // units)
        elif request.gpu_share_milli:
            share = request.gpu_share_milli
            slots = self.partial[i]
            fit = self.free_units[i] * (FULL_GPU_MILLI // share)
            if slots:
                fit += sum(free // share for free in slots.values())
            cap = min(cap, fit)
        return cap

    def free_gpu_milli(self, i: int) -> int:
        slots = self.partial[i]
        extra = sum(slots.values()) if slots else 0
        if self.node_pool[i].key.accelerator != "gpu":
            return 0
        return self.free_units[i] * FULL_GPU_MILLI + extra

    # ----------------------------------------------------------------- updates
    def _set_units(self, i: int, new: int) -> None:
        old = self.free_units[i]
        if old == new:
            return
        if new < 0:
            raise ValueError(f"node {self.nodes[i].name} over-committed on accelerators")
        if not self.bucketed:
            self.free_units[i] = new
            return
        pool = self.node_pool[i]
        pool.buckets[old].remove(i)
        pool.buckets[new].add(i)
        leaf_id = self.node_leaf[i]
        leaf = pool.leaf_buckets[leaf_id]
        leaf[old].remove(i)
        leaf[new].add(i)
        pool.leaf_free[leaf_id] += new - old
        pool.free_total += new - old
        self.free_units[i] = new

    def take(self, i: int, request: WorkerRequest, count: int) -> Allocation:
        """Allocate `count` workers on node `i`; raises if that would over-commit."""
        cpu = request.cpu_millicores * count
        mem = request.memory_bytes * count
        if cpu > self.free_cpu[i] or mem > self.free_mem[i]:
            raise ValueError(f"node {self.nodes[i].name} over-committed on cpu or memory")
        slots: tuple[int, ...] = ()
        units = (request.gpus or request.tpu_chips) * count
        if units:
            self._set_units(i, self.free_units[i] - units)
        elif request.gpu_share_milli:
            slots = tuple(self._take_share(i, request.gpu_share_milli) for _ in range(count))
        self.free_cpu[i] -= cpu
        self.free_mem[i] -= mem
        self.changes += 1
        return Allocation(i, count, request, slots)

    def _take_share(self, i: int, share: int) -> int:
        slots = self.partial[i]
        best = -1
        if slots:
            best_free = FULL_GPU_MILLI + 1
            for slot, free in slots.items():
                if share <= free < best_free:
                    best, best_free = slot, free
        if best >= 0:
            slots[best] -= share  # type: ignore[index]
            return best
        self._set_units(i, self.free_units[i] - 1)
        if slots is None:
            slots = self.partial[i] = {}
            if self.bucketed:
                self.node_pool[i].partial_nodes.add(i)
        slot = self._next_slot[i]
        self._next_slot[i] = slot + 1
        slots[slot] = FULL_GPU_MILLI - share
        return slot

    def restore(self, allocation: Allocation) -> Allocation:
        """Take back exactly what `release(allocation)` gave back: the same GPU-share
        slots, not a fresh best fit (which could land a share elsewhere and fragment the
        node so that shares released later no longer fit). The exact inverse of the
        latest releases, for undoing a trial (preemption's rollback)."""
        i, request, count = allocation.node, allocation.request, allocation.count
        cpu = request.cpu_millicores * count
        mem = request.memory_bytes * count
        if cpu > self.free_cpu[i] or mem > self.free_mem[i]:
            raise ValueError(f"node {self.nodes[i].name} over-committed on cpu or memory")
        units = (request.gpus or request.tpu_chips) * count
        if units:
            self._set_units(i, self.free_units[i] - units)
        for slot in allocation.share_slots:
            slots = self.partial[i]
            if slots is not None and slot in slots:
                slots[slot] -= request.gpu_share_milli
                continue
            # The release emptied the slot and gave its GPU back: take it again.
            self._set_units(i, self.free_units[i] - 1)
            if slots is None:
                slots = self.partial[i] = {}
                if self.bucketed:
                    self.node_pool[i].partial_nodes.add(i)
            slots[slot] = FULL_GPU_MILLI - request.gpu_share_milli
        self.free_cpu[i] -= cpu
        self.free_mem[i] -= mem
        self.changes += 1
        return allocation

    def release(self, allocation: Allocation) -> None:
        """Give back what `take` allocated."""
        i, request, count = allocation.node, allocation.request, allocation.count
        self.free_cpu[i] += request.cpu_millicores * count
        self.free_mem[i] += request.memory_bytes * count
        units = (request.gpus or request.tpu_chips) * count
        if units:
            self._set_units(i, self.free_units[i] + units)
        for slot in allocation.share_slots:
            slots = self.partial[i]
            assert slots is not None
            slots[slot] += request.gpu_share_milli
            if slots[slot] >= FULL_GPU_MILLI:
                del slots[slot]
                self._set_units(i, self.free_units[i] + 1)
                if not slots:
                    self.partial[i] = None
                    if self.bucketed:
                        self.node_pool[i].partial_nodes.remove(i)
        self.version += 1
        self.changes += 1

    def release_all(self, allocations: Iterable[Allocation]) -> None:
        for allocation in allocations:
            self.release(allocation)
