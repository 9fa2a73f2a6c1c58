"""Quota properties over random cohorts, quotas, clusters and queues (hypothesis).

Usage is recomputed here from the jobs' placements (a node's flavor from its GPU
model), independently of the ledger the core keeps.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sched_builders import job, quotas

from trainyard.scheduler import (
    ClusterSnapshot,
    CycleResult,
    Node,
    PendingJob,
    RunningJob,
    SchedulerConfig,
    schedule,
)
from trainyard.scheduler.quota import QuotaConfig
from trainyard.scheduler.types import GPU_PRODUCT_LABEL

PROFILE = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODELS = {"h100": "NVIDIA-H100-80GB-HBM3", "a100": "NVIDIA-A100-SXM4-40GB"}
POLICIES = ["fifo", "fifo-besteffort", "priority", "backfill"]


@dataclass
class World:
    nodes: tuple[Node, ...]
    config: QuotaConfig
    pending: list[PendingJob]
    policy: str


@st.composite
def worlds(draw: st.DrawFn, fair: bool | None = None) -> World:
    flavors = draw(st.sampled_from([["h100"], ["h100", "a100"]]))
    nodes = []
    for flavor in flavors:
        for i in range(draw(st.integers(1, 4))):
            nodes.append(
                Node(
                    f"{flavor}-{i}",
                    64_000,
                    2**40,
                    gpus=8,
                    labels={GPU_PRODUCT_LABEL: MODELS[flavor]},
                )
            )
    b = quotas()
    for flavor in flavors:
        b = b.flavor(flavor, MODELS[flavor])
    cohort_gpus = {f: draw(st.sampled_from([0, 0, 8])) for f in flavors}
    b = b.cohort("org", **{f: {"gpu": g} for f, g in cohort_gpus.items()})
    names = [f"q{i}" for i in range(draw(st.integers(2, 4)))]
    for name in names:
        per = {}
        for flavor in flavors:
            spec: dict = {"gpu": draw(st.sampled_from([0, 4, 8, 16]))}
            borrow = draw(st.sampled_from([None, None, 0, 4, 8]))
            if borrow is not None:
                spec["gpu_borrow"] = borrow
            lend = draw(st.sampled_from([None, None, 0, 4]))
            if lend is not None:
                spec["gpu_lend"] = min(lend, spec["gpu"])
            per[flavor] = spec
        b = b.queue(
            name,
            "org",
            weight=draw(st.sampled_from([1.0, 1.0, 2.0])),
            within=draw(
                st.sampled_from(["never", "lower_priority", "lower_or_newer_equal_priority"])
            ),
            reclaim=draw(st.sampled_from(["never", "lower_priority", "any"])),
            borrow=draw(st.sampled_from(["never", "lower_priority"])),
            **per,
        )
    if fair if fair is not None else draw(st.booleans()):
        b = b.fair()
    pending = []
    for i in range(draw(st.integers(1, 24))):
        gpus = draw(st.sampled_from([1, 1, 2, 4, 8]))
        builder = (
            job(f"j{i}")
            .gpus(gpus)
            .workers(draw(st.sampled_from([1, 1, 1, 2])))
            .queue(draw(st.sampled_from(names)))
            .priority(draw(st.sampled_from([0, 10, 20])))
            .submitted(float(draw(st.integers(0, 50))))
            .limit(draw(st.sampled_from([None, 60.0, 600.0])))
        )
        pending.append(builder.build())
    return World(tuple(nodes), b.build(), pending, draw(st.sampled_from(POLICIES)))


def flavor_of(nodes: tuple[Node, ...]) -> dict[str, str]:
    by_product = {v: k for k, v in MODELS.items()}
    return {n.name: by_product[n.gpu_product] for n in nodes}


def usage(world: World, running: list[RunningJob]) -> dict[tuple[str, str], int]:
    """Whole GPUs per (queue, flavor)."""
    flavor = flavor_of(world.nodes)
    out: dict[tuple[str, str], int] = defaultdict(int)
    for r in running:
        out[(r.queue, flavor[r.placement[0]])] += r.request.gpus * r.workers
    return out


def nominal(world: World, queue: str, flavor: str) -> int:
    q = world.config.queue(queue)
    assert q is not None
    spec = q.quotas.get(flavor, {}).get("gpu")
    return spec.nominal // 1000 if spec else 0


def step(
    world: World, running: list[RunningJob], pending: list[PendingJob], now: float
) -> tuple[list[RunningJob], list[PendingJob], CycleResult]:
    """One cycle, its decisions applied: admitted jobs run, victims wait again."""
    snapshot = ClusterSnapshot(world.nodes, tuple(running), tuple(pending))
    result = schedule(snapshot, now, SchedulerConfig(world.policy, quotas=world.config))
    by_id = {j.id: j for j in pending}
    victims = set(result.preempted)
    templates = {j.id: j for j in world.pending}
    for r in running:
        templates.setdefault(
            r.id,
            PendingJob(
                r.id,
                r.request,
                workers=r.workers,
                queue=r.queue,
                priority=r.priority,
                submit_time=r.submit_time,
            ),
        )
    still = [r for r in running if r.id not in victims]
    for a in result.admissions:
        j = by_id[a.job_id]
        end = now + j.runtime_limit if j.runtime_limit is not None else None
        still.append(
            RunningJob(
                j.id,
                j.request,
                a.placement,
                now,
                queue=j.queue,
                priority=j.priority,
                submit_time=j.submit_time,
                expected_end=end,
            )
        )
    admitted = {a.job_id for a in result.admissions}
    waiting = [j for j in pending if j.id not in admitted] + [templates[v] for v in sorted(victims)]
    return still, waiting, result


def waves(world: World) -> tuple[list[PendingJob], list[PendingJob]]:
    """The jobs of one queue (and some of the rest) first, the others a cycle later,
    so that borrowing happens before the owners ask for their quota."""
    first_queue = world.pending[0].queue
    first = [j for i, j in enumerate(world.pending) if j.queue == first_queue or i % 3 == 0]
    ids = {j.id for j in first}
    return first, [j for j in world.pending if j.id not in ids]


@PROFILE
@given(worlds())
def test_never_above_nominal_plus_borrowing_limit_and_lending_respected(world: World) -> None:
    running: list[RunningJob] = []
    pending = list(world.pending)
    for cycle in range(3):
        running, pending, _ = step(world, running, pending, 10.0 * cycle)
        used = usage(world, running)
        for q in world.config.queues:
            for flavor, per in q.quotas.items():
                spec = per["gpu"]
                if spec.borrowing_limit is not None:
                    cap = (spec.nominal + spec.borrowing_limit) // 1000
                    assert used[(q.name, flavor)] <= cap, f"{q.name} above nominal + limit"
                # The part of q's quota it does not lend is never used by anyone else.
                kept = (
                    (spec.nominal - (spec.lending_limit or 0)) // 1000
                    if (spec.lending_limit is not None)
                    else 0
                )
                total = (
                    sum(
                        (p.get(flavor, {}).get("gpu").nominal // 1000 if flavor in p else 0)
                        for p in (x.quotas for x in world.config.queues)
                    )
                    + world.config.cohorts[0]
                    .quotas.get(flavor, {})
                    .get("gpu", type("Z", (), {"nominal": 0}))
                    .nominal
                    // 1000
                )
                others = sum(u for (qn, f), u in used.items() if f == flavor and qn != q.name)
                assert others <= total - kept, f"{q.name}'s unlent quota was used by others"


@PROFILE
@given(worlds())
def test_victims_of_other_queues_were_borrowing(world: World) -> None:
    running: list[RunningJob] = []
    first, second = waves(world)
    pending = first
    flavor = flavor_of(world.nodes)
    queue_of = {j.id: j.queue for j in world.pending}
    for cycle in range(4):
        if cycle == 1:
            pending = pending + second
        now = usage(world, running)  # kept current through the cycle's decisions, in order
        placed = {r.id: r for r in running}
        gpus = {j.id: j.request.gpus * j.workers for j in world.pending}
        gpus.update({r.id: r.request.gpus * r.workers for r in running})
        running, pending, result = step(world, running, pending, 10.0 * cycle)
        for a in result.admissions:
            for victim in a.preempts:
                vq = queue_of[victim]
                f = flavor[placed[victim].placement[0]]
                if vq != queue_of[a.job_id]:
                    assert now[(vq, f)] > nominal(world, vq, f), f"{victim} of {vq} not borrowing"
            for victim in a.preempts:
                now[(queue_of[victim], flavor[placed[victim].placement[0]])] -= gpus[victim]
            now[(queue_of[a.job_id], flavor[a.placement[0]])] += gpus[a.job_id]


@PROFILE
@given(worlds())
def test_no_two_jobs_preempt_each_other_and_evictions_stop(world: World) -> None:
    running: list[RunningJob] = []
    first, second = waves(world)
    pending = first
    pairs: set[tuple[str, str]] = set()
    for cycle in range(30):
        if cycle == 1:
            pending = pending + second  # later arrivals find the cohort lent out
        running, pending, result = step(world, running, pending, 10.0 * cycle)
        for a in result.admissions:
            for victim in a.preempts:
                assert (victim, a.job_id) not in pairs, f"{a.job_id} and {victim} preempt in a loop"
                pairs.add((a.job_id, victim))
        if not result.admissions:
            event(f"evictions: {min(len(pairs), 5)}, cycles: {min(cycle, 5)}")
            return  # a fixed point: nothing moves any more
    raise AssertionError(f"still admitting after 30 cycles with nothing ending: {pairs}")


@st.composite
def reclaim_worlds(draw: st.DrawFn) -> tuple[World, list[RunningJob]]:
    """Queue `owner` (reclaim any) idle; `borrower` holds every GPU with preemptible
    jobs; then `owner` asks for up to its nominal quota in 1-GPU jobs."""
    nodes_count = draw(st.integers(1, 4))
    nodes = tuple(
        Node(f"h100-{i}", 64_000, 2**40, gpus=8, labels={GPU_PRODUCT_LABEL: MODELS["h100"]})
        for i in range(nodes_count)
    )
    total = 8 * nodes_count
    owner_nominal = draw(st.integers(1, total))
    config = (
        quotas()
        .flavor("h100", MODELS["h100"])
        .cohort("org")
        .queue("owner", "org", reclaim="any", h100={"gpu": owner_nominal})
        .queue("borrower", "org", h100={"gpu": total - owner_nominal})
        .build()
    )
    running = []
    for n in nodes:
        left = 8
        k = 0
        while left:
            size = draw(st.sampled_from([s for s in (1, 2, 4, 8) if s <= left]))
            running.append(
                job(f"b-{n.name}-{k}").gpus(size).queue("borrower").running_on(n.name, start=0)
            )
            left -= size
            k += 1
    demand = draw(st.integers(1, owner_nominal))
    pending = [job(f"o{i}").gpus(1).queue("owner").submitted(i).build() for i in range(demand)]
    return World(nodes, config, pending, draw(st.sampled_from(POLICIES))), running


@PROFILE
@given(reclaim_worlds())
def test_an_owner_under_nominal_gets_its_quota_back_within_one_cycle(
    case: tuple[World, list[RunningJob]],
) -> None:
    world, running = case
    _running, _pending, result = step(world, running, list(world.pending), 100.0)
    assert {a.job_id for a in result.admissions} == {j.id for j in world.pending}
    assert all(v.startswith("b-") for v in result.preempted)


@PROFILE
@given(st.integers(1, 4), st.integers(0, 3), st.sampled_from(POLICIES))
def test_a_tenant_alone_gets_the_whole_cohort(nodes_count: int, others: int, policy: str) -> None:
    nodes = tuple(
        Node(f"h100-{i}", 64_000, 2**40, gpus=8, labels={GPU_PRODUCT_LABEL: MODELS["h100"]})
        for i in range(nodes_count)
    )
    total = 8 * nodes_count
    b = quotas().flavor("h100", MODELS["h100"]).cohort("org").queue("alone", "org", h100={"gpu": 1})
    for i in range(others):
        b = b.queue(f"idle{i}", "org", h100={"gpu": (total - 1) // max(others, 1)})
    pending = [job(f"a{i}").gpus(1).queue("alone").submitted(i).build() for i in range(total + 3)]
    world = World(nodes, b.build(), pending, policy)
    running, _pending, _ = step(world, [], pending, 0.0)
    cohort_quota = 1 + others * ((total - 1) // max(others, 1))
    assert sum(r.request.gpus for r in running) == min(total, cohort_quota)


@PROFILE
@given(st.integers(1, 4), st.sampled_from([1, 2, 4]), st.booleans(), st.sampled_from(POLICIES))
def test_two_equal_tenants_with_equal_demand_converge_to_equal_shares(
    nodes_count: int, size: int, a_holds_everything: bool, policy: str
) -> None:
    nodes = tuple(
        Node(f"h100-{i}", 64_000, 2**40, gpus=8, labels={GPU_PRODUCT_LABEL: MODELS["h100"]})
        for i in range(nodes_count)
    )
    total = 8 * nodes_count
    config = (
        quotas()
        .flavor("h100", MODELS["h100"])
        .cohort("org", h100={"gpu": total})
        .queue("a", "org", reclaim="any", h100={"gpu": 0})
        .queue("b", "org", reclaim="any", h100={"gpu": 0})
        .fair()
        .build()
    )
    demand = total // size
    pending = [
        job(f"{q}{i}").gpus(size).queue(q).submitted(i).build() for q in "ab" for i in range(demand)
    ]
    world = World(nodes, config, pending, policy)
    running: list[RunningJob] = []
    waiting = list(pending)
    if a_holds_everything:
        alone = World(nodes, config, [j for j in pending if j.queue == "a"], policy)
        running, _rest, _ = step(alone, [], alone.pending, 0.0)
        held = {r.id for r in running}
        waiting = [j for j in pending if j.id not in held]
    for cycle in range(1, 6):
        running, waiting, _result = step(world, running, waiting, 10.0 * cycle)
    used = usage(world, running)
    assert abs(used[("a", "h100")] - used[("b", "h100")]) <= size
    assert used[("a", "h100")] + used[("b", "h100")] == total
