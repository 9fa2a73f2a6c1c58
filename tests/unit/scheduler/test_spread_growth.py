"""A replica added to a running model service prefers a node none of its replicas runs
on (`PendingJob.avoid_nodes`): the plain placement (best fit for whole GPUs, first fit
for CPU-only work) would pack it beside them, where one node's loss takes both.

Scoring, never a filter: with no other node that has room it goes where it fits.
"""

from __future__ import annotations

from dataclasses import replace

from sched_builders import job, node

from trainyard.scheduler import ClusterSnapshot, SchedulerConfig, schedule


def placement(snapshot: ClusterSnapshot) -> dict:
    result = schedule(snapshot, 100.0, SchedulerConfig("fifo-besteffort"))
    return {a.job_id: a.placement for a in result.admissions}


def test_a_gpu_replica_goes_beside_no_other_replica_though_best_fit_packs_it_there():
    nodes = tuple(node(f"n{i}").gpus(8).build() for i in range(3))
    running = (job("svc").gpus(1).running_on("n1"),)
    replica = job("svc~1").gpus(1).build()
    assert placement(ClusterSnapshot(nodes, running, (replica,))) == {"svc~1": ("n1",)}
    spread = replace(replica, avoid_nodes=("n1",))
    got = placement(ClusterSnapshot(nodes, running, (spread,)))["svc~1"]
    assert got[0] != "n1"


def test_a_cpu_replica_avoids_every_node_of_its_service():
    nodes = tuple(node(f"n{i}").cpu(8000).build() for i in range(3))
    running = (job("svc").cpu(1000).running_on("n0"), job("svc~1").cpu(1000).running_on("n1"))
    replica = job("svc~2").cpu(1000).build()
    assert placement(ClusterSnapshot(nodes, running, (replica,))) == {"svc~2": ("n0",)}
    spread = replace(replica, avoid_nodes=("n0", "n1"))
    assert placement(ClusterSnapshot(nodes, running, (spread,))) == {"svc~2": ("n2",)}


def test_with_no_other_node_with_room_it_still_goes_where_it_fits():
    nodes = (node("n0").gpus(8).build(), node("n1").gpus(8).build())
    running = (job("svc").gpus(1).running_on("n0"), job("other").gpus(8).running_on("n1"))
    spread = replace(job("svc~1").gpus(1).build(), avoid_nodes=("n0", "gone"))
    assert placement(ClusterSnapshot(nodes, running, (spread,))) == {"svc~1": ("n0",)}


def test_the_trial_gives_back_exactly_what_it_held():
    """After a spread replica, the next job still sees the avoided node's room."""
    nodes = (node("n0").gpus(8).build(), node("n1").gpus(8).build())
    running = (job("svc").gpus(1).running_on("n0"),)
    spread = replace(job("svc~1").gpus(1).build(), avoid_nodes=("n0",))
    big = job("big").gpus(7).build()
    got = placement(ClusterSnapshot(nodes, running, (spread, big)))
    assert got["svc~1"] == ("n1",) and got["big"] == ("n0",)
