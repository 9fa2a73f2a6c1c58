"""The one-shot entry point the operator calls: snapshot in, decisions out.

`schedule` builds the capacity index, the running set and the ordered pending set from
a `ClusterSnapshot`, runs one cycle and returns plain `CycleResult` values. It never
mutates its inputs and reads no clock: `now` is an argument. Issuing the decisions
(binding pods, deleting victims) is the caller's separate step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from trainyard.scheduler.capacity import Allocation, ClusterIndex, PoolKey, node_pool_key
from trainyard.scheduler.cycle import TierCache, run_cycle
from trainyard.scheduler.ordering import OrderingContext
from trainyard.scheduler.placement import placement_names
from trainyard.scheduler.policies import Policy, SchedulerConfig
from trainyard.scheduler.queueing import PendingSet
from trainyard.scheduler.quota import QuotaConfig
from trainyard.scheduler.quota_gate import QuotaLedger
from trainyard.scheduler.running import Placed, RunningSet
from trainyard.scheduler.types import (
    Admission,
    ClusterSnapshot,
    CycleResult,
    Node,
    Outcome,
    Reservation,
    RunningJob,
)


def build_running(index: ClusterIndex, jobs: tuple[RunningJob, ...]) -> RunningSet:
    """Charge running jobs to the index. Workers on unknown or unready nodes are ignored
    (they hold nothing the core could give away); an over-committed node keeps the
    excess as negative free capacity instead of failing the whole cycle."""
    running = RunningSet()
    for job in jobs:
        per_node: dict[int, int] = {}
        for name in job.placement:
            i = index.index_of.get(name)
            if i is not None:
                per_node[i] = per_node.get(i, 0) + 1
        allocations: list[Allocation] = []
        for i, count in per_node.items():
            allocations.append(_charge(index, i, job, count))
        running.add(
            Placed(
                job.id,
                job.request,
                allocations,
                job.start_time,
                queue=job.queue,
                priority=job.priority,
                preemptible=job.preemptible,
                expected_end=job.expected_end,
                last_checkpoint=job.last_checkpoint,
                estimated_end=job.estimated_end,
                attained_before=job.attained_gpu_seconds,
            )
        )
    return running


def _charge(index: ClusterIndex, i: int, job: RunningJob, count: int) -> Allocation:
    request = job.request
    try:
        return index.take(i, request, count)
    except ValueError:
        # Over-committed snapshot (allocatable shrank, or a race): clamp accelerators at
        # zero free and let CPU/memory go negative so nothing else lands there.
        index.free_cpu[i] -= request.cpu_millicores * count
        index.free_mem[i] -= request.memory_bytes * count
        units = min((request.gpus or request.tpu_chips) * count, index.free_units[i])
        index._set_units(i, index.free_units[i] - units)
        return Allocation(i, 0, request)


def flavored_pool_keys(nodes: Sequence[Node], quotas: QuotaConfig) -> list[PoolKey]:
    """Pool keys of the ready nodes with their quota flavor, so that no pool straddles
    two flavors (the order and the nodes are those `ClusterIndex` keeps).

    A node's flavor depends only on the labels the flavors name, so it is looked up once
    per distinct set of their values (thousands of nodes, a handful of GPU models)."""
    label_keys = sorted({k for flavor in quotas.flavors for k in flavor.node_labels})
    known: dict[tuple[str | None, ...], str] = {}
    out: list[PoolKey] = []
    for n in nodes:
        if not n.ready:
            continue
        labels = n.labels
        values = tuple(labels.get(k) for k in label_keys)
        flavor = known.get(values)
        if flavor is None:
            flavor = known[values] = quotas.flavor_of(labels)
        out.append(node_pool_key(n)._replace(flavor=flavor))
    return out


def ordering_context(index: ClusterIndex, running: RunningSet, now: float) -> OrderingContext:
    """Usage-aware context: each queue's share of the cluster's GPUs in use now."""
    total = index.total_gpus
    shares: dict[str, float] = {}
    if total:
        for placed in running.by_id.values():
            gpus = placed.gpus
            shares[placed.queue] = shares.get(placed.queue, 0.0) + gpus / total
    return OrderingContext(now=now, total_gpus=total, queue_gpu_share=shares)


def schedule(
    snapshot: ClusterSnapshot,
    now: float,
    config: SchedulerConfig | None = None,
    *,
    policy_for: Callable[[str], Policy] | None = None,
    explain: bool = True,
) -> CycleResult:
    """Decide one scheduling cycle for `snapshot` at time `now`.

    Pure: it reads its arguments and returns decisions; it touches no global state
    (not even the garbage collector, which a caller sharing the process relies on).
    """
    config = config or SchedulerConfig()
    policy_for = policy_for or config.resolver()
    quotas = config.quotas
    index = ClusterIndex(
        snapshot.nodes,
        snapshot.rack_label,
        defer_buckets=True,
        pool_keys=flavored_pool_keys(snapshot.nodes, quotas) if quotas is not None else None,
    )
    running = build_running(index, snapshot.running)
    index.build_buckets()
    ledger = None
    if quotas is not None:
        ledger = QuotaLedger(quotas, index, snapshot.queue_usage, snapshot.user_usage)
        for job in snapshot.running:
            ledger.charge_placed(running.by_id[job.id], user=job.user, submit_time=job.submit_time)
    pending = PendingSet(
        policy_for,
        ordering_context(index, running, now),
        ledger.user_ordered if ledger is not None else frozenset(),
    )
    pending.extend(snapshot.pending)
    domain = "rack" if index.has_racks else "zone"
    out = run_cycle(
        index,
        pending,
        running,
        policy_for,
        now,
        tiers_for=TierCache(index),
        explain=explain,
        domain_name=domain,
        quota=ledger,
    )
    result = CycleResult(pending=out.reasons, examined=out.examined)
    if ledger is not None and quotas is not None and quotas.fair_sharing.usage_half_life:
        result.queue_usage = ledger.usage_shares()
        result.user_usage = ledger.user_usage_shares()
    for admitted in out.admitted:
        result.admissions.append(
            Admission(
                admitted.job.id,
                placement_names(index, admitted.allocations),
                tuple(v.job_id for v in admitted.victims),
                Outcome.FIT_WITH_PREEMPTION if admitted.victims else Outcome.FIT,
                admitted.backfilled,
            )
        )
    for plan in out.reservations:
        names: list[str] = []
        for node, count in plan.chosen or ():
            names.extend([index.nodes[node].name] * count)
        result.reservations.append(Reservation(plan.job.id, plan.start_time, tuple(names)))
    return result
