"""Policies are named compositions of parts, found in a registry by name.

A policy says how a queue is ordered, what a blocked head does (block the queue or be
skipped), whether the top blocked job gets an EASY-backfill reservation, and whether a
job may preempt lower-priority work. Each of those parts lives in its own module; this
one only wires them, so a new policy is a few lines here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from trainyard.scheduler.las import LasOrder, LasRank, LasSettings
from trainyard.scheduler.ordering import (
    FifoOrder,
    MultifactorOrder,
    MultifactorWeights,
    PriorityAgingOrder,
    QueueOrdering,
)
from trainyard.scheduler.preemption import PreemptionRank
from trainyard.scheduler.quota import QuotaConfig
from trainyard.scheduler.shortest import RemainingWorkRank, ShortestFirstOrder


@dataclass(frozen=True, slots=True)
class Policy:
    """One scheduling policy.

    - `blocking`: strict head-of-line: a head that does not fit blocks its queue.
    - `backfill`: a queue's highest-ranked blocked job gets a reservation at the earliest
      time it fits; later jobs of that queue start only if they end by then.
    - `preemption`: a job may evict preemptible jobs of strictly lower priority.
    - `backfill_depth`: how many jobs one cycle tries after the reservation is set
      behind a reserved head, per queue (Slurm's bf_max_job_test): bounds the work of a
      cycle on very long queues (500 is Slurm's default).
    - `preemption_rank`: who may evict whom when it is not `priority` (LAS, SRTF).
    - `estimates`: backfill plans with `estimated_runtime` instead of the runtime limit
      (planning only: nothing is ever stopped for outliving an estimate).
    - `oracle`: needs the true future (simulator only; the live configuration refuses it).
    """

    name: str
    ordering: QueueOrdering
    blocking: bool = False
    backfill: bool = False
    preemption: bool = False
    backfill_depth: int = 500
    preemption_rank: PreemptionRank | None = None
    estimates: bool = False
    oracle: bool = False


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """Tunables shared by the registry's factories (from config or the CLI)."""

    aging_per_hour: float = 1.0
    multifactor: MultifactorWeights = field(default_factory=MultifactorWeights)
    backfill_depth: int = 500
    las: LasSettings = field(default_factory=LasSettings)
    # `predicted`'s aging guard: GPU-seconds of predicted work forgiven per second waited.
    predicted_aging: float = 0.5
    backfill_estimates: bool = False  # `backfill` plans with learned estimates


PolicyFactory = Callable[[PolicySettings], Policy]

REGISTRY: dict[str, PolicyFactory] = {
    "fifo": lambda s: Policy("fifo", FifoOrder(), blocking=True),
    "fifo-besteffort": lambda s: Policy("fifo-besteffort", FifoOrder()),
    "priority": lambda s: Policy("priority", PriorityAgingOrder(s.aging_per_hour), preemption=True),
    "backfill": lambda s: Policy(
        "backfill",
        PriorityAgingOrder(s.aging_per_hour),
        backfill=True,
        backfill_depth=s.backfill_depth,
        estimates=s.backfill_estimates,
    ),
    "multifactor": lambda s: Policy(
        "multifactor", MultifactorOrder(s.multifactor), preemption=True
    ),
    "las": lambda s: Policy(
        "las",
        LasOrder(s.las, refresh_interval=300.0 if s.las.starvation_seconds else None),
        preemption=True,
        preemption_rank=LasRank(s.las),
    ),
    "predicted": lambda s: Policy(
        "predicted", ShortestFirstOrder("predicted", aging=s.predicted_aging)
    ),
    "sjf-oracle": lambda s: Policy("sjf-oracle", ShortestFirstOrder("sjf-oracle"), oracle=True),
    "srtf-oracle": lambda s: Policy(
        "srtf-oracle",
        ShortestFirstOrder("srtf-oracle"),
        preemption=True,
        preemption_rank=RemainingWorkRank(),
        oracle=True,
    ),
}

ORACLE_POLICIES = frozenset(
    name for name, make in REGISTRY.items() if make(PolicySettings()).oracle
)


def policy_names() -> list[str]:
    return list(REGISTRY)


def live_policy_names() -> list[str]:
    """Policies a running control plane may use: all but the oracles (they need the future)."""
    return [name for name in REGISTRY if name not in ORACLE_POLICIES]


def check_live_policy(name: str) -> str:
    """`name` if the live configuration may use it, else ValueError saying why."""
    if name in ORACLE_POLICIES:
        raise ValueError(
            f"policy {name!r} is an oracle: it reads the true future runtimes, so it exists "
            f"only in the simulator; live policies: {', '.join(live_policy_names())}"
        )
    if name not in REGISTRY:
        raise ValueError(
            f"unknown policy {name!r}; known policies: {', '.join(live_policy_names())}"
        )
    return name


def get_policy(name: str, settings: PolicySettings | None = None) -> Policy:
    """Build the named policy; unknown names list the known ones."""
    factory = REGISTRY.get(name)
    if factory is None:
        raise ValueError(f"unknown policy {name!r}; known policies: {', '.join(REGISTRY)}")
    return factory(settings or PolicySettings())


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Deployment-wide policy plus per-queue overrides.

    A queue's policy decides how its own jobs rank, whether its blocked head blocks it,
    and whether its jobs may reserve or preempt; queues are interleaved by rank key.
    """

    default_policy: str = "backfill"
    queue_policies: Mapping[str, str] = field(default_factory=dict)
    settings: PolicySettings = field(default_factory=PolicySettings)
    # Quotas, cohorts and fair sharing (scheduler.quota); None: no queue is under quota.
    quotas: QuotaConfig | None = None

    def resolver(self) -> Callable[[str], Policy]:
        """A queue-name -> Policy function with each policy built once.

        A queue's policy from the quota file applies unless `queue_policies` names one."""
        default = get_policy(self.default_policy, self.settings)
        names = dict(self.queue_policies)
        if self.quotas is not None:
            for q in self.quotas.queues:
                if q.policy is not None:
                    names.setdefault(q.name, q.policy)
        per_queue = {q: get_policy(n, self.settings) for q, n in names.items()}

        def policy_for(queue: str) -> Policy:
            return per_queue.get(queue, default)

        return policy_for
