"""Per queue, flavor and resource: nominal, used, borrowed, lent, pending demand and
share, for people.

What `GET /v1/queues`, `trainyard queues` and the quota metrics show, computed by the
same ledger the cycle admits with (so the numbers are the ones it decides on). Pure:
nodes and running jobs in, rows out. Amounts are in display units: GPUs, TPU chips,
CPU cores and bytes of memory.

`lent` is the part of the queue's unused nominal quota that other queues of its cohort
tree are using now: min(nominal - used, what the others borrow), an upper bound when
several queues lend at once.

`pending` is what the queue's waiting jobs ask for, each job counted once, in the first
of its queue's flavors whose nodes can hold it (the flavor the cycle tries first); a job
that no flavor of its queue can hold is in no row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trainyard.scheduler.api import build_running, flavored_pool_keys
from trainyard.scheduler.capacity import ClusterIndex
from trainyard.scheduler.filters import eligible_tiers
from trainyard.scheduler.quota import MEMORY, RESOURCES, QuotaConfig
from trainyard.scheduler.quota_gate import QuotaLedger
from trainyard.scheduler.types import DEFAULT_RACK_LABEL, Node, PendingJob, RunningJob

_UNIT = {0: 1000, 1: 1, 2: 1000, 3: 1}


@dataclass(frozen=True, slots=True)
class ResourceStatus:
    flavor: str
    resource: str  # gpu, tpu, cpu, memory
    nominal: float
    used: float
    borrowed: float
    lent: float
    borrowing_limit: float | None
    lending_limit: float | None
    pending: float = 0.0  # what waiting jobs ask for here (see the module docstring)


@dataclass(frozen=True, slots=True)
class QueueQuotaStatus:
    queue: str
    cohort: str | None
    weight: float
    weighted_share: float
    resources: tuple[ResourceStatus, ...]


def quota_status(
    config: QuotaConfig,
    nodes: Sequence[Node],
    running: Sequence[RunningJob],
    pending: Sequence[PendingJob] = (),
) -> list[QueueQuotaStatus]:
    """The quota state of every queue of `config`, in file order."""
    index = ClusterIndex(
        nodes, DEFAULT_RACK_LABEL, defer_buckets=True, pool_keys=flavored_pool_keys(nodes, config)
    )
    placed = build_running(index, tuple(running))
    index.build_buckets()
    ledger = QuotaLedger(config, index)
    for job in running:
        ledger.charge_placed(placed.by_id[job.id], user=job.user, submit_time=job.submit_time)
    tree = ledger.tree
    demand: dict[tuple[str, int], int] = {}  # (queue, flavor-resource id) -> amount
    for job in pending:
        if not ledger.manages(job.queue):
            continue
        tiers = eligible_tiers(index.pools, job.request, job.tolerations)
        options = ledger.flavor_options(job.queue, tiers)
        if options:
            node = ledger.node_of[job.queue]
            for k, amount in ledger.amounts(node, options[0][0], job.request, job.workers):
                demand[(job.queue, k)] = demand.get((job.queue, k), 0) + amount
    out: list[QueueQuotaStatus] = []
    for q in config.queues:
        node = ledger.node_of[q.name]
        members = ledger.members.get(tree.root[node], [])
        rows: list[ResourceStatus] = []
        for flavor, per in q.quotas.items():
            for resource, spec in per.items():
                r = RESOURCES.index(resource)
                k = tree.fr_of[(flavor, r)]
                unit = _UNIT[r] if r != MEMORY else 1
                used = tree.usage[node][k]
                others = sum(tree.borrowed(m, k) for m in members if m != node)
                unused = max(spec.nominal - used, 0)
                rows.append(
                    ResourceStatus(
                        flavor,
                        resource,
                        spec.nominal / unit,
                        used / unit,
                        tree.borrowed(node, k) / unit,
                        min(unused, others) / unit,
                        None if spec.borrowing_limit is None else spec.borrowing_limit / unit,
                        None if spec.lending_limit is None else spec.lending_limit / unit,
                        demand.get((q.name, k), 0) / unit,
                    )
                )
        out.append(QueueQuotaStatus(q.name, q.cohort, q.weight, ledger.share(q.name), tuple(rows)))
    return out
