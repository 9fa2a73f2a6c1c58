"""Quota admission, borrowing, lending, reclaim and fair sharing: named table cases."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from sched_builders import job, node, quotas

from trainyard.scheduler import ClusterSnapshot, ReasonCode, SchedulerConfig, schedule
from trainyard.scheduler.quota import QuotaConfig
from trainyard.scheduler.types import Node, PendingJob, RunningJob

H100 = "NVIDIA-H100-80GB-HBM3"
A100 = "NVIDIA-A100-SXM4-40GB"


def h100_nodes(count: int) -> list[Node]:
    return [node(f"h{i}").gpus(8, H100).build() for i in range(count)]


def two_queues(**extra: dict) -> QuotaConfig:
    """32 H100 GPUs' worth of quota: a and b with 16 each in cohort org."""
    a = extra.get("a", {})
    b = extra.get("b", {})
    return (
        quotas()
        .flavor("h100", H100)
        .cohort("org")
        .queue("a", "org", **a.get("opts", {}), h100={"gpu": 16, **a.get("gpu", {})})
        .queue("b", "org", **b.get("opts", {}), h100={"gpu": 16, **b.get("gpu", {})})
        .build()
    )


@dataclass
class Case:
    id: str
    nodes: list[Node]
    quota: QuotaConfig
    pending: list[PendingJob]
    want_admitted: set[str]
    running: list[RunningJob] = field(default_factory=list)
    want_preempted: set[str] = field(default_factory=set)
    want_messages: dict[str, str] = field(default_factory=dict)  # job -> message suffix
    want_codes: dict[str, ReasonCode] = field(default_factory=dict)
    policy: str = "fifo-besteffort"


def eights(queue: str, count: int, prefix: str | None = None, **kw: object) -> list[PendingJob]:
    out = []
    for i in range(count):
        b = job(f"{prefix or queue}{i}").gpus(8).queue(queue).submitted(float(i))
        if "priority" in kw:
            b = b.priority(int(kw["priority"]))  # type: ignore[arg-type]
        out.append(b.build())
    return out


def running_eights(queue: str, count: int, first_node: int = 0, **kw: object) -> list[RunningJob]:
    out = []
    for i in range(count):
        b = job(f"run-{queue}{i}").gpus(8).queue(queue)
        if "priority" in kw:
            b = b.priority(int(kw["priority"]))  # type: ignore[arg-type]
        out.append(b.running_on(f"h{first_node + i}", start=float(i)))
    return out


CASES = [
    Case(
        "within nominal: admitted",
        h100_nodes(4),
        two_queues(),
        eights("a", 2),
        {"a0", "a1"},
    ),
    Case(
        "a queue outside any cohort stops at its nominal quota",
        h100_nodes(4),
        quotas().flavor("h100", H100).queue("solo", h100={"gpu": 8}).build(),
        eights("solo", 2),
        {"solo0"},
        want_messages={"solo1": "queue solo: 8/8 h100 GPUs used, no cohort to borrow from"},
        want_codes={"solo1": ReasonCode.QUOTA},
    ),
    Case(
        "a tenant alone borrows the whole cohort",
        h100_nodes(4),
        two_queues(),
        eights("a", 5),
        {"a0", "a1", "a2", "a3"},
        want_codes={"a4": ReasonCode.QUOTA},
        want_messages={"a4": "queue a: 32/16 h100 GPUs used, cohort org has 0 lendable"},
    ),
    Case(
        "the borrowing limit caps a borrower",
        h100_nodes(4),
        two_queues(a={"gpu": {"gpu_borrow": 8}}),
        eights("a", 4),
        {"a0", "a1", "a2"},
        want_messages={"a3": "queue a: 24/16 h100 GPUs used, borrowing limit 8 reached"},
    ),
    Case(
        "a lending limit keeps the rest of the lender's quota for it",
        h100_nodes(4),
        two_queues(b={"gpu": {"gpu_lend": 8}}),
        eights("a", 4),
        {"a0", "a1", "a2"},
    ),
    Case(
        "the message names the queue, the flavor and the cohort",
        h100_nodes(8),
        quotas()
        .flavor("h100", H100)
        .cohort("org")
        .queue("research", "org", h100={"gpu": 64})
        .queue("prod", "org", h100={"gpu": 0})
        .build(),
        eights("research", 9),
        {f"research{i}" for i in range(8)},
        want_messages={
            "research8": "queue research: 64/64 h100 GPUs used, cohort org has 0 lendable"
        },
    ),
    Case(
        "reclaim: a queue under nominal evicts a borrower",
        h100_nodes(4),
        two_queues(b={"opts": {"reclaim": "any"}}),
        eights("b", 1),
        {"b0"},
        running=running_eights("a", 4),
        want_preempted={"run-a3"},  # the least work lost (started last)
    ),
    Case(
        "no reclaim when the policy says never",
        h100_nodes(4),
        two_queues(),
        eights("b", 1),
        set(),
        running=running_eights("a", 4),
        want_messages={
            "b0": "queue b: 0/16 h100 GPUs used, its unused quota is lent out: cohort org has "
            "0 lendable and this queue does not reclaim (reclaim_within_cohort: never)"
        },
    ),
    Case(
        "reclaim lower_priority spares a borrower of equal priority",
        h100_nodes(4),
        two_queues(b={"opts": {"reclaim": "lower_priority"}}),
        eights("b", 1),
        set(),
        running=running_eights("a", 4),
        want_codes={"b0": ReasonCode.QUOTA},
        want_messages={
            "b0": "queue b: 0/16 h100 GPUs used, its unused quota is lent out: cohort org has "
            "0 lendable and no borrower's job could be reclaimed for it"
        },
    ),
    Case(
        "victims come only from borrowers",
        h100_nodes(6),
        quotas()
        .flavor("h100", H100)
        .cohort("org")
        .queue("a", "org", h100={"gpu": 16})
        .queue("b", "org", reclaim="any", h100={"gpu": 16})
        .queue("c", "org", h100={"gpu": 16})
        .build(),
        eights("b", 2),
        {"b0", "b1"},
        running=running_eights("a", 2) + running_eights("c", 4, first_node=2),
        want_preempted={"run-c2", "run-c3"},
    ),
    Case(
        "quota fits but the nodes do not: a capacity reason, not a quota one",
        h100_nodes(2),
        quotas().flavor("h100", H100).queue("big", h100={"gpu": 64}).build(),
        eights("big", 3),
        {"big0", "big1"},
        want_codes={"big2": ReasonCode.INSUFFICIENT_CAPACITY},
    ),
    Case(
        "a queue with no quota in a flavor cannot use its nodes",
        [*h100_nodes(1), node("x0").gpus(8, A100).build()],
        quotas().flavor("h100", H100).flavor("a100", A100).queue("a", a100={"gpu": 16}).build(),
        [job("h").gpus(8, "H100").queue("a").build()],
        set(),
        want_messages={"h": "queue a has no quota in a flavor whose nodes fit it"},
    ),
    Case(
        "flavors are tried in the queue's order",
        [*h100_nodes(1), node("x0").gpus(8, A100).build()],
        quotas()
        .flavor("h100", H100)
        .flavor("a100", A100)
        .queue("a", a100={"gpu": 8}, h100={"gpu": 8})
        .build(),
        eights("a", 3),
        {"a0", "a1"},
        want_codes={"a2": ReasonCode.QUOTA},
    ),
    Case(
        "per-user limit on running jobs",
        h100_nodes(4),
        quotas().flavor("h100", H100).queue("a", max_jobs_per_user=1, h100={"gpu": 32}).build(),
        [
            job("x").gpus(8).queue("a").user("alice").build(),
            job("y").gpus(8).queue("a").user("alice").submitted(1).build(),
            job("z").gpus(8).queue("a").user("bob").submitted(2).build(),
        ],
        {"x", "z"},
        want_messages={"y": "user alice runs 1/1 jobs allowed in queue a"},
    ),
    Case(
        "per-user limit on GPUs",
        h100_nodes(4),
        quotas().flavor("h100", H100).queue("a", max_gpus_per_user=12, h100={"gpu": 32}).build(),
        [
            job("x").gpus(8).queue("a").user("alice").build(),
            job("y").gpus(8).queue("a").user("alice").submitted(1).build(),
        ],
        {"x"},
        want_messages={"y": "user alice holds 8/12 GPUs allowed in queue a"},
    ),
    Case(
        "within the queue: a higher priority job evicts a lower one",
        h100_nodes(2),
        quotas().flavor("h100", H100).queue("a", within="lower_priority", h100={"gpu": 16}).build(),
        eights("a", 1, prefix="hi", priority=10),
        {"hi0"},
        running=running_eights("a", 2),
        want_preempted={"run-a1"},
    ),
    Case(
        "a queue without quota keeps today's behaviour beside quota queues",
        h100_nodes(2),
        quotas().flavor("h100", H100).queue("a", h100={"gpu": 8}).build(),
        eights("free", 2),
        {"free0", "free1"},
    ),
    Case(
        "fair sharing: two equal tenants split a cohort's own quota",
        h100_nodes(4),
        quotas()
        .flavor("h100", H100)
        .cohort("org", h100={"gpu": 32})
        .queue("a", "org", h100={"gpu": 0})
        .queue("b", "org", h100={"gpu": 0})
        .fair()
        .build(),
        eights("a", 4) + eights("b", 4),
        {"a0", "a1", "b0", "b1"},
    ),
    Case(
        "fair sharing: a borrower takes from a bigger borrower until shares are equal",
        h100_nodes(4),
        quotas()
        .flavor("h100", H100)
        .cohort("org", h100={"gpu": 32})
        .queue("a", "org", h100={"gpu": 0})
        .queue("b", "org", reclaim="any", h100={"gpu": 0})
        .fair()
        .build(),
        eights("b", 4),
        {"b0", "b1"},
        running=running_eights("a", 4),
        want_preempted={"run-a2", "run-a3"},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_quota_decisions(case: Case) -> None:
    snapshot = ClusterSnapshot(tuple(case.nodes), tuple(case.running), tuple(case.pending))
    result = schedule(snapshot, 100.0, SchedulerConfig(case.policy, quotas=case.quota))
    got = {a.job_id for a in result.admissions}
    assert got == case.want_admitted, {j: r.message for j, r in result.pending.items()}
    assert set(result.preempted) == case.want_preempted
    for job_id, suffix in case.want_messages.items():
        message = result.pending[job_id].message
        assert message.endswith(suffix), message
    for job_id, code in case.want_codes.items():
        assert result.pending[job_id].code == code, result.pending[job_id].message


def test_without_quotas_the_config_field_changes_nothing() -> None:
    nodes = tuple(h100_nodes(2))
    pending = tuple(eights("a", 3))
    plain = schedule(ClusterSnapshot(nodes, (), pending), 0.0, SchedulerConfig("fifo"))
    explicit = schedule(
        ClusterSnapshot(nodes, (), pending), 0.0, SchedulerConfig("fifo", quotas=None)
    )
    assert [a.placement for a in plain.admissions] == [a.placement for a in explicit.admissions]


def test_usage_history_orders_queues_when_a_half_life_is_set() -> None:
    """The queue that used more recently yields the one free node to the other."""
    config = (
        quotas()
        .flavor("h100", H100)
        .cohort("org", h100={"gpu": 8})
        .queue("heavy", "org", h100={"gpu": 0})
        .queue("light", "org", h100={"gpu": 0})
        .fair(half_life=3600.0)
        .build()
    )
    pending = (
        job("h").gpus(8).queue("heavy").submitted(0).build(),
        job("l").gpus(8).queue("light").submitted(50).build(),
    )
    snapshot = ClusterSnapshot(
        tuple(h100_nodes(1)), (), pending, queue_usage={"heavy": 5000.0, "light": 10.0}
    )
    result = schedule(snapshot, 100.0, SchedulerConfig("fifo-besteffort", quotas=config))
    assert [a.job_id for a in result.admissions] == ["l"]
    without = ClusterSnapshot(tuple(h100_nodes(1)), (), pending)
    result = schedule(without, 100.0, SchedulerConfig("fifo-besteffort", quotas=config))
    assert [a.job_id for a in result.admissions] == ["h"]


def test_quota_status_shows_used_borrowed_and_lent() -> None:
    from trainyard.scheduler.quota_status import quota_status

    config = two_queues()
    status = {s.queue: s for s in quota_status(config, h100_nodes(4), running_eights("a", 3))}
    a, b = status["a"].resources[0], status["b"].resources[0]
    assert (a.flavor, a.resource, a.nominal, a.used, a.borrowed, a.lent) == (
        "h100",
        "gpu",
        16,
        24,
        8,
        0,
    )
    assert (b.used, b.borrowed, b.lent) == (0, 0, 8)
    assert status["a"].weighted_share == 8 / 32 and status["b"].weighted_share == 0


def test_usage_history_decays_by_half_each_half_life() -> None:
    from trainyard.scheduler.fairshare import UsageHistory, decay_usage

    assert decay_usage({"a": 8.0}, {}, 3600.0, 3600.0) == {"a": 4.0}
    gained = decay_usage({}, {"a": 1.0}, 1e9, 3600.0)["a"]
    assert abs(gained - 3600.0 / 0.6931471805599453) < 1e-6  # saturates at h / ln 2
    config = SchedulerConfig(
        "fifo", quotas=quotas().flavor("h100", H100).queue("a").fair(half_life=100.0).build()
    )
    history = UsageHistory()
    assert history.before_cycle(config, 0.0) == {}
    history.after_cycle({"a": 1.0}, 0.0)
    assert history.before_cycle(config, 100.0)["a"] > 0
    assert history.before_cycle(SchedulerConfig("fifo"), 200.0) == {}  # no half-life, no memory


@pytest.mark.parametrize("fair_sharing", [True, False], ids=["fair sharing", "no fair sharing"])
def test_users_of_a_queue_are_ordered_by_decayed_usage_when_it_asks(fair_sharing: bool) -> None:
    """alice used a lot recently, bob little: bob's later job takes the one free node;
    each user's own jobs keep the policy's order; a queue that does not ask keeps FIFO."""

    def config(order_users: bool) -> QuotaConfig:
        return (
            quotas()
            .flavor("h100", H100)
            .queue("team", order_users=order_users, h100={"gpu": 16})
            .fair(half_life=3600.0, enabled=fair_sharing)
            .build()
        )

    pending = (
        job("alice-1").gpus(8).queue("team").user("alice").submitted(0).build(),
        job("alice-2").gpus(8).queue("team").user("alice").submitted(1).build(),
        job("bob-2").gpus(8).queue("team").user("bob").submitted(20).build(),
        job("bob-1").gpus(8).queue("team").user("bob").submitted(10).build(),
    )
    usage = {("team", "alice"): 900.0, ("team", "bob"): 5.0}
    ordered = ClusterSnapshot(tuple(h100_nodes(1)), (), pending, user_usage=usage)
    result = schedule(ordered, 100.0, SchedulerConfig("fifo-besteffort", quotas=config(True)))
    assert [a.job_id for a in result.admissions] == ["bob-1"]
    two = ClusterSnapshot(tuple(h100_nodes(2)), (), pending, user_usage=usage)
    result = schedule(two, 100.0, SchedulerConfig("fifo-besteffort", quotas=config(True)))
    assert [a.job_id for a in result.admissions] == ["bob-1", "bob-2"]
    result = schedule(ordered, 100.0, SchedulerConfig("fifo-besteffort", quotas=config(False)))
    assert [a.job_id for a in result.admissions] == ["alice-1"]


def test_the_cycle_reports_each_users_usage_for_the_history() -> None:
    config = (
        quotas()
        .flavor("h100", H100)
        .queue("team", order_users=True, h100={"gpu": 32})
        .queue("other", h100={"gpu": 32})
        .fair(half_life=3600.0)
        .build()
    )
    running = (
        job("a").gpus(8).queue("team").user("alice").running_on("h0"),
        job("b").gpus(8).queue("team").user("bob").running_on("h1"),
        job("c").gpus(8).queue("team").user("bob").running_on("h2"),
        job("o").gpus(8).queue("other").user("carol").running_on("h3"),
    )
    snapshot = ClusterSnapshot(tuple(h100_nodes(4)), running, ())
    result = schedule(snapshot, 0.0, SchedulerConfig("fifo", quotas=config))
    # Over the queue's own quota tree (a queue without a cohort is its own root: 32 GPUs).
    assert result.user_usage == {("team", "alice"): 8 / 32, ("team", "bob"): 16 / 32}


def test_usage_history_keeps_each_users_decayed_usage_too() -> None:
    from trainyard.scheduler.fairshare import UsageHistory

    config = SchedulerConfig(
        "fifo", quotas=quotas().flavor("h100", H100).queue("a").fair(half_life=100.0).build()
    )
    history = UsageHistory()
    history.before_cycle(config, 0.0)
    history.after_cycle({"a": 1.0}, 0.0, {("a", "alice"): 1.0})
    history.before_cycle(config, 100.0)
    first = history.user_history[("a", "alice")]
    assert first > 0 and ("a", "bob") not in history.user_history
    history.after_cycle({"a": 0.0}, 100.0, {})
    history.before_cycle(config, 200.0)
    assert history.user_history[("a", "alice")] == first / 2  # one half-life, no new use


def test_a_ranked_preemption_beside_fair_sharing_keeps_the_merged_order_intact() -> None:
    """A LAS queue outside the quota file preempts while fair sharing orders the queues:
    the lane's next job went back into the merge without the queue-order prefix, and the
    cycle failed comparing a float with a tuple (TypeError: every cycle of the loop)."""
    config = (
        quotas()
        .flavor("h100", H100)
        .cohort("org")
        .queue("q", "org", h100={"gpu": 8})
        .queue("r", "org", h100={"gpu": 8})
        .fair()
        .build()
    )
    running = (
        job("old").gpus(8).queue("free").running_on("h0", start=0.0),
        job("old2").gpus(8).queue("free").running_on("h1", start=0.0),
    )
    pending = (
        *[job(f"n{i}").gpus(8).queue("free").submitted(500.0 + i).build() for i in range(3)],
        *[job(f"m{i}").gpus(4).queue("free").submitted(600.0 + i).build() for i in range(3)],
        job("q0").gpus(8).queue("q").submitted(1).build(),
    )
    snapshot = ClusterSnapshot(tuple(h100_nodes(2)), running, pending)
    config_all = SchedulerConfig("fifo", queue_policies={"free": "las"}, quotas=config)
    result = schedule(snapshot, 100_000.0, config_all)
    assert [(a.job_id, a.preempts) for a in result.admissions] == [
        ("n0", ("old",)),
        ("n1", ("old2",)),
    ]


def test_quota_status_shows_pending_demand_in_the_flavor_a_job_would_try_first() -> None:
    """Pending demand per queue, flavor and resource: each waiting job counted once, in
    the first of its queue's flavors whose nodes can hold it (an H100-only job in h100
    even when a100 comes first); a job no flavor of its queue can hold counts nowhere."""
    from trainyard.scheduler.quota_status import quota_status

    config = (
        quotas()
        .flavor("h100", H100)
        .flavor("a100", A100)
        .queue("a", a100={"gpu": 8, "cpu": 64}, h100={"gpu": 8})
        .queue("b", h100={"gpu": 8})
        .build()
    )
    nodes = [*h100_nodes(1), node("x0").gpus(8, A100).build()]
    pending = [
        job("any").gpus(2).cpu(4000).workers(2).queue("a").build(),
        job("h").gpus(8, "H100").queue("a").build(),
        job("bh").gpus(1).queue("b").build(),
        job("nowhere").gpus(8, "B200").queue("b").build(),  # no B200 node
    ]
    status = {s.queue: s for s in quota_status(config, nodes, [], pending)}
    rows = {(r.flavor, r.resource): r.pending for r in status["a"].resources}
    assert rows == {("a100", "gpu"): 4, ("a100", "cpu"): 8, ("h100", "gpu"): 8}
    assert [(r.flavor, r.pending) for r in status["b"].resources] == [("h100", 1)]


def _decide(
    nodes: list[Node],
    config: QuotaConfig,
    running: tuple[RunningJob, ...],
    pending: tuple[PendingJob, ...],
) -> tuple[set[str], set[str]]:
    snapshot = ClusterSnapshot(tuple(nodes), running, pending)
    result = schedule(snapshot, 1000.0, SchedulerConfig("fifo-besteffort", quotas=config))
    return {a.job_id for a in result.admissions}, set(result.preempted)


def borrow_world(borrow: str, threshold: int | None) -> QuotaConfig:
    """a and b own 8 GPUs each, the cohort 16 of its own; b borrows the cohort's 16."""
    return (
        quotas()
        .flavor("h100", H100)
        .cohort("org", h100={"gpu": 16})
        .queue("a", "org", borrow=borrow, borrow_max_priority=threshold, h100={"gpu": 8})
        .queue("b", "org", h100={"gpu": 8})
        .build()
    )


@pytest.mark.parametrize(
    ("borrow", "threshold", "want"),
    [
        ("lower_priority", None, ({"hi"}, {"run-b2"})),  # least work lost of b's borrowers
        ("lower_priority", 0, ({"hi"}, {"run-b2"})),  # victims at priority 0 <= 0
        ("lower_priority", -1, (set(), set())),  # the threshold spares priority 0
        ("never", None, (set(), set())),
    ],
    ids=["lower_priority", "at the threshold", "above the threshold", "never"],
)
def test_borrow_within_cohort_preempts_lower_priority_borrowers_up_to_a_threshold(
    borrow: str, threshold: int | None, want: tuple[set[str], set[str]]
) -> None:
    running = (
        job("run-a0").gpus(8).queue("a").running_on("h0"),
        *(job(f"run-b{i}").gpus(8).queue("b").running_on(f"h{i + 1}", start=i) for i in range(3)),
    )
    pending = (job("hi").gpus(8).queue("a").priority(10).build(),)  # a must borrow for it
    assert _decide(h100_nodes(4), borrow_world(borrow, threshold), running, pending) == want


def test_borrow_within_cohort_never_takes_from_an_equal_priority_borrower() -> None:
    running = (
        job("run-a0").gpus(8).queue("a").running_on("h0"),
        *(job(f"run-b{i}").gpus(8).queue("b").running_on(f"h{i + 1}") for i in range(3)),
    )
    pending = (job("same").gpus(8).queue("a").build(),)
    assert _decide(h100_nodes(4), borrow_world("lower_priority", None), running, pending) == (
        set(),
        set(),
    )


@pytest.mark.parametrize(
    ("within", "want"),
    [
        ("lower_or_newer_equal_priority", ({"x"}, {"run-new"})),
        ("lower_priority", (set(), set())),
        ("never", (set(), set())),
    ],
)
def test_within_queue_newer_equal_priority_jobs_yield_to_older_ones(
    within: str, want: tuple[set[str], set[str]]
) -> None:
    config = quotas().flavor("h100", H100).queue("a", within=within, h100={"gpu": 16}).build()
    running = (
        job("run-old").gpus(8).queue("a").submitted(0).running_on("h0", start=100),
        job("run-new").gpus(8).queue("a").submitted(50).running_on("h1", start=100),
    )
    pending = (job("x").gpus(8).queue("a").submitted(10).build(),)  # older than run-new
    assert _decide(h100_nodes(2), config, running, pending) == want


def test_reclaim_takes_the_borrower_job_whose_checkpoint_loses_least_work() -> None:
    """Both of a's borrowed jobs are equal but for checkpoints: the one that started
    earlier but saved recently loses less, so it is the victim (not the newest)."""
    from dataclasses import replace

    running = (
        *(job(f"run-a{i}").gpus(8).queue("a").running_on(f"h{i}", start=0) for i in range(2)),
        replace(job("run-a2").gpus(8).queue("a").running_on("h2", start=100), last_checkpoint=None),
        replace(job("run-a3").gpus(8).queue("a").running_on("h3", start=0), last_checkpoint=990.0),
    )
    config = two_queues(b={"opts": {"reclaim": "any"}})
    pending = (job("b0").gpus(8).queue("b").build(),)
    assert _decide(h100_nodes(4), config, running, pending) == ({"b0"}, {"run-a3"})


def tree(research_lend: int | None, prod_lend: int | None, research_own: int = 0) -> QuotaConfig:
    """org <- research (r1, r2: 8 each) and org <- prod (p1: 16); 4 nodes of 8."""
    research = {"gpu": research_own}
    if research_lend is not None:
        research["gpu_lend"] = research_lend
    prod = {"gpu": 0}
    if prod_lend is not None:
        prod["gpu_lend"] = prod_lend
    return (
        quotas()
        .flavor("h100", H100)
        .cohort("org")
        .cohort("research", "org", h100=research)
        .cohort("prod", "org", h100=prod)
        .queue("r1", "research", h100={"gpu": 8})
        .queue("r2", "research", h100={"gpu": 8})
        .queue("p1", "prod", reclaim="any", h100={"gpu": 16})
        .build()
    )


@pytest.mark.parametrize(
    ("config", "admitted"),
    [
        (tree(None, None), 4),  # r1 borrows r2's 8 and, through org, prod's 16
        (tree(None, 0), 2),  # prod lends nothing up the tree: research's 16 only
        (tree(None, 0, research_own=8), 3),  # research's own 8 on top of r1 and r2's
    ],
    ids=["whole tree", "prod lends nothing", "research's own quota"],
)
def test_a_cohort_tree_lends_across_cohorts_within_each_cohorts_lending_limit(
    config: QuotaConfig, admitted: int
) -> None:
    nodes = h100_nodes(4)
    pending = tuple(job(f"r{i}").gpus(8).queue("r1").submitted(i).build() for i in range(5))
    got, _ = _decide(nodes, config, (), pending)
    assert got == {f"r{i}" for i in range(admitted)}


def test_an_owner_in_another_cohort_reclaims_through_the_tree() -> None:
    """r1 borrowed prod's quota through org; p1 reclaims it by preemption."""
    running = tuple(
        job(f"run-r{i}").gpus(8).queue("r1").running_on(f"h{i}", start=i) for i in range(4)
    )
    pending = (job("p").gpus(8).queue("p1").build(),)
    assert _decide(h100_nodes(4), tree(None, None), running, pending) == ({"p"}, {"run-r3"})


def test_fair_sharing_splits_borrowed_capacity_by_weight() -> None:
    """Weight 3 against weight 1 over a cohort's own 32 GPUs: 24 and 8 (equal weighted
    dominant shares), not 16 and 16."""
    config = (
        quotas()
        .flavor("h100", H100)
        .cohort("org", h100={"gpu": 32})
        .queue("heavy", "org", weight=3.0, h100={"gpu": 0})
        .queue("light", "org", weight=1.0, h100={"gpu": 0})
        .fair()
        .build()
    )
    pending = tuple(eights("heavy", 4) + eights("light", 4))
    got, _ = _decide(h100_nodes(4), config, (), pending)
    assert sum(j.startswith("heavy") for j in got) == 3
    assert sum(j.startswith("light") for j in got) == 1
