"""Quota admission and preemption for one cycle: the ledger and its two questions.

`QuotaLedger` charges every job of a queue under quota (running, or admitted during
the cycle) to its queue and flavor in a `QuotaTree`, and answers "does this job fit
its queue's quota in this flavor now?" together with placement: `quota_attempt` tries
the queue's flavors in order, each with the job's feasible pools cut down to that
flavor's nodes, so a gang that fits the quota but not the nodes is not admitted, and
neither is the reverse.

Preemption for quota (Kueue's rules, `QueuePreemption`), tried when nothing fits:

- *within the queue*: lower priority, or also equal priority submitted later;
- *reclaim*: when the job fits its queue's nominal quota, jobs of other queues of the
  same cohort tree that are borrowing (usage above nominal) in a resource the job
  needs, and that use it; `lower_priority` or `any`;
- *borrow*: when the job itself must borrow, borrowers of strictly lower priority (at
  or below a threshold);
- *fair sharing* (when enabled, and reclaim is not `never`): a borrower may take from
  a borrowing queue of no higher priority if its own share after admission is at most
  the victim queue's share after the eviction (Kueue's LessThanOrEqualToFinalShare)
  AND strictly below the victim queue's share before it (LessThanInitialShare): the
  first lets two equal tenants meet at equal shares, the second is what rules out
  a loop at that meeting point.

Victims are walked borrowing queues first (highest share first under fair sharing),
then lowest priority, then least work lost, and the set is then made minimal; quota
and nodes must both fit, or nothing is evicted.

No two jobs preempt each other in a loop. Say X (queue P) evicts Y (queue V), then
with nothing else changed Y evicts X. Every rule that lets Y be a victim of another
queue needs V borrowing, in a resource Y uses, before the eviction; so:
- Y cannot then *reclaim*: that needs V within nominal once Y is back, i.e. in the
  state where it was borrowing.
- if X reclaimed, P is within nominal with X in every resource X uses, so X is not a
  victim of another queue's *borrow* or *fair* preemption (both need P borrowing in
  a resource X uses).
- *borrow* needs prio(victim) < prio(preemptor) and *fair* prio(victim) <= it: a
  borrow eviction cannot be answered by a borrow or fair one, nor a fair by a borrow.
- *fair* then *fair*: with s the shares before and s' after the first eviction,
  s_P <= s'_P < s_V (the strict half of the rule), and the second would need
  s_V <= s_P (its preemptor V's share after admission, s_V, at most its victim
  queue P's share after the eviction, s_P).
- within one queue the rules follow a strict order (priority, then submit time and
  id), which cannot hold both ways.
(`test_quota_properties` replays cycles with nothing ending and checks that no pair
of jobs ever evicts each other and that evictions stop.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from trainyard.scheduler.capacity import Allocation, ClusterIndex
from trainyard.scheduler.fairshare import dominant_share, frs_by_resource, usage_share
from trainyard.scheduler.pinning import choose_preferring
from trainyard.scheduler.placement import Tier, choose_nodes
from trainyard.scheduler.quota import (
    CPU,
    GPU,
    MEMORY,
    RESOURCES,
    TPU,
    BorrowWithinCohort,
    QueueQuota,
    QuotaConfig,
    QuotaTree,
    ReclaimWithinCohort,
    WithinQueue,
)
from trainyard.scheduler.running import Placed, RunningSet
from trainyard.scheduler.types import PendingJob, QuotaShortfall, WorkerRequest

USER_LIMITS = frozenset({"user_jobs", "user_gpus"})  # shortfalls that hold one user only
_DISPLAY = {GPU: 1000, TPU: 1, CPU: 1000, MEMORY: 2**30}
_RESOURCE_LABEL = {GPU: "gpu", TPU: "tpu", CPU: "cpu", MEMORY: "memory Gi"}


@dataclass(slots=True)
class Charge:
    """What one job holds of its queue's quota (to give it back exactly)."""

    node: int  # the queue's node in the tree
    flavor: str
    amounts: tuple[tuple[int, int], ...]  # (flavor-resource id, amount)
    user: str
    gpu_milli: int
    priority: int
    submit_time: float


@dataclass(slots=True)
class QuotaAttempt:
    """The outcome of trying one job under quota."""

    flavor: str | None = None
    allocations: list[Allocation] | None = None
    victims: list[Placed] = field(default_factory=list)
    shortfall: QuotaShortfall | None = None  # set when quota, not nodes, held it


def amounts_of(request: WorkerRequest, workers: int) -> tuple[int, int, int, int]:
    """A gang's total demand per resource, in core units (milli-GPUs, chips, m, bytes)."""
    return (
        request.gpu_milli * workers,
        request.tpu_chips * workers,
        request.cpu_millicores * workers,
        request.memory_bytes * workers,
    )


class QuotaLedger:
    """Quota usage of the queues under quota, kept current through a cycle (and, in
    the simulator, across cycles)."""

    def __init__(
        self,
        config: QuotaConfig,
        index: ClusterIndex,
        history: Mapping[str, float] | None = None,
        user_history: Mapping[tuple[str, str], float] | None = None,
    ) -> None:
        self.config = config
        self.tree = QuotaTree(config)
        self.by_resource = frs_by_resource(self.tree)
        self.queues: dict[str, QueueQuota] = {q.name: q for q in config.queues}
        self.node_of = {q.name: self.tree.node_of[q.name] for q in config.queues}
        self.cohort_of = {q.name: q.cohort for q in config.queues}
        self.charges: dict[str, Charge] = {}
        # Charges by queue node, and the queues under each root: a preemption attempt
        # looks only at queues that can give up quota, not at every running job.
        self.jobs_of: dict[int, dict[str, Charge]] = {n: {} for n in self.node_of.values()}
        self.members: dict[int, list[int]] = {}
        self._shares: dict[str, float] = {}  # per queue, dropped when its usage changes
        for n in self.node_of.values():
            self.members.setdefault(self.tree.root[n], []).append(n)
        self.users: dict[tuple[str, str], list[int]] = {}  # (queue, user) -> [jobs, milli]
        self.version = 0  # bumped whenever quota is given back
        self.history: Mapping[str, float] = history or {}
        fair = config.fair_sharing
        self.ordered = fair.enabled
        self.use_history = fair.enabled and fair.usage_half_life is not None
        # Queues whose users are ordered by decayed usage, and that usage per (queue, user).
        self.user_ordered = config.user_ordered_queues()
        self.user_history: Mapping[tuple[str, str], float] = user_history or {}
        self.index = index
        self._options: dict[tuple[str, int], tuple[tuple[Tier, ...], list]] = {}

    def manages(self, queue: str) -> bool:
        return queue in self.queues

    # ----------------------------------------------------------------- charging
    def amounts(self, node: int, flavor: str, request: WorkerRequest, workers: int) -> tuple:
        tracked = self.tree.tracked[node]
        fr_of = self.tree.fr_of
        out = []
        for r, amount in enumerate(amounts_of(request, workers)):
            if amount:
                k = fr_of.get((flavor, r))
                if k is not None and tracked[k]:
                    out.append((k, amount))
        return tuple(out)

    def charge(
        self,
        job_id: str,
        queue: str,
        flavor: str,
        request: WorkerRequest,
        workers: int,
        *,
        user: str = "",
        priority: int = 0,
        submit_time: float = 0.0,
    ) -> None:
        node = self.node_of[queue]
        charge = Charge(
            node,
            flavor,
            self.amounts(node, flavor, request, workers),
            user,
            request.gpu_milli * workers,
            priority,
            submit_time,
        )
        self._apply(job_id, charge)

    def charge_placed(self, placed: Placed, *, user: str = "", submit_time: float = 0.0) -> None:
        """Charge a running job to the flavor of the nodes it runs on."""
        if placed.queue not in self.queues or not placed.allocations:
            return
        flavor = self.index.node_pool[placed.allocations[0].node].key.flavor
        self.charge(
            placed.job_id,
            placed.queue,
            flavor,
            placed.request,
            placed.workers,
            user=user,
            priority=placed.priority,
            submit_time=submit_time,
        )

    def _apply(self, job_id: str, charge: Charge) -> None:
        add = self.tree.add
        for k, amount in charge.amounts:
            add(charge.node, k, amount)
        self.charges[job_id] = charge
        self.jobs_of[charge.node][job_id] = charge
        self._shares.pop(self.tree.node_names[charge.node], None)
        key = (self.tree.node_names[charge.node], charge.user)
        held = self.users.get(key)
        if held is None:
            self.users[key] = [1, charge.gpu_milli]
        else:
            held[0] += 1
            held[1] += charge.gpu_milli

    def release(self, job_id: str) -> Charge | None:
        """Give back a job's quota (it ended or was evicted)."""
        charge = self.charges.pop(job_id, None)
        if charge is None:
            return None
        del self.jobs_of[charge.node][job_id]
        self._shares.pop(self.tree.node_names[charge.node], None)
        add = self.tree.add
        for k, amount in charge.amounts:
            add(charge.node, k, -amount)
        held = self.users[(self.tree.node_names[charge.node], charge.user)]
        held[0] -= 1
        held[1] -= charge.gpu_milli
        self.version += 1
        return charge

    def restore(self, job_id: str, charge: Charge) -> None:
        """Undo `release` (a preemption walk rolled back)."""
        self._apply(job_id, charge)

    # ----------------------------------------------------------------- questions
    def shortfall(self, queue: str, flavor: str, amounts: tuple) -> QuotaShortfall | None:
        """None when `amounts` fit the queue's quota in `flavor` now; else what is short."""
        tree = self.tree
        node = self.node_of[queue]
        for k, amount in amounts:
            if amount <= tree.available(node, k):
                continue
            r = tree.frs[k][1]
            unit = _DISPLAY[r]
            used = tree.usage[node][k]
            nominal = tree.nominal[node][k]
            limit = tree.borrowing[node][k]
            avail = tree.available(node, k)
            own_left = nominal - used if used < nominal else 0
            lendable = avail - own_left if avail > own_left else 0
            kind = "nominal"
            if limit is not None and used + amount > nominal + limit:
                kind = "borrowing_limit"
            elif used + amount <= nominal:
                kind = "lent"  # within its own quota, which the cohort is using
            return QuotaShortfall(
                kind,
                queue,
                flavor,
                RESOURCES[r] if r != MEMORY else "memory (GiB)",
                used / unit,
                nominal / unit,
                amount / unit,
                self.cohort_of[queue],
                lendable / unit,
                (limit or 0) / unit,
                reclaim=self.queues[queue].preemption.reclaim_within_cohort.value,
            )
        return None

    def user_shortfall(self, job: PendingJob) -> QuotaShortfall | None:
        limits = self.queues[job.queue].user_limits
        if limits.max_running_jobs is None and limits.max_gpus is None:
            return None
        jobs, milli = self.users.get((job.queue, job.user), (0, 0))
        if limits.max_running_jobs is not None and jobs + 1 > limits.max_running_jobs:
            return QuotaShortfall(
                "user_jobs", job.queue, used=jobs, limit=limits.max_running_jobs, user=job.user
            )
        want = job.request.gpu_milli * job.workers
        if limits.max_gpus is not None and want and milli + want > limits.max_gpus * 1000:
            return QuotaShortfall(
                "user_gpus", job.queue, used=milli / 1000, limit=limits.max_gpus, user=job.user
            )
        return None

    def within_nominal(self, node: int, amounts: tuple) -> bool:
        usage, nominal = self.tree.usage[node], self.tree.subtree[node]
        return all(usage[k] + amount <= nominal[k] for k, amount in amounts)

    def borrowing_in(self, node: int, ks: Sequence[int]) -> bool:
        usage, nominal = self.tree.usage[node], self.tree.subtree[node]
        return any(usage[k] > nominal[k] for k in ks)

    def share(self, queue: str) -> float:
        """Weighted dominant resource share now (0 when within nominal)."""
        known = self._shares.get(queue)
        if known is None:
            known = self._shares[queue] = dominant_share(
                self.tree, self.by_resource, self.node_of[queue], self.queues[queue].weight
            )
        return known

    def share_with(self, queue: str, amounts: tuple) -> float:
        """The share the queue would have with `amounts` more charged."""
        node = self.node_of[queue]
        add = self.tree.add
        for k, amount in amounts:
            add(node, k, amount)
        try:
            return dominant_share(self.tree, self.by_resource, node, self.queues[queue].weight)
        finally:
            for k, amount in amounts:
                add(node, k, -amount)

    def order_key(self, queue: str) -> float:
        """How far back a queue's jobs go in the merged order (0 = not held back): its
        share now, or with a usage half-life its decayed past usage over its weight."""
        q = self.queues.get(queue)
        if q is None:
            return 0.0
        if self.use_history:
            used = self.history.get(queue, 0.0)
            if not used:
                return 0.0
            return used / q.weight if q.weight > 0 else math.inf
        return self.share(queue)

    def user_order_key(self, queue: str, user: str | None) -> float:
        """How far back a user's jobs go within a queue that orders users (0 = first)."""
        if queue not in self.user_ordered:
            return 0.0
        return self.user_history.get((queue, user or ""), 0.0)

    def user_usage_shares(self) -> dict[tuple[str, str], float]:
        """Per (queue, user) of the queues that order users: what the user's running jobs
        hold over the tree's total quota, maximised over resources (as `usage_shares`)."""
        if not self.user_ordered:
            return {}
        tree = self.tree
        held: dict[tuple[str, str], list[int]] = {}
        for charge in self.charges.values():
            queue = tree.node_names[charge.node]
            if queue not in self.user_ordered:
                continue
            per = held.setdefault((queue, charge.user), [0] * len(tree.frs))
            for k, amount in charge.amounts:
                per[k] += amount
        out: dict[tuple[str, str], float] = {}
        for (queue, user), per in held.items():
            total = tree.subtree[tree.root[self.node_of[queue]]]
            best = 0.0
            for ks in self.by_resource:
                used = sum(per[k] for k in ks)
                cap = sum(total[k] for k in ks)
                if used and cap:
                    best = max(best, used / cap)
            out[(queue, user)] = best
        return out

    def usage_shares(self) -> dict[str, float]:
        """Each queue's usage over its tree's total quota (what the history integrates)."""
        return {
            name: usage_share(self.tree, self.by_resource, node)
            for name, node in self.node_of.items()
        }

    def flavor_options(self, queue: str, tiers: tuple[Tier, ...]) -> list[tuple[str, tuple]]:
        """The queue's flavors in order, each with `tiers` cut down to its nodes."""
        key = (queue, id(tiers))
        known = self._options.get(key)
        if known is not None and known[0] is tiers:
            return known[1]
        options: list[tuple[str, tuple]] = []
        for flavor in self.queues[queue].quotas:
            cut: list[Tier] = []
            for tier in tiers:
                pools = tuple(p for p in tier if p.key.flavor == flavor)
                if pools and (not cut or len(pools) > len(cut[-1])):
                    cut.append(pools)
            if cut:
                options.append((flavor, tuple(cut)))
        self._options[key] = (tiers, options)
        return options


# --------------------------------------------------------------------- the attempt
def quota_attempt(
    ledger: QuotaLedger,
    index: ClusterIndex,
    running: RunningSet,
    job: PendingJob,
    tiers: tuple[Tier, ...],
    now: float,
    protected: set[str],
    *,
    place_failed: dict[tuple[int, str], int],
    shape: int,
    preempt: bool,
) -> QuotaAttempt:
    """Admit `job` in the first flavor whose quota and nodes both hold it, else (when
    `preempt`) evict for it by the queue's rules, else say why it waits."""
    user = ledger.user_shortfall(job)
    if user is not None:
        return QuotaAttempt(shortfall=user)
    options = ledger.flavor_options(job.queue, tiers)
    if not options:
        return QuotaAttempt(shortfall=QuotaShortfall("no_flavor", job.queue))
    node = ledger.node_of[job.queue]
    first_short: QuotaShortfall | None = None
    nodes_short = False
    version = index.version
    for flavor, cut in options:
        amounts = ledger.amounts(node, flavor, job.request, job.workers)
        short = ledger.shortfall(job.queue, flavor, amounts)
        if short is not None:
            first_short = first_short or short
            continue
        nodes_short = True
        if place_failed.get((shape, flavor)) == version:
            continue
        if job.preferred_node is None and not job.avoid_nodes:
            chosen = _choose(index, cut, job)
        else:
            chosen = choose_preferring(index, cut, job)
        if chosen is not None:
            allocations = [index.take(i, job.request, count) for i, count in chosen]
            return QuotaAttempt(flavor, allocations)
        place_failed[(shape, flavor)] = version
    if preempt:
        for flavor, cut in options:
            got = _preempt_for(ledger, index, running, job, flavor, cut, now, protected)
            if got is not None:
                return got
    return QuotaAttempt(shortfall=None if nodes_short else first_short)


def _choose(index: ClusterIndex, tiers: Sequence[Tier], job: PendingJob) -> list | None:
    for tier in tiers:
        chosen = choose_nodes(index, tier, job.request, job.workers, job.kind)
        if chosen is not None:
            return chosen
    return None


@dataclass(slots=True)
class _Candidate:
    placed: Placed
    charge: Charge
    own_queue: bool
    fair_only: bool  # allowed only by the fair-sharing rule (checked at eviction time)


def _preempt_for(
    ledger: QuotaLedger,
    index: ClusterIndex,
    running: RunningSet,
    job: PendingJob,
    flavor: str,
    tiers: tuple[Tier, ...],
    now: float,
    protected: set[str],
) -> QuotaAttempt | None:
    queue = ledger.queues[job.queue]
    rules = queue.preemption
    tree = ledger.tree
    node = ledger.node_of[job.queue]
    amounts = ledger.amounts(node, flavor, job.request, job.workers)
    need = {k for k, _a in amounts}
    reclaim_mode = ledger.within_nominal(node, amounts)
    fair = ledger.config.fair_sharing.enabled and (
        rules.reclaim_within_cohort != ReclaimWithinCohort.NEVER
    )
    share_after = ledger.share_with(job.queue, amounts) if fair and not reclaim_mode else 0.0
    root = tree.root[node]
    need_list = sorted(need)
    by_id = running.by_id
    candidates: list[tuple[tuple, _Candidate]] = []
    if rules.within_queue != WithinQueue.NEVER:
        for job_id, charge in ledger.jobs_of[node].items():
            placed = by_id.get(job_id)
            if (
                placed is None
                or not placed.preemptible
                or job_id in protected
                or charge.flavor != flavor
                or not _within_ok(rules.within_queue, job, placed, charge)
            ):
                continue
            key = (1, 0.0, placed.priority, placed.lost_gpu_seconds(now), job_id)
            candidates.append((key, _Candidate(placed, charge, True, False)))
    others_possible = (
        rules.reclaim_within_cohort != ReclaimWithinCohort.NEVER
        if reclaim_mode
        else (rules.borrow_within_cohort != BorrowWithinCohort.NEVER or fair)
    )
    for other in ledger.members.get(root, ()) if others_possible else ():
        if other == node or not ledger.borrowing_in(other, need_list):
            continue  # only queues above their nominal quota give anything back
        other_share = ledger.share(tree.node_names[other]) if fair else 0.0
        fair_possible = fair and not reclaim_mode and share_after < other_share
        if (
            not reclaim_mode
            and not fair_possible
            and (rules.borrow_within_cohort == BorrowWithinCohort.NEVER)
        ):
            continue
        for job_id, charge in ledger.jobs_of[other].items():
            placed = by_id.get(job_id)
            if (
                placed is None
                or not placed.preemptible
                or job_id in protected
                or charge.flavor != flavor
                or not need.intersection(k for k, _a in charge.amounts)
            ):
                continue
            allowed, fair_only = _other_queue_ok(rules, fair_possible, reclaim_mode, job, placed)
            if allowed:
                key = (0, -other_share, placed.priority, placed.lost_gpu_seconds(now), job_id)
                candidates.append((key, _Candidate(placed, charge, False, fair_only)))
    if not candidates:
        return None
    candidates.sort(key=lambda c: c[0])
    removed: list[_Candidate] = []
    chosen = None
    start_version = index.version
    for _key, cand in candidates:
        placed, charge = cand.placed, cand.charge
        if not cand.own_queue:
            shared = [k for k, _a in charge.amounts if k in need]
            if not ledger.borrowing_in(charge.node, shared):
                continue  # no longer above its nominal: not a reclaim victim
        victim_queue = tree.node_names[charge.node]
        before = ledger.share(victim_queue) if cand.fair_only else 0.0
        ledger.release(placed.job_id)
        if cand.fair_only and not (
            share_after <= ledger.share(victim_queue) and share_after < before
        ):
            ledger.restore(placed.job_id, charge)
            continue
        index.release_all(placed.allocations)
        removed.append(cand)
        if ledger.shortfall(job.queue, flavor, amounts) is None:
            chosen = _choose(index, tiers, job)
            if chosen is not None:
                break
    if chosen is None:
        for cand in reversed(removed):
            _put_back(index, ledger, cand)
        index.version = start_version
        return None
    needed = [removed[-1]]
    for cand in reversed(removed[:-1]):
        _put_back(index, ledger, cand)
        fit = None
        if ledger.shortfall(job.queue, flavor, amounts) is None:
            fit = _choose(index, tiers, job)
        if fit is None:
            ledger.release(cand.placed.job_id)
            index.release_all(cand.placed.allocations)
            needed.append(cand)
        else:
            chosen = fit
    allocations = [index.take(i, job.request, count) for i, count in chosen]
    victims = [c.placed for c in needed]
    for victim in victims:
        running.remove(victim.job_id)
    victims.sort(key=lambda p: (p.priority, p.lost_gpu_seconds(now), p.job_id))
    return QuotaAttempt(flavor, allocations, victims)


def _put_back(index: ClusterIndex, ledger: QuotaLedger, cand: _Candidate) -> None:
    placed = cand.placed
    placed.allocations = [index.take(a.node, a.request, a.count) for a in placed.allocations]
    ledger.restore(placed.job_id, cand.charge)


def _within_ok(rule: WithinQueue, job: PendingJob, placed: Placed, charge: Charge) -> bool:
    if rule == WithinQueue.NEVER:
        return False
    if placed.priority < job.priority:
        return True
    if rule == WithinQueue.LOWER_OR_NEWER_EQUAL_PRIORITY and placed.priority == job.priority:
        return (charge.submit_time, placed.job_id) > (job.submit_time, job.id)
    return False


def _other_queue_ok(
    rules, fair: bool, reclaim_mode: bool, job: PendingJob, placed: Placed
) -> tuple[bool, bool]:
    """(allowed at all, allowed only if the fair-share test passes at eviction time)."""
    vp, jp = placed.priority, job.priority
    reclaim = rules.reclaim_within_cohort
    if reclaim_mode:
        if reclaim == ReclaimWithinCohort.ANY:
            return True, False
        if reclaim == ReclaimWithinCohort.LOWER_PRIORITY and vp < jp:
            return True, False
        return False, False
    if rules.borrow_within_cohort == BorrowWithinCohort.LOWER_PRIORITY and vp < jp:
        threshold = rules.borrow_max_priority
        if threshold is None or vp <= threshold:
            return True, False
    if fair:
        ok = vp < jp if reclaim == ReclaimWithinCohort.LOWER_PRIORITY else vp <= jp
        return ok, ok
    return False, False
