"""Table-driven decisions: named cases, built with fluent builders, want vs got."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from sched_builders import GI, job, node

from trainyard.scheduler import ClusterSnapshot, ReasonCode, SchedulerConfig, schedule
from trainyard.scheduler.types import (
    GPU_PRODUCT_LABEL,
    Node,
    Outcome,
    PendingJob,
    RunningJob,
    TaintEffect,
)

H100 = "NVIDIA-H100-80GB-HBM3"
A100 = "NVIDIA-A100-SXM4-40GB"


@dataclass
class Case:
    id: str
    nodes: list[Node]
    pending: list[PendingJob]
    want: dict[str, tuple[str, ...]]  # admitted job -> placement
    running: list[RunningJob] = field(default_factory=list)
    policy: str = "fifo-besteffort"
    want_pending: dict[str, ReasonCode] = field(default_factory=dict)
    want_preempted: dict[str, tuple[str, ...]] = field(default_factory=dict)
    now: float = 100.0


CASES = [
    Case(
        "one job fills the fullest node that still fits (best fit)",
        [node("n0").gpus(8).build(), node("n1").gpus(8).build()],
        [job("a").gpus(2).build()],
        {"a": ("n1",)},
        running=[job("r").gpus(4).running_on("n1")],
    ),
    Case(
        "gang prefers the fewest nodes",
        [node(f"n{i}").gpus(8).build() for i in range(3)],
        [job("a").gpus(4).workers(2).build()],
        {"a": ("n0", "n0")},
    ),
    Case(
        "multi-node gang stays within one zone when one can hold it",
        [
            node("a0").gpus(8).zone("za").build(),
            node("b0").gpus(8).zone("zb").build(),
            node("b1").gpus(8).zone("zb").build(),
        ],
        [job("g").gpus(8).workers(2).build()],
        {"g": ("b0", "b1")},
    ),
    Case(
        "gang goes to the tightest rack that holds it, keeping roomy racks whole",
        [
            node("r1a").gpus(8).zone("z").rack("r1").build(),
            node("r1b").gpus(8).zone("z").rack("r1").build(),
            node("r1c").gpus(8).zone("z").rack("r1").build(),
            node("r2a").gpus(8).zone("z").rack("r2").build(),
            node("r2b").gpus(8).zone("z").rack("r2").build(),
        ],
        [job("g").gpus(8).workers(2).build()],
        {"g": ("r2a", "r2b")},
    ),
    Case(
        "gang spans zones only when no single zone can hold it",
        [node("a0").gpus(8).zone("za").build(), node("b0").gpus(8).zone("zb").build()],
        [job("g").gpus(8).workers(2).build()],
        {"g": ("a0", "b0")},
    ),
    Case(
        "GPU model matched by substring of the product label",
        [node("a100").gpus(8, A100).build(), node("h100").gpus(8, H100).build()],
        [job("h").gpus(8, "H100").build(), job("x").gpus(1, "A100", "H100").submitted(1).build()],
        {"h": ("h100",), "x": ("a100",)},
    ),
    Case(
        "a model the cluster lacks never fits",
        [node("a100").gpus(8, A100).build()],
        [job("h").gpus(1, "H100").build()],
        {},
        want_pending={"h": ReasonCode.NEVER_FITS},
    ),
    Case(
        "a gang bigger than the cluster never fits",
        [node("n0").gpus(8).build()],
        [job("big").gpus(8).workers(2).build()],
        {},
        want_pending={"big": ReasonCode.NEVER_FITS},
    ),
    Case(
        "tainted node is avoided without a toleration",
        [node("t").gpus(8).taint("dedicated", "infer").build(), node("u").gpus(8).build()],
        [job("a").gpus(8).build(), job("b").gpus(8).submitted(1).build()],
        {"a": ("u",)},
        want_pending={"b": ReasonCode.INSUFFICIENT_CAPACITY},
    ),
    Case(
        "a matching toleration opens the tainted node",
        [node("t").gpus(8).taint("dedicated", "infer").build()],
        [job("a").gpus(8).tolerates("dedicated", "infer").build()],
        {"a": ("t",)},
    ),
    Case(
        "CPU-only work prefers CPU nodes",
        [node("gpu").gpus(8).build(), node("cpu").build()],
        [job("c").cpu(4000).build()],
        {"c": ("cpu",)},
    ),
    Case(
        "CPU-only work spills onto a GPU node when no CPU node can take it",
        [node("gpu").gpus(8).build(), node("cpu").cpu(1000).build()],
        [job("c").cpu(4000).build(), job("g").gpus(8).submitted(1).build()],
        {"c": ("gpu",), "g": ("gpu",)},
    ),
    Case(
        "unready nodes take nothing",
        [node("down").gpus(8).not_ready().build(), node("up").gpus(8).build()],
        [job("a").gpus(8).build(), job("b").gpus(8).submitted(1).build()],
        {"a": ("up",)},
    ),
    Case(
        "inference replicas spread across nodes",
        [node(f"n{i}").gpus(8).build() for i in range(3)],
        [job("svc").gpus(1).workers(3).inference().build()],
        {"svc": ("n0", "n1", "n2")},
    ),
    Case(
        "inference replicas share a node when there are not enough nodes",
        [node("n0").gpus(8).build()],
        [job("svc").gpus(2).workers(2).inference().build()],
        {"svc": ("n0", "n0")},
    ),
    Case(
        "capacity used outside Trainyard is not handed out",
        [Node("n0", 64_000, 512 * GI, gpus=8, labels={GPU_PRODUCT_LABEL: H100}, used_gpus=6)],
        [job("a").gpus(4).build(), job("b").gpus(2).submitted(1).build()],
        {"b": ("n0",)},
        want_pending={"a": ReasonCode.NEVER_FITS},
    ),
    Case(
        "PreferNoSchedule is advisory, not a filter",
        [node("soft").gpus(8).taint("spot", effect=TaintEffect.PREFER_NO_SCHEDULE).build()],
        [job("a").gpus(8).build()],
        {"a": ("soft",)},
    ),
    Case(
        "PreferNoSchedule nodes are used last, and a gang may mix them in",
        [
            node("soft").gpus(8).taint("spot", effect=TaintEffect.PREFER_NO_SCHEDULE).build(),
            node("plain").gpus(8).build(),
        ],
        [job("a").gpus(4).build(), job("g").gpus(4).workers(3).submitted(1).build()],
        {"a": ("plain",), "g": ("soft", "soft", "plain")},
    ),
    Case(
        "TPU work needs the asked type and topology",
        [
            node("v5e").tpu(4, "tpu-v5-lite-podslice", "2x2").build(),
            node("v5p").tpu(4, "tpu-v5p-slice", "2x2x1").build(),
        ],
        [job("t").tpu(4, "tpu-v5p-slice", "2x2x1").build()],
        {"t": ("v5p",)},
    ),
    Case(
        "GPU shares pack onto one GPU",
        [node("n0").gpus(1).build()],
        [
            job("a").gpu_share(500).build(),
            job("b").gpu_share(400).submitted(1).build(),
            job("c").gpu_share(200).submitted(2).build(),
        ],
        {"a": ("n0",), "b": ("n0",)},
        want_pending={"c": ReasonCode.INSUFFICIENT_CAPACITY},
    ),
    Case(
        "fifo: a blocked head blocks its queue, not other queues",
        [node("n0").gpus(8).build()],
        [
            job("head").gpus(8).queue("q1").build(),
            job("small").gpus(1).queue("q1").submitted(1).build(),
            job("other").gpus(1).queue("q2").submitted(2).build(),
        ],
        {"other": ("n0",)},
        running=[job("r").gpus(4).running_on("n0")],
        policy="fifo",
        want_pending={
            "head": ReasonCode.INSUFFICIENT_CAPACITY,
            "small": ReasonCode.BEHIND_QUEUE_HEAD,
        },
    ),
    Case(
        "fifo-besteffort: a blocked head is skipped",
        [node("n0").gpus(8).build()],
        [job("head").gpus(8).build(), job("small").gpus(1).submitted(1).build()],
        {"small": ("n0",)},
        running=[job("r").gpus(4).running_on("n0")],
    ),
    Case(
        "priority: higher class first, then age",
        [node("n0").gpus(8).build()],
        [
            job("old-low").gpus(8).build(),
            job("new-high").gpus(8).priority(100).submitted(50).build(),
        ],
        {"new-high": ("n0",)},
        policy="priority",
    ),
    Case(
        "priority: aging lets an old low-priority job overtake",
        [node("n0").gpus(8).build()],
        [
            job("old-low").gpus(8).build(),
            job("new-high").gpus(8).priority(2).submitted(3 * 3600).build(),
        ],
        {"old-low": ("n0",)},
        policy="priority",
        now=4 * 3600,
    ),
    Case(
        "backfill: a short job starts before the reservation, a long one waits",
        [node("n0").gpus(8).build()],
        [
            job("head").gpus(8).limit(1000).build(),
            job("long").gpus(4).limit(5000).submitted(1).build(),
            job("short").gpus(4).limit(100).submitted(2).build(),
        ],
        {"short": ("n0",)},
        running=[job("r").gpus(4).running_on("n0", end=300)],
        policy="backfill",
        want_pending={"head": ReasonCode.RESERVED, "long": ReasonCode.WOULD_DELAY_RESERVATION},
    ),
    Case(
        "preemption evicts the lowest priority, fewest GPU-hours lost",
        [node("n0").gpus(8).build(), node("n1").gpus(8).build()],
        [job("vip").gpus(8).priority(100).build()],
        {"vip": ("n1",)},
        running=[
            job("mid").gpus(8).priority(50).running_on("n0", start=0),
            job("low-old").gpus(4).priority(10).running_on("n1", start=0),
            job("low-new").gpus(4).priority(10).running_on("n1", start=90),
        ],
        policy="priority",
        want_preempted={"vip": ("low-new", "low-old")},
    ),
    Case(
        "no preemption of non-preemptible or equal-priority jobs",
        [node("n0").gpus(8).build()],
        [job("vip").gpus(8).priority(100).build()],
        {},
        running=[
            job("pinned").gpus(4).priority(1).not_preemptible().running_on("n0"),
            job("peer").gpus(4).priority(100).running_on("n0"),
        ],
        policy="priority",
        want_pending={"vip": ReasonCode.INSUFFICIENT_CAPACITY},
    ),
    Case(
        "never preempt for a job that would still not fit",
        [node("n0").gpus(8).build()],
        [job("huge").gpus(8).workers(2).priority(100).build()],
        {},
        running=[job("low").gpus(8).priority(1).running_on("n0")],
        policy="priority",
        want_pending={"huge": ReasonCode.NEVER_FITS},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decisions(case: Case) -> None:
    snapshot = ClusterSnapshot(tuple(case.nodes), tuple(case.running), tuple(case.pending))
    result = schedule(snapshot, case.now, SchedulerConfig(default_policy=case.policy))
    got = {a.job_id: a.placement for a in result.admissions}
    assert got == case.want
    for job_id, code in case.want_pending.items():
        assert result.pending[job_id].code == code, result.pending[job_id].message
        capacity = code in (ReasonCode.NEVER_FITS, ReasonCode.INSUFFICIENT_CAPACITY)
        assert result.pending[job_id].outcome == (Outcome.NO_FIT if capacity else Outcome.BLOCKED)
    got_preempted = {a.job_id: a.preempts for a in result.admissions if a.preempts}
    assert got_preempted == case.want_preempted
    assert set(result.pending) == {j.id for j in case.pending} - set(got)


def test_pending_message_names_shape_and_largest_free_block() -> None:
    nodes = (
        node("a").gpus(8).zone("z1").build(),
        node("b").gpus(8).zone("z1").build(),
    )
    running = (job("r").gpus(4).running_on("b"),)
    pending = (job("g").gpus(8, "H100").workers(2).build(),)
    result = schedule(ClusterSnapshot(nodes, running, pending), 0.0)
    assert result.pending["g"].message == (
        "needs 2 workers x 8 H100 in one zone; largest free block is 1 node with 8 GPUs free"
    )


def test_reservation_reports_time_and_nodes() -> None:
    nodes = (node("n0").gpus(8).build(), node("n1").gpus(8).build())
    running = (
        job("r0").gpus(8).running_on("n0", end=500),
        job("r1").gpus(4).running_on("n1", end=200),
    )
    pending = (job("head").gpus(8).limit(100).build(),)
    result = schedule(ClusterSnapshot(nodes, running, pending), 0.0, SchedulerConfig("backfill"))
    assert [(r.job_id, r.start_time, r.placement) for r in result.reservations] == [
        ("head", 200, ("n1",))
    ]
    assert "holds the backfill reservation starting at t=200" in result.pending["head"].message


def test_per_queue_policy_selection() -> None:
    nodes = (node("n0").gpus(8).build(),)
    running = (job("r").gpus(4).running_on("n0"),)
    pending = (
        job("s-head").gpus(8).queue("strict").build(),
        job("s-next").gpus(1).queue("strict").submitted(1).build(),
        job("l-head").gpus(8).queue("loose").submitted(2).build(),
        job("l-next").gpus(1).queue("loose").submitted(3).build(),
    )
    config = SchedulerConfig(default_policy="fifo-besteffort", queue_policies={"strict": "fifo"})
    result = schedule(ClusterSnapshot(nodes, running, pending), 10.0, config)
    assert [a.job_id for a in result.admissions] == ["l-next"]
    assert result.pending["s-next"].code == ReasonCode.BEHIND_QUEUE_HEAD


def test_unknown_policy_names_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match="unknown policy 'sjf'; known policies: fifo, fifo-besteffort"
    ):
        SchedulerConfig(default_policy="sjf").resolver()


def test_inputs_are_not_mutated_and_decisions_repeat() -> None:
    nodes = (node("n0").gpus(8).build(), node("n1").gpus(8).build())
    running = (job("r").gpus(4).running_on("n0", end=50),)
    pending = tuple(
        job(f"j{i}").gpus(1 + i % 4).submitted(i).limit(10 * i + 1).build() for i in range(12)
    )
    snapshot = ClusterSnapshot(nodes, running, pending)
    first = schedule(snapshot, 5.0, SchedulerConfig("backfill"))
    second = schedule(snapshot, 5.0, SchedulerConfig("backfill"))
    assert first.admissions == second.admissions
    assert {k: v.message for k, v in first.pending.items()} == {
        k: v.message for k, v in second.pending.items()
    }


def test_empty_inputs_decide_nothing() -> None:
    assert schedule(ClusterSnapshot(()), 0.0).admissions == []
    lonely = schedule(ClusterSnapshot((), (), (job("a").gpus(1).build(),)), 0.0)
    assert lonely.admissions == []
    assert lonely.pending["a"].code == ReasonCode.NEVER_FITS
    assert "no ready node matches" in lonely.pending["a"].message


def test_duplicate_pending_ids_are_rejected() -> None:
    twice = (job("a").gpus(1).build(), job("a").gpus(2).build())
    with pytest.raises(ValueError, match="job a is already pending"):
        schedule(ClusterSnapshot((node("n").gpus(8).build(),), (), twice), 0.0)


def test_running_job_on_a_vanished_node_holds_nothing() -> None:
    nodes = (node("n0").gpus(8).build(),)
    running = (job("ghost").gpus(8).running_on("gone"),)
    result = schedule(ClusterSnapshot(nodes, running, (job("a").gpus(8).build(),)), 0.0)
    assert [a.placement for a in result.admissions] == [("n0",)]
