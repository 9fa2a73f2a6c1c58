"""Speed work must not change decisions: fingerprints recorded before it, and the
batch paths checked against their one-at-a-time originals.

The digests below were recorded with the code as it stood before the cycle-time work
(commit 72bfb97). A change that alters decisions or pending reasons ON PURPOSE must
say so and re-record them (`digest(...)` below prints the new value in the failure).
"""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainyard.scheduler import (
    ClusterSnapshot,
    CycleResult,
    Node,
    PendingJob,
    RunningJob,
    SchedulerConfig,
    WorkerRequest,
    schedule,
)
from trainyard.scheduler.ordering import (
    FifoOrder,
    MultifactorOrder,
    MultifactorWeights,
    OrderingContext,
    PriorityAgingOrder,
)
from trainyard.scheduler.queueing import PendingSet
from trainyard.scheduler.types import DEFAULT_RACK_LABEL, GPU_PRODUCT_LABEL, ZONE_LABEL

GI = 2**30
SHAPES = [(1, 1)] * 16 + [(2, 1), (4, 1), (8, 1), (8, 1), (8, 2), (8, 4)]


def busy_cluster(seed: int, nodes: int, running: int, pending: int) -> ClusterSnapshot:
    """A smaller copy of the cycle benchmark's scenario: 8-GPU nodes in 4 zones, a third
    of the running gangs preemptible, three priority classes, so every action (place,
    preempt, reserve, explain) is exercised."""
    rnd = random.Random(seed)
    cluster = tuple(
        Node(
            f"n{i:04d}",
            128_000,
            1024 * GI,
            gpus=8,
            labels={
                GPU_PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3",
                ZONE_LABEL: f"z{i % 4}",
                DEFAULT_RACK_LABEL: f"r{i // 16}",
            },
        )
        for i in range(nodes)
    )
    per_job = max(nodes // running, 1)
    held = tuple(
        RunningJob(
            f"run{i:04d}",
            WorkerRequest(4000, 32 * GI, gpus=7 if i % 10 == 0 else 8),
            tuple(n.name for n in cluster[i * per_job : (i + 1) * per_job]),
            0.0,
            queue=f"q{i % 4}",
            priority=rnd.choice([0, 100, 1000]),
            expected_end=float(rnd.randint(60, 86_400)),
            preemptible=i % 3 == 0,
        )
        for i in range(running)
    )
    waiting = []
    for i in range(pending):
        gpus, workers = rnd.choice(SHAPES)
        waiting.append(
            PendingJob(
                f"job{i:05d}",
                WorkerRequest(4000 * gpus, 32 * GI * gpus, gpus=gpus),
                workers=workers,
                queue=f"q{i % 4}",
                priority=rnd.choice([0, 0, 100, 1000]),
                submit_time=float(rnd.randint(0, 10_000)),
                runtime_limit=float(rnd.randint(60, 86_400)),
            )
        )
    return ClusterSnapshot(cluster, held, tuple(waiting))


def digest(result: CycleResult) -> str:
    """Admissions (placement, victims), reservations and every pending message, hashed."""
    text = repr(
        (
            [(a.job_id, a.placement, a.preempts, a.backfilled) for a in result.admissions],
            [(r.job_id, r.start_time, r.placement) for r in result.reservations],
            [(job_id, reason.message) for job_id, reason in result.pending.items()],
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


RECORDED = {
    "fifo": "367c9bc37d1f2598",
    "fifo-besteffort": "b9179d502984f862",
    "priority": "21c0f5cbadfc1b56",
    "backfill": "5091fbaf604f4caf",
    "multifactor": "ab2982d62d12be37",
}


@pytest.mark.parametrize("policy", list(RECORDED))
def test_decisions_match_those_recorded_before_the_speed_work(policy: str) -> None:
    snapshot = busy_cluster(seed=3, nodes=160, running=100, pending=1500)
    result = schedule(snapshot, 20_000.0, SchedulerConfig(policy), explain=True)
    assert result.admissions, "the scenario should admit something"
    assert digest(result) == RECORDED[policy]


jobs_strategy = st.lists(
    st.builds(
        PendingJob,
        st.uuids().map(str),
        st.builds(
            WorkerRequest,
            st.sampled_from([0, 1000]),
            st.sampled_from([0, GI]),
            gpus=st.integers(0, 8),
        ),
        workers=st.integers(1, 4),
        queue=st.sampled_from(["a", "b", "c"]),
        priority=st.integers(-100, 3000),
        submit_time=st.floats(0, 1e7, allow_nan=False),
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(
    jobs_strategy,
    st.floats(0, 2e7, allow_nan=False),
    st.integers(0, 64),
    st.dictionaries(st.sampled_from(["a", "b"]), st.floats(-0.5, 1.5, allow_nan=False)),
)
def test_batch_rank_keys_equal_one_at_a_time_keys(
    jobs: list[PendingJob], now: float, total_gpus: int, shares: dict[str, float]
) -> None:
    ctx = OrderingContext(now=now, total_gpus=total_gpus, queue_gpu_share=shares)
    for ordering in (FifoOrder(), PriorityAgingOrder(aging_per_hour=3.5), MultifactorOrder()):
        assert ordering.keys(jobs, ctx) == [ordering.key(job, ctx) for job in jobs]
    # Per-lane batches (one queue and shape) are bit-identical too.
    lanes: dict[tuple, list[PendingJob]] = {}
    for job in jobs:
        lanes.setdefault((job.queue, job.request, job.workers), []).append(job)
    multifactor = MultifactorOrder()
    for members in lanes.values():
        assert multifactor.lane_keys(members, ctx) == [multifactor.key(j, ctx) for j in members]


def test_a_duplicate_in_a_batch_leaves_the_pending_set_as_it_was() -> None:
    policy_for = SchedulerConfig("priority").resolver()
    pending = PendingSet(policy_for, OrderingContext(now=0.0))
    first = PendingJob("a", WorkerRequest(gpus=1), submit_time=1.0)
    pending.extend([first])
    batch = [PendingJob("b", WorkerRequest(gpus=2)), PendingJob("a", WorkerRequest(gpus=1))]
    with pytest.raises(ValueError, match="job a is already pending"):
        pending.extend(batch)
    assert list(pending.jobs) == ["a"]
    assert pending.ordered() == [first]


@settings(max_examples=60, deadline=None)
@given(
    jobs_strategy,
    st.floats(0, 2e7, allow_nan=False),
    st.integers(0, 64),
    st.dictionaries(st.sampled_from(["a", "b"]), st.floats(-0.5, 1.5, allow_nan=False)),
)
def test_stable_multifactor_lanes_walk_in_the_order_of_a_full_re_rank(
    jobs: list[PendingJob], now: float, total_gpus: int, shares: dict[str, float]
) -> None:
    """Multifactor lanes keep priority groups sorted by submit time and rank lazily; the
    walk must equal sorting the lane by the keys a full re-rank would compute."""
    policy_for = SchedulerConfig("multifactor").resolver()
    unique = list({job.id: job for job in jobs}.values())
    pending = PendingSet(policy_for, OrderingContext(now=0.0))
    pending.extend(unique[: len(unique) // 2])
    for job in unique[len(unique) // 2 :]:
        pending.add(job)
    ctx = OrderingContext(now=now, total_gpus=total_gpus, queue_gpu_share=shares)
    pending.refresh(ctx)
    ordering = MultifactorOrder()
    for lane in pending.lanes.values():
        assert lane.stable is not None
        members = [job for _k, job, owner in pending.jobs.values() if owner is lane]
        expected = sorted((ordering.key(job, ctx), job.id) for job in members)
        assert [(key, job.id) for key, job in pending.ranked(lane)] == expected
    full = sorted(unique, key=lambda job: ordering.key(job, ctx))
    assert [job.id for job in pending.ordered()] == [job.id for job in full]
    if unique:
        pending.remove(unique[0].id)
        assert unique[0].id not in pending
        assert len(pending) == len(unique) - 1


def test_a_negative_age_weight_is_not_stable_within_a_lane() -> None:
    """Younger-first ages reverse the order between saturated and unsaturated jobs, so
    such a multifactor must be re-ranked in full (the stable path would be wrong)."""
    assert MultifactorOrder().stable_lanes
    assert not MultifactorOrder(MultifactorWeights(age=-1.0)).stable_lanes
    assert not MultifactorOrder(MultifactorWeights(max_age_seconds=0.0)).stable_lanes
