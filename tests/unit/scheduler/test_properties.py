"""Property-based tests over random clusters and queues (hypothesis)."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from trainyard.scheduler import (
    ClusterSnapshot,
    CycleResult,
    JobKind,
    Node,
    PendingJob,
    RunningJob,
    SchedulerConfig,
    Taint,
    Toleration,
    WorkerRequest,
    schedule,
)
from trainyard.scheduler.api import build_running
from trainyard.scheduler.capacity import ClusterIndex
from trainyard.scheduler.filters import eligible_tiers
from trainyard.scheduler.reservation import plan_reservation
from trainyard.scheduler.types import DEFAULT_RACK_LABEL, GPU_PRODUCT_LABEL, ZONE_LABEL

GI = 2**30
PROFILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
POLICIES = ["fifo", "fifo-besteffort", "priority", "backfill", "multifactor"]


@st.composite
def nodes(draw: st.DrawFn) -> list[Node]:
    count = draw(st.integers(1, 7))
    out = []
    for i in range(count):
        kind = draw(st.sampled_from(["h100x8", "h100x4", "a100x8", "cpu"]))
        labels = {
            ZONE_LABEL: draw(st.sampled_from(["z1", "z2"])),
            DEFAULT_RACK_LABEL: draw(st.sampled_from(["", "r1", "r2"])),
        }
        gpus = 0
        if kind != "cpu":
            gpus = 8 if kind.endswith("x8") else 4
            labels[GPU_PRODUCT_LABEL] = (
                "NVIDIA-H100-80GB" if kind.startswith("h100") else "NVIDIA-A100-40GB"
            )
        taints = (Taint("dedicated", "x"),) if draw(st.integers(0, 5)) == 0 else ()
        out.append(
            Node(
                f"n{i}",
                draw(st.sampled_from([8000, 32000, 64000])),
                draw(st.sampled_from([64, 256])) * GI,
                gpus=gpus,
                labels=labels,
                taints=taints,
                ready=draw(st.integers(0, 9)) > 0,
            )
        )
    return out


@st.composite
def requests(draw: st.DrawFn) -> WorkerRequest:
    what = draw(st.sampled_from(["gpu", "gpu", "gpu", "share", "cpu"]))
    cpu = draw(st.sampled_from([0, 1000, 4000, 16000]))
    mem = draw(st.sampled_from([0, 8, 64])) * GI
    if what == "gpu":
        models = draw(st.sampled_from([(), (), ("H100",), ("A100",), ("A100", "H100")]))
        return WorkerRequest(cpu, mem, gpus=draw(st.sampled_from([1, 2, 4, 8])), gpu_models=models)
    if what == "share":
        return WorkerRequest(cpu, mem, gpu_share_milli=draw(st.sampled_from([250, 500, 700])))
    return WorkerRequest(max(cpu, 500), mem)


@st.composite
def jobs(
    draw: st.DrawFn, prefix: str, max_size: int, queues: tuple[str, ...] = ("q1", "q2")
) -> list[PendingJob]:
    count = draw(st.integers(0, max_size))
    out = []
    for i in range(count):
        out.append(
            PendingJob(
                f"{prefix}{i}",
                draw(requests()),
                workers=draw(st.sampled_from([1, 1, 1, 2, 3])),
                queue=draw(st.sampled_from(queues)),
                priority=draw(st.sampled_from([0, 10, 20])),
                submit_time=float(draw(st.integers(0, 40))),
                runtime_limit=draw(st.sampled_from([None, 5.0, 30.0, 120.0, 600.0])),
                preemptible=draw(st.booleans()),
                kind=draw(st.sampled_from([JobKind.TRAINING, JobKind.TRAINING, JobKind.INFERENCE])),
                tolerations=(Toleration("dedicated", "Equal", "x"),) if draw(st.booleans()) else (),
            )
        )
    return out


@st.composite
def snapshots(draw: st.DrawFn, queues: tuple[str, ...] = ("q1", "q2")) -> ClusterSnapshot:
    """A cluster, some jobs already running there (placed by the core itself), a queue."""
    cluster = tuple(draw(nodes()))
    first = draw(jobs("r", 8, queues))
    seeded = schedule(
        ClusterSnapshot(cluster, (), tuple(first)), 0.0, SchedulerConfig("fifo-besteffort")
    )
    by_id = {j.id: j for j in first}
    running = tuple(
        RunningJob(
            a.job_id,
            by_id[a.job_id].request,
            a.placement,
            0.0,
            queue=by_id[a.job_id].queue,
            priority=by_id[a.job_id].priority,
            expected_end=by_id[a.job_id].runtime_limit,
            preemptible=by_id[a.job_id].preemptible,
        )
        for a in seeded.admissions
    )
    return ClusterSnapshot(cluster, running, tuple(draw(jobs("p", 14, queues))))


def _check_no_overcommit(snapshot: ClusterSnapshot, result: CycleResult) -> None:
    nodes_by_name = {n.name: n for n in snapshot.nodes}
    victims = set(result.preempted)
    use: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    holders = [(r.request, r.placement) for r in snapshot.running if r.id not in victims]
    pending = {j.id: j for j in snapshot.pending}
    for a in result.admissions:
        j = pending[a.job_id]
        assert len(a.placement) == j.workers, "partial gang"
        holders.append((j.request, a.placement))
        for name in a.placement:
            nd = nodes_by_name[name]
            assert nd.ready
            assert all(any(t.tolerates(taint) for t in j.tolerations) for taint in nd.taints)
            if j.request.uses_gpu:
                assert nd.gpus > 0
                product = nd.gpu_product.lower()
                assert not j.request.gpu_models or any(
                    m.lower() in product for m in j.request.gpu_models
                )
    for request, placement in holders:
        for name in placement:
            u = use[name]
            u[0] += request.cpu_millicores
            u[1] += request.memory_bytes
            u[2] += request.gpu_milli
    for name, (cpu, mem, milli) in use.items():
        nd = nodes_by_name[name]
        assert cpu <= nd.cpu_millicores, f"{name} cpu over-committed"
        assert mem <= nd.memory_bytes, f"{name} memory over-committed"
        assert milli <= nd.gpus * 1000, f"{name} GPUs over-committed"


@PROFILE
@given(snapshots(), st.sampled_from(POLICIES))
def test_no_overcommit_no_partial_gang(snapshot: ClusterSnapshot, policy: str) -> None:
    result = schedule(snapshot, 10.0, SchedulerConfig(policy))
    _check_no_overcommit(snapshot, result)
    decided = {a.job_id for a in result.admissions}
    assert decided | set(result.pending) == {j.id for j in snapshot.pending}
    assert not decided & set(result.pending)
    assert all(reason.message for reason in result.pending.values())


@PROFILE
@given(snapshots())
def test_strict_fifo_never_starts_a_job_ahead_of_an_earlier_one(snapshot: ClusterSnapshot) -> None:
    result = schedule(snapshot, 10.0, SchedulerConfig("fifo"))
    event(f"admitted: {min(len(result.admissions), 3)}, pending: {min(len(result.pending), 3)}")
    admitted = {a.job_id for a in result.admissions}
    by_queue: dict[str, list[PendingJob]] = defaultdict(list)
    for j in snapshot.pending:
        by_queue[j.queue].append(j)
    for queue_jobs in by_queue.values():
        order = [j.id for j in sorted(queue_jobs, key=lambda j: (j.submit_time, j.id))]
        started = [job_id in admitted for job_id in order]
        assert started == sorted(started, reverse=True), (
            f"not a prefix: {list(zip(order, started, strict=True))}"
        )


@PROFILE
@given(snapshots(queues=("q1",)))
def test_backfill_never_delays_the_reservation(snapshot: ClusterSnapshot) -> None:
    now = 10.0
    result = schedule(snapshot, now, SchedulerConfig("backfill"))
    pending = {j.id: j for j in snapshot.pending}
    started = []
    for a in result.admissions:
        j = pending[a.job_id]
        end = now + j.runtime_limit if j.runtime_limit is not None else None
        started.append(
            RunningJob(j.id, j.request, a.placement, now, queue=j.queue, expected_end=end)
        )
    event(
        f"reservations: {len(result.reservations)}, "
        f"backfilled: {sum(a.backfilled for a in result.admissions)}"
    )
    for reservation in result.reservations:
        head = pending[reservation.job_id]
        index = ClusterIndex(snapshot.nodes, snapshot.rack_label)
        running = build_running(index, (*snapshot.running, *started))
        tiers = eligible_tiers(index.pools, head.request, head.tolerations)
        again = plan_reservation(index, running, head, tiers, now)
        assert again is not None, "backfill made the reservation impossible"
        assert again.start_time <= reservation.start_time


@PROFILE
@given(snapshots())
def test_preemption_frees_what_it_claims(snapshot: ClusterSnapshot) -> None:
    result = schedule(snapshot, 10.0, SchedulerConfig("priority"))
    _check_no_overcommit(snapshot, result)  # victims removed, preemptors placed: fits
    running = {r.id: r for r in snapshot.running}
    pending = {j.id: j for j in snapshot.pending}
    seen: set[str] = set()
    event(f"preemptions: {min(len(result.preempted), 2)}")
    for a in result.admissions:
        for victim in a.preempts:
            assert victim in running and victim not in seen
            seen.add(victim)
            assert running[victim].preemptible
            assert running[victim].priority < pending[a.job_id].priority


@PROFILE
@given(snapshots(), st.sampled_from(POLICIES), st.randoms(use_true_random=False))
def test_decisions_are_deterministic(snapshot: ClusterSnapshot, policy: str, rnd) -> None:  # type: ignore[no-untyped-def]
    first = schedule(snapshot, 10.0, SchedulerConfig(policy))
    shuffled = list(snapshot.pending)
    rnd.shuffle(shuffled)
    second = schedule(
        ClusterSnapshot(snapshot.nodes, snapshot.running, tuple(shuffled)),
        10.0,
        SchedulerConfig(policy),
    )
    assert first.admissions == second.admissions
    assert first.reservations == second.reservations
    assert {k: v.message for k, v in first.pending.items()} == {
        k: v.message for k, v in second.pending.items()
    }


@st.composite
def gpu_only_snapshots(draw: st.DrawFn) -> ClusterSnapshot:
    """Homogeneous GPU nodes in two zones, GPU-only training gangs: only topology decides."""
    cluster = tuple(
        Node(
            f"n{i}",
            64_000,
            256 * GI,
            gpus=8,
            labels={ZONE_LABEL: draw(st.sampled_from(["z1", "z2"])), GPU_PRODUCT_LABEL: "H100"},
        )
        for i in range(draw(st.integers(2, 8)))
    )
    running = []
    for i, n in enumerate(cluster):
        used = draw(st.sampled_from([0, 0, 4, 8]))
        if used:
            running.append(RunningJob(f"r{i}", WorkerRequest(gpus=used), (n.name,), 0.0))
    pending = tuple(
        PendingJob(
            f"p{i}",
            WorkerRequest(gpus=draw(st.sampled_from([4, 8]))),
            workers=draw(st.integers(1, 4)),
            submit_time=float(i),
        )
        for i in range(draw(st.integers(1, 6)))
    )
    return ClusterSnapshot(cluster, tuple(running), pending)


@PROFILE
@given(gpu_only_snapshots())
def test_gangs_stay_in_one_zone_when_one_can_hold_them(snapshot: ClusterSnapshot) -> None:
    result = schedule(snapshot, 0.0, SchedulerConfig("fifo-besteffort"))
    zone = {n.name: n.zone for n in snapshot.nodes}
    free = {n.name: n.gpus for n in snapshot.nodes}
    for r in snapshot.running:
        for name in r.placement:
            free[name] -= r.request.gpus
    pending = {j.id: j for j in snapshot.pending}
    for a in result.admissions:
        j = pending[a.job_id]
        per_node = j.request.gpus
        room = {z: 0 for z in zone.values()}
        for name, f in free.items():
            room[zone[name]] += f // per_node
        zones_used = {zone[name] for name in a.placement}
        event(f"nodes used: {len(set(a.placement))}, zones used: {len(zones_used)}")
        if any(r >= j.workers for r in room.values()):
            assert len(zones_used) == 1, f"{a.job_id} split over {zones_used} though a zone fit"
        # Fewest nodes: as few as the roomiest nodes of the zone(s) it used would need.
        rooms = sorted((free[n] // per_node for n in free if zone[n] in zones_used), reverse=True)
        fewest, held = 0, 0
        while held < j.workers:
            held += rooms[fewest]
            fewest += 1
        assert len(set(a.placement)) == fewest, f"{a.job_id} on more nodes than needed"
        for name in a.placement:
            free[name] -= per_node
            assert free[name] >= 0
