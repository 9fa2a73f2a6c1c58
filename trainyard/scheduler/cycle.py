"""One scheduling cycle over live structures: the allocate, preempt and backfill actions.

The cycle reads as phases:

1. walk pending jobs in global rank order (a k-way merge over lanes, see queueing);
2. for each job: skip it if its queue is blocked (strict FIFO) or its shape already
   failed this cycle; behind a backfill queue's reserved head, let it through only if
   it ends before the reservation (EASY's shadow-time rule); then try a gang placement
   (filters -> placement);
3. on failure: try preemption if the job's policy allows it; then block the queue
   (strict policies) or, for a backfill policy, make the job its queue's reserved head;
4. record admissions (the caller issues them) and, when asked, a reason for every job
   left pending.

Everything here is deterministic: iteration follows rank keys, lane numbers and node
indices, never hash order. The structures (index, pending set, running set) are
updated in place so the simulator can keep them across cycles; `schedule()` in
`trainyard.scheduler.api` wraps this for one-shot use.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from trainyard.scheduler.capacity import Allocation, ClusterIndex
from trainyard.scheduler.filters import eligible_tiers
from trainyard.scheduler.pinning import place_preferring
from trainyard.scheduler.placement import Tier, choose_nodes, place
from trainyard.scheduler.policies import Policy
from trainyard.scheduler.preemption import VictimPool, try_preempt
from trainyard.scheduler.queueing import Lane, PendingSet
from trainyard.scheduler.quota_gate import USER_LIMITS, QuotaLedger, quota_attempt
from trainyard.scheduler.reservation import ReservationCache, ReservationPlan
from trainyard.scheduler.running import Placed, RunningSet
from trainyard.scheduler.types import (
    CapacityView,
    Outcome,
    PendingJob,
    PendingReason,
    ReasonCode,
    Toleration,
    WorkerRequest,
)


@dataclass(slots=True)
class Admitted:
    """A job the cycle started, with its allocations and any jobs it evicted."""

    job: PendingJob
    allocations: list[Allocation]
    victims: list[Placed] = field(default_factory=list)
    backfilled: bool = False

    @property
    def outcome(self) -> Outcome:
        return Outcome.FIT_WITH_PREEMPTION if self.victims else Outcome.FIT


@dataclass(slots=True)
class CycleOutcome:
    admitted: list[Admitted] = field(default_factory=list)
    reservations: list[ReservationPlan] = field(default_factory=list)
    reasons: dict[str, PendingReason] = field(default_factory=dict)
    examined: int = 0


class TierCache:
    """Feasibility filters evaluated once per (request, tolerations) per index."""

    def __init__(self, index: ClusterIndex) -> None:
        self.index = index
        self.cache: dict[tuple[WorkerRequest, tuple[Toleration, ...]], tuple[Tier, ...]] = {}

    def __call__(self, job: PendingJob) -> tuple[Tier, ...]:
        key = (job.request, job.tolerations)
        tiers = self.cache.get(key)
        if tiers is None:
            tiers = eligible_tiers(self.index.pools, job.request, job.tolerations)
            self.cache[key] = tiers
        return tiers


def run_cycle(
    index: ClusterIndex,
    pending: PendingSet,
    running: RunningSet,
    policy_for: Callable[[str], Policy],
    now: float,
    *,
    tiers_for: TierCache | None = None,
    explain: bool = False,
    domain_name: str = "zone",
    quota: QuotaLedger | None = None,
    reservations: ReservationCache | None = None,
) -> CycleOutcome:
    """Decide one cycle; admitted jobs move from `pending` to `running`, victims leave
    `running` (the caller puts them back in the queue with their original submit time).

    With a `quota` ledger, jobs of the queues it manages are admitted by quota (see
    quota_gate) and, under fair sharing, a queue's jobs are held back in the merged
    order by its share (`order_key`), re-read whenever the queue comes up. A caller
    that keeps the structures across cycles may keep `reservations` too (see
    ReservationCache); a cache made for other structures is not used."""
    tiers_for = tiers_for or TierCache(index)
    if (
        reservations is None
        or reservations.index is not index
        or reservations.running is not running
    ):
        reservations = ReservationCache(index, running)
    out = CycleOutcome()
    blocked: dict[str, str] = {}  # strict queue -> id of its blocked head
    reserved: dict[str, PendingJob] = {}  # backfill queue -> its highest-ranked blocked job
    plans: dict[str, ReservationPlan | None] = {}  # computed lazily, once per cycle
    failed: dict[int, int] = {}  # shape id -> index.version when it last failed to fit
    failed_preempt: dict[tuple[int, int], int] = {}
    lane_reason: dict[int, PendingReason] = {}
    job_reason: dict[str, PendingReason] = {}
    backfill_budget: dict[str, int] = {}
    lane_tiers: dict[int, tuple[Tier, ...]] = {}  # lane number -> feasible pools (cheap key)
    admitted_now: set[str] = set()  # a cycle never preempts its own admissions
    victim_pool = VictimPool(running, now)
    order = quota.order_key if quota is not None and quota.ordered else None
    # Users of a queue in order of decayed usage (their lanes are per user): keys become
    # (queue order, user order, rank key), the user order fixed for the cycle.
    user_order = quota.user_order_key if quota is not None and quota.user_ordered else None
    if user_order is not None and order is None:
        order = _no_queue_order
    quota_failed: dict[tuple[int, str], int] = {}  # (shape id, flavor) -> index.version
    quota_preempt_failed: dict[tuple, tuple[int, int]] = {}
    ranked_pools: dict[int, VictimPool] = {}  # id(policy rank) -> pool ordered by that rank
    ranked_failed: dict[int, tuple[int, float]] = {}  # shape id -> (version, rank) that failed
    # Heap entries: (rank key, lane number, job, the lane's iterator past that job), the
    # key prefixed by the queue's fair-share order when quotas order queues. Keys end
    # with the job id, so they never tie and the rest is never compared. Iterating a
    # SortedList is far cheaper than indexing it; lanes are not changed until the walk
    # is over (admitted jobs leave `pending` at the end).
    heap: list[tuple[object, int, PendingJob, Iterator[tuple[object, PendingJob]], Lane]] = []
    for active in pending.active_lanes():
        entries = pending.ranked(active)
        first_key, first_job = next(entries)
        if user_order is not None:
            key = (order(active.queue), user_order(active.queue, active.user), first_key)
        elif order is not None:
            key = (order(active.queue), first_key)
        else:
            key = first_key
        heap.append((key, active.number, first_job, entries, active))
    heapq.heapify(heap)

    def reason(code: ReasonCode, job: PendingJob, **extra: object) -> PendingReason:
        return PendingReason(code, job.workers, job.request, domain_name, **extra)  # type: ignore[arg-type]

    while heap:
        _key, number, job, rest, lane = heapq.heappop(heap)
        queue = lane.queue
        if order is not None:
            fresh = order(queue)
            if fresh > _key[0]:  # type: ignore[index]
                # The queue's share grew since this entry was pushed: re-rank it.
                heapq.heappush(heap, ((fresh, *_key[1:]), number, job, rest, lane))  # type: ignore[index]
                continue
        if queue in blocked:
            if explain:
                lane_reason[number] = reason(
                    ReasonCode.BEHIND_QUEUE_HEAD, job, blocking_job=blocked[queue]
                )
            continue
        policy = policy_for(queue)
        shape = lane.shape_id
        version = index.version
        head = reserved.get(queue)
        if head is not None:
            # Behind a reserved head: EASY's shadow-time rule, within a work budget.
            budget = backfill_budget.get(queue, policy.backfill_depth)
            if budget <= 0:
                continue
            backfill_budget[queue] = budget - 1
            if failed.get(shape) == version:
                if explain:
                    lane_reason[number] = _capacity_reason(index, tiers_for(job), job, reason)
                continue  # drops the lane: nothing of this shape fits now
            if queue not in plans:
                plans[queue] = reservations.plan(
                    queue, head, tiers_for(head), now, want_nodes=explain
                )
            plan = plans[queue]
            if plan is not None and not plan.ends_in_time(job, now, policy.estimates):
                if explain:
                    job_reason[job.id] = reason(
                        ReasonCode.WOULD_DELAY_RESERVATION,
                        job,
                        blocking_job=head.id,
                        reservation_time=plan.start_time,
                    )
                _advance(heap, lane, rest, order, user_order)
                continue
        out.examined += 1
        tiers = lane_tiers.get(number)
        if tiers is None:
            tiers = lane_tiers[number] = tiers_for(job)
        if quota is not None and quota.manages(queue):
            # Admitted by quota: flavor by flavor, quota and nodes together.
            cache_key = (shape, queue, job.priority)
            versions = (version, quota.version)
            may_preempt = quota_preempt_failed.get(cache_key) != versions
            got = quota_attempt(
                quota,
                index,
                running,
                job,
                tiers,
                now,
                admitted_now,
                place_failed=quota_failed,
                shape=shape,
                preempt=may_preempt,
            )
            if got.allocations is not None and got.flavor is not None:
                _admit(
                    out,
                    running,
                    job,
                    got.allocations,
                    got.victims,
                    now,
                    policy,
                    backfilled=head is not None and not got.victims,
                )
                quota.charge(
                    job.id,
                    queue,
                    got.flavor,
                    job.request,
                    job.workers,
                    user=job.user,
                    priority=job.priority,
                    submit_time=job.submit_time,
                )
                admitted_now.add(job.id)
                _advance(heap, lane, rest, order, user_order)
                continue
            if may_preempt:
                quota_preempt_failed[cache_key] = (index.version, quota.version)
            if got.shortfall is not None and got.shortfall.kind in USER_LIMITS:
                # A per-user limit holds this job only: the lane's next job may be
                # another user's, so the lane goes on.
                if explain:
                    job_reason[job.id] = reason(ReasonCode.QUOTA, job, quota=got.shortfall)
                _advance(heap, lane, rest, order, user_order)
                continue
            if policy.blocking:
                blocked[queue] = job.id
            elif policy.backfill and head is None and tiers and got.shortfall is None:
                reserved[queue] = job
            if explain:
                if got.shortfall is not None:
                    lane_reason[number] = reason(ReasonCode.QUOTA, job, quota=got.shortfall)
                else:
                    lane_reason[number] = _capacity_reason(index, tiers, job, reason)
            continue
        allocations = None
        if tiers and failed.get(shape) != version:
            if job.preferred_node is None and not job.avoid_nodes:
                allocations = place(index, tiers, job.request, job.workers, job.kind)
            else:
                allocations = place_preferring(index, tiers, job)
        if allocations is not None:
            _admit(out, running, job, allocations, [], now, policy, backfilled=head is not None)
            admitted_now.add(job.id)
            _advance(heap, lane, rest, order, user_order)
            continue
        failed[shape] = version
        rank = policy.preemption_rank
        if rank is not None and tiers and policy.preemption:
            # Ranked preemption (LAS, SRTF): a lower rank of the same shape has fewer
            # candidates (a prefix of the victim order), so it fails where a higher failed.
            level = rank.pending(job, now)
            known = ranked_failed.get(shape)
            if known is None or known[0] != version or level > known[1]:
                pool = ranked_pools.get(id(rank))
                if pool is None:
                    pool = ranked_pools[id(rank)] = VictimPool(running, now, rank)
                result = try_preempt(
                    index, running, job, tiers, now, admitted_now, pool, level=level
                )
                if result is not None:
                    _admit(out, running, job, result.allocations, result.victims, now, policy)
                    admitted_now.add(job.id)
                    _advance(heap, lane, rest, order, user_order)
                    continue
                ranked_failed[shape] = (version, level)
        elif tiers and policy.preemption and failed_preempt.get((shape, job.priority)) != version:
            result = try_preempt(index, running, job, tiers, now, admitted_now, victim_pool)
            if result is not None and quota is not None:
                for victim in result.victims:
                    quota.release(victim.job_id)
            if result is not None:
                _admit(out, running, job, result.allocations, result.victims, now, policy)
                admitted_now.add(job.id)
                _advance(heap, lane, rest, order, user_order)
                continue
            failed_preempt[(shape, job.priority)] = version
        if policy.blocking:
            blocked[queue] = job.id
        elif policy.backfill and head is None and tiers:
            reserved[queue] = job
        if explain:
            lane_reason[number] = _capacity_reason(index, tiers, job, reason)
    for queue, head in reserved.items():
        if queue not in plans:
            plans[queue] = reservations.plan(queue, head, tiers_for(head), now, want_nodes=explain)
        plan = plans[queue]
        if plan is not None:
            out.reservations.append(plan)
            if explain:
                job_reason[head.id] = reason(
                    ReasonCode.RESERVED, head, reservation_time=plan.start_time
                )
    for admitted in out.admitted:
        pending.remove(admitted.job.id)
    if explain:
        _explain(out, pending, lane_reason, job_reason, reason)
    return out


def _no_queue_order(_queue: str) -> float:
    return 0.0


def _advance(
    heap: list,
    lane: Lane,
    rest: Iterator[tuple[object, PendingJob]],
    order: Callable[[str], float] | None = None,
    user_order: Callable[[str, str | None], float] | None = None,
) -> None:
    nxt = next(rest, None)
    if nxt is not None:
        if user_order is not None and order is not None:
            key: object = (order(lane.queue), user_order(lane.queue, lane.user), nxt[0])
        elif order is not None:
            key = (order(lane.queue), nxt[0])
        else:
            key = nxt[0]
        heapq.heappush(heap, (key, lane.number, nxt[1], rest, lane))


def _admit(
    out: CycleOutcome,
    running: RunningSet,
    job: PendingJob,
    allocations: list[Allocation],
    victims: list[Placed],
    now: float,
    policy: Policy,
    *,
    backfilled: bool = False,
) -> None:
    estimate = job.estimated_runtime
    planned = job.runtime_limit
    if policy.estimates and estimate is not None:
        planned = estimate  # backfill by estimate: planning only, never a kill
    rank = policy.preemption_rank
    running.add(
        Placed(
            job.id,
            job.request,
            allocations,
            now,
            queue=job.queue,
            priority=job.priority,
            preemptible=job.preemptible,
            expected_end=now + planned if planned is not None else None,
            estimated_end=now + estimate if estimate is not None else None,
            attained_before=(
                job.attained_gpu_seconds if rank is None else rank.admitted_service(job, now)
            ),
        )
    )
    out.admitted.append(Admitted(job, allocations, victims, backfilled))


def capacity_view(
    index: ClusterIndex, tiers: tuple[Tier, ...], request: WorkerRequest
) -> CapacityView:
    """The largest free block among a job's eligible nodes, for its pending message."""
    pools = [pool for tier in tiers for pool in tier]
    eligible = sum(len(pool.nodes) for pool in pools)
    units = request.gpus or request.tpu_chips
    if units:
        unit = "GPUs" if request.gpus else "TPU chips"
        for k in range(max((p.max_units for p in pools), default=0), -1, -1):
            count = sum(len(p.buckets[k]) for p in pools if k <= p.max_units)
            if count:
                return CapacityView(eligible, k, count, unit)
        return CapacityView(eligible, 0, 0, unit)
    best, count = 0, 0
    for pool in pools:
        for node in pool.nodes:
            cap = index.capacity_of(node, request)
            if cap > best:
                best, count = cap, 1
            elif cap == best and cap:
                count += 1
    return CapacityView(eligible, min(best, 1 << 20), count, "workers' room")


def _capacity_reason(
    index: ClusterIndex,
    tiers: tuple[Tier, ...],
    job: PendingJob,
    reason: Callable[..., PendingReason],
) -> PendingReason:
    if not tiers:
        return reason(ReasonCode.NEVER_FITS, job, capacity=CapacityView(0, 0, 0, "nodes"))
    code = ReasonCode.INSUFFICIENT_CAPACITY if fits_empty(index, job) else ReasonCode.NEVER_FITS
    return reason(code, job, capacity=capacity_view(index, tiers, job.request))


def fits_empty(index: ClusterIndex, job: PendingJob) -> bool:
    """Would the job fit if nothing of ours were running? (NEVER_FITS, simulator drops).

    The answer depends only on the job's shape and the nodes, so it is kept on the
    index: a cycle asks once per shape, not once per queue and shape."""
    shape = (job.request, job.workers, job.kind, job.tolerations)
    known = index.fits_empty_by_shape.get(shape)
    if known is not None:
        return known
    empty = index.empty_twin
    if empty is None:
        empty = index.empty_twin = index.empty_copy()
    tiers = eligible_tiers(empty.pools, job.request, job.tolerations)
    fits = any(choose_nodes(empty, tier, job.request, job.workers, job.kind) for tier in tiers)
    index.fits_empty_by_shape[shape] = fits
    return fits


def _explain(
    out: CycleOutcome,
    pending: PendingSet,
    lane_reason: dict[int, PendingReason],
    job_reason: dict[str, PendingReason],
    reason: Callable[..., PendingReason],
) -> None:
    reasons = out.reasons
    for job_id, (_key, job, lane) in pending.jobs.items():
        got = job_reason.get(job_id) if job_reason else None
        if got is None:
            got = lane_reason.get(lane.number)
            if got is None:
                got = lane_reason[lane.number] = reason(ReasonCode.NOT_CONSIDERED, job)
        reasons[job_id] = got
