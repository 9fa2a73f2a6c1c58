"""Worker 0 back on the node holding its checkpoint (`PendingJob.preferred_node`).

The preference is scoring: honoured when the node can take worker 0, never a reason to
stay pending, and the rest of the gang is placed around it.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sched_builders import job, node, quotas

from trainyard.scheduler import ClusterSnapshot, SchedulerConfig, schedule
from trainyard.scheduler.types import TaintEffect

H100 = "NVIDIA-H100-80GB-HBM3"


def prefer(pending, node_name):
    return replace(pending, preferred_node=node_name)


def placement(snapshot: ClusterSnapshot, config: SchedulerConfig | None = None) -> dict:
    result = schedule(snapshot, 100.0, config or SchedulerConfig("fifo-besteffort"))
    return {a.job_id: a.placement for a in result.admissions}


def test_single_worker_goes_back_to_its_node_instead_of_the_first_fit():
    nodes = (node("n0").gpus(8).build(), node("n1").gpus(8).build())
    plain = job("a").gpus(8).build()
    assert placement(ClusterSnapshot(nodes, (), (plain,))) == {"a": ("n0",)}
    assert placement(ClusterSnapshot(nodes, (), (prefer(plain, "n1"),))) == {"a": ("n1",)}


def test_gang_that_fits_the_preferred_node_stays_whole_there():
    nodes = tuple(node(f"n{i}").gpus(8).build() for i in range(3))
    gang = prefer(job("g").gpus(4).workers(2).build(), "n2")
    assert placement(ClusterSnapshot(nodes, (), (gang,))) == {"g": ("n2", "n2")}


def test_plain_placement_using_the_node_puts_worker_0_there():
    """The plain choice spans n0 and n1 (best fit for the remainder); with n1 preferred
    the same nodes are used, n1 first."""
    nodes = (node("n0").gpus(8).build(), node("n1").gpus(8).build())
    running = (job("r").gpus(4).running_on("n1"),)
    gang = job("g").gpus(4).workers(3).build()
    got = placement(ClusterSnapshot(nodes, running, (gang,)))["g"]
    assert sorted(got) == ["n0", "n0", "n1"] and got[0] == "n0"
    pinned = placement(ClusterSnapshot(nodes, running, (prefer(gang, "n1"),)))["g"]
    assert pinned[0] == "n1" and sorted(pinned) == ["n0", "n0", "n1"]


def test_part_of_the_gang_on_the_preferred_node_the_rest_around_it():
    """n2 has room for one worker only: worker 0 goes there, worker 1 on another node,
    although the plain placement would have kept the gang on one node."""
    nodes = tuple(node(f"n{i}").gpus(8).build() for i in range(3))
    running = (job("r").gpus(4).running_on("n2"),)
    gang = job("g").gpus(4).workers(2).build()
    assert placement(ClusterSnapshot(nodes, running, (gang,))) == {"g": ("n0", "n0")}
    got = placement(ClusterSnapshot(nodes, running, (prefer(gang, "n2"),)))["g"]
    assert got[0] == "n2" and got[1] in ("n0", "n1")


def test_a_full_preferred_node_does_not_keep_the_job_pending():
    nodes = (node("n0").gpus(8).build(), node("n1").gpus(8).build())
    running = (job("r").gpus(8).running_on("n1"),)
    pinned = prefer(job("a").gpus(8).build(), "n1")
    assert placement(ClusterSnapshot(nodes, running, (pinned,))) == {"a": ("n0",)}


def test_a_gone_or_not_ready_preferred_node_does_not_keep_the_job_pending():
    nodes = (node("n0").gpus(8).build(), node("n1").gpus(8).not_ready().build())
    for gone in ("n1", "n9"):
        pinned = prefer(job("a").gpus(8).build(), gone)
        assert placement(ClusterSnapshot(nodes, (), (pinned,))) == {"a": ("n0",)}


def test_a_preferred_node_the_job_may_not_use_is_not_used():
    nodes = (
        node("n0").gpus(8).build(),
        node("n1").gpus(8).taint("dedicated", "other", TaintEffect.NO_SCHEDULE).build(),
    )
    pinned = prefer(job("a").gpus(8).build(), "n1")
    assert placement(ClusterSnapshot(nodes, (), (pinned,))) == {"a": ("n0",)}


def test_inference_gang_keeps_spreading_with_a_preferred_node():
    nodes = tuple(node(f"n{i}").gpus(8).build() for i in range(3))
    replicas = prefer(job("s").gpus(1).workers(3).inference().build(), "n2")
    got = placement(ClusterSnapshot(nodes, (), (replicas,)))["s"]
    assert got[0] == "n2" and sorted(got) == ["n0", "n1", "n2"]


def test_quota_admission_honours_the_preferred_node():
    nodes = (node("n0").gpus(8).build(), node("n1").gpus(8).build())
    config = SchedulerConfig(
        "fifo-besteffort", quotas=quotas().flavor("h100", H100).queue("q", h100={"gpu": 8}).build()
    )
    pinned = prefer(job("a").gpus(8).queue("q").build(), "n1")
    assert placement(ClusterSnapshot(nodes, (), (pinned,)), config) == {"a": ("n1",)}


@st.composite
def clusters(draw):
    count = draw(st.integers(1, 5))
    sizes = [draw(st.sampled_from([2, 4, 8])) for _ in range(count)]
    nodes = tuple(node(f"n{i}").gpus(size).build() for i, size in enumerate(sizes))
    running = []
    for i, n in enumerate(nodes):
        used = draw(st.integers(0, n.gpus))
        if used:
            running.append(job(f"r{i}").gpus(used).running_on(n.name))
    gpus = draw(st.sampled_from([1, 2, 4]))
    gang = job("g").gpus(gpus).workers(draw(st.integers(1, 4))).build()
    return nodes, tuple(running), gang, f"n{draw(st.integers(0, count))}"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters())
def test_preference_never_keeps_a_job_pending_and_is_honoured_when_the_node_has_room(drawn):
    nodes, running, gang, preferred = drawn
    plain = placement(ClusterSnapshot(nodes, running, (gang,)))
    pinned_snapshot = ClusterSnapshot(nodes, running, (prefer(gang, preferred),))
    pinned = placement(pinned_snapshot)
    assert placement(pinned_snapshot) == pinned  # deterministic
    if plain:
        assert pinned, "a preferred node made a placeable job wait"
    if pinned:
        got = pinned["g"]
        assert len(got) == gang.workers
        free = {n.name: n.gpus for n in nodes}
        for r in running:
            free[r.placement[0]] -= r.request.gpus
        before = dict(free)
        for name in got:
            free[name] -= gang.request.gpus
        assert min(free.values()) >= 0
        if before.get(preferred, 0) >= gang.request.gpus:
            assert got[0] == preferred, "the preferred node had room for worker 0"
