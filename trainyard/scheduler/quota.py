"""The quota model: resource flavors, queues with nominal quotas, a tree of cohorts.

The design follows Kueue's (ClusterQueue, Cohort, ResourceFlavor), which ops teams
already know:

- A *flavor* is a named subset of nodes chosen by labels (one per GPU model, TPU type,
  or any node pool). Every node belongs to the first flavor whose labels it carries.
- A *queue* has, per flavor and resource (gpu, tpu, cpu, memory), a nominal quota, an
  optional borrowing limit (how far above nominal it may go by borrowing from its
  cohort) and an optional lending limit (how much of its unused nominal the cohort may
  lend to others; the rest stays reserved for it). The order of its flavors is the
  order in which a job tries them.
- *Cohorts* form a tree; a cohort may hold quota of its own, and have borrowing and
  lending limits towards its parent, exactly like a queue.

This module is data and arithmetic only: `QuotaConfig` is what a quota file parses
into (`quota_file`), `QuotaTree` is the per-(flavor, resource) accounting the cycle
asks "does this fit?" (`quota_gate`). Amounts are exact integers in the core's units:
milli-GPUs, TPU chips, millicores, bytes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

RESOURCES = ("gpu", "tpu", "cpu", "memory")
GPU, TPU, CPU, MEMORY = range(4)


class WithinQueue(enum.StrEnum):
    """Which jobs of its own queue a pending job may preempt."""

    NEVER = "never"
    LOWER_PRIORITY = "lower_priority"
    LOWER_OR_NEWER_EQUAL_PRIORITY = "lower_or_newer_equal_priority"


class ReclaimWithinCohort(enum.StrEnum):
    """Which jobs of borrowing queues a job may preempt to take back lent quota."""

    NEVER = "never"
    LOWER_PRIORITY = "lower_priority"
    ANY = "any"


class BorrowWithinCohort(enum.StrEnum):
    """Whether a job that must borrow may preempt other borrowers to do so."""

    NEVER = "never"
    LOWER_PRIORITY = "lower_priority"


@dataclass(frozen=True, slots=True)
class ResourceQuota:
    """One flavor-resource of a queue or cohort (core units)."""

    nominal: int = 0
    borrowing_limit: int | None = None  # None: may borrow all the cohort can lend
    lending_limit: int | None = None  # None: all unused nominal may be lent


FlavorQuotas = Mapping[str, Mapping[str, ResourceQuota]]  # flavor -> resource -> quota
_NO_QUOTAS: FlavorQuotas = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Flavor:
    """Nodes that carry every one of `node_labels` (empty: every node)."""

    name: str
    node_labels: Mapping[str, str] = field(default_factory=dict)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.node_labels.items())


@dataclass(frozen=True, slots=True)
class QueuePreemption:
    """Kueue's three preemption knobs for one queue."""

    within_queue: WithinQueue = WithinQueue.NEVER
    reclaim_within_cohort: ReclaimWithinCohort = ReclaimWithinCohort.NEVER
    borrow_within_cohort: BorrowWithinCohort = BorrowWithinCohort.NEVER
    borrow_max_priority: int | None = None  # victims at or below this priority only


@dataclass(frozen=True, slots=True)
class UserLimits:
    """Per-user limits inside one queue (None: unlimited)."""

    max_running_jobs: int | None = None
    max_gpus: int | None = None  # whole GPUs held at once


@dataclass(frozen=True, slots=True)
class QueueQuota:
    """A queue under quota; `quotas` keeps the flavors in the order jobs try them."""

    name: str
    cohort: str | None = None
    quotas: FlavorQuotas = field(default_factory=lambda: _NO_QUOTAS)
    weight: float = 1.0
    preemption: QueuePreemption = field(default_factory=QueuePreemption)
    user_limits: UserLimits = field(default_factory=UserLimits)
    policy: str | None = None  # the queue's scheduling policy, when the file sets one
    # Order the queue's users by their decayed usage (least first), before the policy's
    # own order; needs `FairSharing.usage_half_life` (the memory that decays).
    order_users_by_usage: bool = False


@dataclass(frozen=True, slots=True)
class Cohort:
    """A node of the cohort tree; its own quota is lendable to everything below it."""

    name: str
    parent: str | None = None
    quotas: FlavorQuotas = field(default_factory=lambda: _NO_QUOTAS)


@dataclass(frozen=True, slots=True)
class FairSharing:
    """Fair sharing among the queues of a cohort tree.

    `enabled`: borrowed capacity goes to the queue with the lowest weighted dominant
    resource share, and a borrower may preempt a queue with a strictly higher share.
    `usage_half_life` (seconds): order queues by their decayed past usage instead of
    their share now (a team that used a lot recently yields); None: no memory."""

    enabled: bool = False
    usage_half_life: float | None = None


@dataclass(frozen=True, slots=True, eq=False)
class QuotaConfig:
    """Everything a quota file says; an input of `schedule()` via `SchedulerConfig`."""

    flavors: tuple[Flavor, ...] = ()
    cohorts: tuple[Cohort, ...] = ()
    queues: tuple[QueueQuota, ...] = ()
    fair_sharing: FairSharing = field(default_factory=FairSharing)
    priority_classes: Mapping[str, int] = field(default_factory=dict)

    def queue(self, name: str) -> QueueQuota | None:
        for q in self.queues:
            if q.name == name:
                return q
        return None

    def user_ordered_queues(self) -> frozenset[str]:
        """The queues whose users are ordered by decayed usage."""
        if self.fair_sharing.usage_half_life is None:
            return frozenset()
        return frozenset(q.name for q in self.queues if q.order_users_by_usage)

    def flavor_of(self, labels: Mapping[str, str]) -> str:
        """The first flavor whose labels the node carries, or "" for none."""
        for flavor in self.flavors:
            if flavor.matches(labels):
                return flavor.name
        return ""


class QuotaTree:
    """Usage and availability per node of the tree and (flavor, resource).

    Tree nodes are queues and cohorts, numbered densely. For each node and
    flavor-resource `fr` (Kueue's resource_node arithmetic):

    - subtree quota = own nominal + what each child lends up (its subtree quota, capped
      by its lending limit);
    - guaranteed = the part of the subtree quota that is not lent (subtree - lending limit);
    - a node's usage counts in its parent only above its guaranteed part;
    - available = unused guaranteed + what the parent has available, capped by the
      borrowing limit (stored in the parent - used in the parent + borrowing limit).

    So a queue never exceeds nominal + borrowing limit, and its guaranteed part is
    never lent to anyone else.
    """

    def __init__(self, config: QuotaConfig) -> None:
        names: list[str] = [c.name for c in config.cohorts] + [q.name for q in config.queues]
        self.node_names = names
        self.node_of: dict[str, int] = {name: i for i, name in enumerate(names)}
        self.cohort_count = len(config.cohorts)
        frs: list[tuple[str, int]] = []
        for flavor in config.flavors:
            for r in range(len(RESOURCES)):
                frs.append((flavor.name, r))
        self.frs = frs
        self.fr_of: dict[tuple[str, int], int] = {fr: i for i, fr in enumerate(frs)}
        n, f = len(names), len(frs)
        self.parent: list[int] = [-1] * n
        self.children: list[list[int]] = [[] for _ in range(n)]
        self.nominal: list[list[int]] = [[0] * f for _ in range(n)]
        self.borrowing: list[list[int | None]] = [[None] * f for _ in range(n)]
        self.lending: list[list[int | None]] = [[None] * f for _ in range(n)]
        self.tracked: list[list[bool]] = [[False] * f for _ in range(n)]
        entries: list[tuple[str, str | None, FlavorQuotas]] = [
            (c.name, c.parent, c.quotas) for c in config.cohorts
        ] + [(q.name, q.cohort, q.quotas) for q in config.queues]
        for name, parent, quotas in entries:
            i = self.node_of[name]
            if parent is not None:
                self.parent[i] = self.node_of[parent]
                self.children[self.parent[i]].append(i)
            for flavor, per_resource in quotas.items():
                for resource, quota in per_resource.items():
                    k = self.fr_of[(flavor, RESOURCES.index(resource))]
                    self.nominal[i][k] = quota.nominal
                    self.borrowing[i][k] = quota.borrowing_limit
                    self.lending[i][k] = quota.lending_limit
                    self.tracked[i][k] = True
        self.subtree: list[list[int]] = [[0] * f for _ in range(n)]
        self.guaranteed: list[list[int]] = [[0] * f for _ in range(n)]
        for i in self._postorder():
            for k in range(f):
                sub = self.nominal[i][k] + sum(
                    self.subtree[c][k] - self.guaranteed[c][k] for c in self.children[i]
                )
                self.subtree[i][k] = sub
                lend = self.lending[i][k]
                self.guaranteed[i][k] = max(sub - lend, 0) if lend is not None else 0
        self.root: list[int] = [self._root_of(i) for i in range(n)]
        self.usage: list[list[int]] = [[0] * f for _ in range(n)]

    def _root_of(self, i: int) -> int:
        while self.parent[i] >= 0:
            i = self.parent[i]
        return i

    def _postorder(self) -> list[int]:
        order: list[int] = []
        seen: set[int] = set()

        def visit(i: int) -> None:
            seen.add(i)
            for c in self.children[i]:
                if c not in seen:
                    visit(c)
            order.append(i)

        for i in range(len(self.node_names)):
            if i not in seen and self.parent[i] < 0:
                visit(i)
        return order

    # ----------------------------------------------------------------- queries
    def available(self, i: int, k: int) -> int:
        """How much more of fr `k` node `i` may use now (its own and borrowed)."""
        usage = self.usage[i][k]
        parent = self.parent[i]
        if parent < 0:
            return self.subtree[i][k] - usage
        guaranteed = self.guaranteed[i][k]
        local = guaranteed - usage if usage < guaranteed else 0
        from_parent = self.available(parent, k)
        limit = self.borrowing[i][k]
        if limit is not None:
            stored = self.subtree[i][k] - guaranteed
            used_above = usage - guaranteed if usage > guaranteed else 0
            from_parent = min(stored - used_above + limit, from_parent)
        return local + (from_parent if from_parent > 0 else 0)

    def borrowed(self, i: int, k: int) -> int:
        """Usage above the node's own subtree quota (its nominal, for a queue)."""
        over = self.usage[i][k] - self.subtree[i][k]
        return over if over > 0 else 0

    # ----------------------------------------------------------------- updates
    def add(self, i: int, k: int, amount: int) -> None:
        """Charge (or, negative, uncharge) `amount` of fr `k` to node `i` and up."""
        while i >= 0:
            g = self.guaranteed[i][k]
            old = self.usage[i][k]
            new = old + amount
            self.usage[i][k] = new
            amount = (new - g if new > g else 0) - (old - g if old > g else 0)
            if not amount:
                return
            i = self.parent[i]
