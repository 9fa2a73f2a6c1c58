"""The policies that learn from what they observe (las, predicted), the oracles, the
runtime estimator and start-time forecasts: decisions on small hand-built cases."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sched_builders import job, node

from trainyard.scheduler import ClusterSnapshot, SchedulerConfig, schedule
from trainyard.scheduler.estimator import (
    Accuracy,
    JobFeatures,
    RuntimeEstimator,
    name_stem,
    remaining,
)
from trainyard.scheduler.forecast import forecast_starts
from trainyard.scheduler.las import LasSettings
from trainyard.scheduler.policies import (
    ORACLE_POLICIES,
    PolicySettings,
    check_live_policy,
    get_policy,
    live_policy_names,
)
from trainyard.scheduler.types import RunningJob


def _running(job_id: str, gpus: int, nodes: tuple[str, ...], **kw: object) -> RunningJob:
    return replace(job(job_id).gpus(gpus).running_on(*nodes), **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------- las
def test_las_prefers_least_attained_service_then_fifo_within_a_queue() -> None:
    nodes = (node("n0").gpus(1).build(),)
    pending = (
        replace(job("old-much").gpus(1).submitted(0).build(), attained_gpu_seconds=50_000.0),
        replace(job("new-little").gpus(1).submitted(20).build(), attained_gpu_seconds=100.0),
        replace(job("older-little").gpus(1).submitted(10).build(), attained_gpu_seconds=3000.0),
    )
    result = schedule(ClusterSnapshot(nodes, (), pending), 100.0, SchedulerConfig("las"))
    # new-little and older-little share the top queue (< 1 GPU-hour): FIFO between them.
    assert [a.job_id for a in result.admissions] == ["older-little"]


def test_las_preempts_a_job_of_a_lower_queue_but_not_one_of_the_same_queue() -> None:
    nodes = (node("n0").gpus(8).build(),)
    # 8 GPUs for 2 hours: 16 GPU-hours attained, below the third threshold (100 GPU-h).
    long_running = _running("long", 8, ("n0",), start_time=0.0)
    waiting = (job("new").gpus(8).submitted(7000).build(),)
    snapshot = ClusterSnapshot(nodes, (long_running,), waiting)
    result = schedule(snapshot, 7200.0, SchedulerConfig("las"))
    assert [(a.job_id, a.preempts) for a in result.admissions] == [("new", ("long",))]
    # Just started: same (top) queue as the newcomer, so it is not evicted.
    fresh = replace(long_running, start_time=7100.0)
    result = schedule(ClusterSnapshot(nodes, (fresh,), waiting), 7200.0, SchedulerConfig("las"))
    assert result.admissions == []


def test_las_starvation_guard_promotes_a_job_that_waited_too_long() -> None:
    settings = LasSettings((3600.0,), starvation_seconds=1000.0)
    config = SchedulerConfig("las", settings=PolicySettings(las=settings))
    nodes = (node("n0").gpus(1).build(),)
    starving = replace(job("starving").gpus(1).submitted(0).build(), attained_gpu_seconds=90_000.0)
    fresh = job("fresh").gpus(1).submitted(800).build()
    snapshot = ClusterSnapshot(nodes, (), (starving, fresh))
    assert [a.job_id for a in schedule(snapshot, 900.0, config).admissions] == ["fresh"]
    assert [a.job_id for a in schedule(snapshot, 1000.0, config).admissions] == ["starving"]
    requeued = replace(starving, queued_since=600.0)  # waited 900 s since its last run
    assert [
        a.job_id
        for a in schedule(ClusterSnapshot(nodes, (), (requeued, fresh)), 1500.0, config).admissions
    ] == ["fresh"]
    assert [
        a.job_id
        for a in schedule(ClusterSnapshot(nodes, (), (requeued, fresh)), 1700.0, config).admissions
    ] == ["starving"]


def test_las_thresholds_must_ascend() -> None:
    with pytest.raises(ValueError, match="ascending"):
        LasSettings((10.0, 5.0))


# -------------------------------------------------------------- oracles
def test_srtf_oracle_preempts_the_job_with_more_remaining_work() -> None:
    nodes = (node("n0").gpus(4).build(),)
    running = (_running("big", 4, ("n0",), start_time=0.0, estimated_end=100_000.0),)
    short = replace(job("short").gpus(4).submitted(50).build(), estimated_runtime=600.0)
    result = schedule(
        ClusterSnapshot(nodes, running, (short,)), 100.0, SchedulerConfig("srtf-oracle")
    )
    assert [(a.job_id, a.preempts) for a in result.admissions] == [("short", ("big",))]
    # A job with more work left than the running one waits instead.
    long = replace(short, estimated_runtime=200_000.0)
    result = schedule(
        ClusterSnapshot(nodes, running, (long,)), 100.0, SchedulerConfig("srtf-oracle")
    )
    assert result.admissions == []


def test_sjf_oracle_orders_by_gpu_time_and_never_preempts() -> None:
    nodes = (node("n0").gpus(8).build(),)
    pending = (
        replace(job("wide").gpus(8).submitted(0).build(), estimated_runtime=100.0),  # 800
        replace(job("narrow").gpus(1).submitted(5).build(), estimated_runtime=500.0),  # 500
    )
    result = schedule(ClusterSnapshot(nodes, (), pending), 10.0, SchedulerConfig("sjf-oracle"))
    assert [a.job_id for a in result.admissions] == ["narrow"]
    assert get_policy("sjf-oracle").preemption is False


def test_oracles_are_refused_by_the_live_configuration() -> None:
    assert {"sjf-oracle", "srtf-oracle"} == ORACLE_POLICIES
    assert "las" in live_policy_names() and "srtf-oracle" not in live_policy_names()
    with pytest.raises(ValueError, match=r"oracle.*only in the simulator"):
        check_live_policy("srtf-oracle")
    with pytest.raises(ValueError, match=r"unknown policy .sjf.*las"):
        check_live_policy("sjf")
    assert check_live_policy("predicted") == "predicted"


# ------------------------------------------------------------ predicted
def test_predicted_orders_by_estimated_gpu_time_with_an_aging_guard() -> None:
    settings = PolicySettings(predicted_aging=1.0)
    config = SchedulerConfig("predicted", settings=settings)
    nodes = (node("n0").gpus(1).build(),)
    old_long = replace(job("old-long").gpus(1).submitted(0).build(), estimated_runtime=5000.0)
    new_short = replace(job("new-short").gpus(1).submitted(1000).build(), estimated_runtime=100.0)
    snapshot = ClusterSnapshot(nodes, (), (old_long, new_short))
    assert [a.job_id for a in schedule(snapshot, 1000.0, config).admissions] == ["new-short"]
    # 4,901 s older than the short one: its 4,900 GPU-s more work is forgiven.
    newer = replace(new_short, submit_time=4901.0)
    snapshot = ClusterSnapshot(nodes, (), (old_long, newer))
    assert [a.job_id for a in schedule(snapshot, 4901.0, config).admissions] == ["old-long"]


def test_backfill_with_estimates_plans_by_estimate_but_limits_stay_limits() -> None:
    nodes = (node("n0").gpus(8).build(),)
    running = (_running("r", 4, ("n0",), expected_end=1000.0),)
    head = job("head").gpus(8).submitted(0).limit(3600).build()
    # Limit 2 h (would delay the head's reservation at t=1000), estimate 5 min.
    filler = replace(
        job("filler").gpus(4).submitted(1).limit(7200).build(), estimated_runtime=300.0
    )
    snapshot = ClusterSnapshot(nodes, running, (head, filler))
    by_limit = schedule(snapshot, 100.0, SchedulerConfig("backfill"))
    assert by_limit.admissions == []
    estimates = SchedulerConfig("backfill", settings=PolicySettings(backfill_estimates=True))
    assert [a.job_id for a in schedule(snapshot, 100.0, estimates).admissions] == ["filler"]


# ------------------------------------------------------------ estimator
def test_estimator_falls_back_from_specific_to_general_and_learns_online() -> None:
    est = RuntimeEstimator(min_runs=2)
    bert = JobFeatures(owner="ann", name="bert-lr1", queue="nlp", gpus=8, workers=1)
    assert est.estimate(bert).level == "prior"
    est.observe(JobFeatures(queue="vision", gpus=1), 100.0)
    assert est.estimate(bert).level == "all"
    for seconds in (1000.0, 4000.0):
        est.observe(replace(bert, name="bert-lr2"), seconds)  # similar name, same user
    got = est.estimate(bert)
    assert got.level == "owner+similar name+size" and got.seconds == pytest.approx(2000.0)
    for seconds in (50.0, 50.0):
        est.observe(bert, seconds)
    assert est.estimate(bert).level == "owner+name+size"
    assert est.estimate(bert).seconds == pytest.approx(50.0)
    # A stranger in the same queue at the same size: the queue+size group.
    stranger = JobFeatures(owner="bob", name="gpt", queue="nlp", gpus=8)
    assert est.estimate(stranger).level == "queue+size"


def test_name_stem_and_remaining_and_accuracy() -> None:
    assert name_stem("BERT-lr3-run17") == name_stem("bert-lr10-run2") == "bert-lr#-run#"
    assert remaining(1000.0, 400.0) == 600.0
    assert remaining(1000.0, 5000.0) == 5000.0  # outlived it: expect as long again
    acc = Accuracy.of([(105.0, 100.0), (140.0, 100.0), (190.0, 100.0), (1000.0, 100.0)])
    assert (acc.jobs, acc.within_10, acc.within_50, acc.within_100) == (4, 0.25, 0.5, 0.75)


# ------------------------------------------------------------- forecast
def test_forecast_follows_the_queue_through_running_jobs_ending() -> None:
    nodes = (node("n0").gpus(8).build(),)
    running = (_running("r", 8, ("n0",), estimated_end=500.0),)
    pending = (
        replace(job("a").gpus(8).submitted(0).build(), estimated_runtime=1000.0),
        replace(job("b").gpus(4).submitted(1).build(), estimated_runtime=200.0),
        replace(job("c").gpus(4).submitted(2).build(), estimated_runtime=300.0),
        job("huge").gpus(16).submitted(3).build(),
    )
    snapshot = ClusterSnapshot(nodes, running, pending)
    policy = get_policy("fifo")
    forecast = forecast_starts(snapshot, 100.0, lambda _q: policy)
    # fifo: a at 500 (when r ends), b and c together at 1500; huge never fits (no start).
    assert forecast.starts == {"a": 500.0, "b": 1500.0, "c": 1500.0}
    only_b = forecast_starts(snapshot, 100.0, lambda _q: policy, targets=["b"])
    assert only_b.starts["b"] == 1500.0
    # A running job past its estimate is expected to run as long again as it has.
    late = ClusterSnapshot(nodes, (replace(running[0], estimated_end=50.0),), pending[:1])
    assert forecast_starts(late, 100.0, lambda _q: policy).starts == {"a": 200.0}


def test_las_batch_victim_keys_equal_the_pool_key() -> None:
    from trainyard.scheduler.capacity import Allocation
    from trainyard.scheduler.las import LasRank
    from trainyard.scheduler.running import Placed
    from trainyard.scheduler.types import WorkerRequest

    rank = LasRank(LasSettings((100.0, 1000.0)))
    placed = [
        Placed(
            f"p{i}",
            WorkerRequest(gpus=g),
            [Allocation(0, 1, WorkerRequest(gpus=g))],
            s,
            last_checkpoint=c,
            attained_before=a,
        )
        for i, (g, s, c, a) in enumerate(
            [
                (1, 0.0, None, 0.0),
                (4, 50.0, 80.0, 500.0),
                (8, 300.0, None, 0.0),
                (2, 10.0, 5.0, 2e3),
            ]
        )
    ]
    now = 200.0
    want = [(rank.running(p, now), p.lost_gpu_seconds(now), p.job_id) for p in placed]
    assert rank.victim_keys(placed, now) == want
