"""Replay-speed work must not change what a replay decides: fingerprints of whole replays.

`test_equivalence.py` pins single cycles; these pin whole simulated replays (thousands
of cycles with the pending, running and capacity structures carried between them, which
is where the replay-speed optimisations live: lazy rank keys, victim orders, the event
loop). The digests were recorded with the code as it stood before that work (commit
41ef4b3), for every policy, on a synthetic trace that mixes priorities, queues, gang
sizes, preemptible and non-preemptible jobs and GPU shares, and on a slice of the Philly
trace; with start-time forecasts and with quotas too. A change that alters decisions ON
PURPOSE must say so and re-record them (the failure prints the new value).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from trainyard.scheduler.policies import PolicySettings, policy_names
from trainyard.scheduler.quota_file import load_quota_text
from trainyard.scheduler.simulator.engine import ReplayResult, SimConfig, SimJob, replay
from trainyard.scheduler.simulator.loaders import load_philly, synthetic_nodes
from trainyard.scheduler.types import JobKind, WorkerRequest

TRACES = Path(
    os.environ.get("TRAINYARD_TRACES")
    or Path(__file__).resolve().parents[3].parent / "shared" / "traces"
)
PHILLY = TRACES / "philly" / "philly-2017-sep-dec.csv"

SHAPES = [(1, 1)] * 10 + [(2, 1), (4, 1), (8, 1), (8, 2), (4, 2), (8, 3)]


def mixed_trace(seed: int, count: int) -> list[SimJob]:
    """A busy, varied workload: three queues, four priority classes, gangs, a fifth of
    the jobs not preemptible, some GPU shares and inference gangs, heavy-tailed runtimes,
    and bursts of equal submit times (ties are where orderings differ most)."""
    rnd = random.Random(seed)
    jobs: list[SimJob] = []
    t = 0.0
    for i in range(count):
        if rnd.random() < 0.7:
            t += rnd.expovariate(1 / 240.0)
        gpus, workers = rnd.choice(SHAPES)
        request = WorkerRequest(gpus=gpus)
        if rnd.random() < 0.05:
            request, workers = WorkerRequest(gpu_share_milli=rnd.choice([250, 500])), 1
        jobs.append(
            SimJob(
                f"j{i:05d}",
                round(t, 1),
                min(rnd.lognormvariate(7.5, 1.8), 30 * 86_400.0),
                request,
                workers=workers,
                queue=f"q{rnd.randrange(3)}",
                priority=rnd.choice([0, 0, 0, 100, 1000]),
                preemptible=rnd.random() < 0.8,
                kind=JobKind.INFERENCE if rnd.random() < 0.05 else JobKind.TRAINING,
                owner=f"u{rnd.randrange(6)}",
                name=f"task{rnd.randrange(12)}",
            )
        )
    return jobs


def digest(result: ReplayResult) -> str:
    """The replay's fingerprint (ReplayResult.fingerprint: records and totals, bit-exact)."""
    return result.fingerprint()


MIXED = {
    "fifo": "0383a37aad925adb",
    "fifo-besteffort": "ff94571fbeca883c",
    "priority": "79645a502d98ff2c",
    "backfill": "635fd9bea04f0046",
    "multifactor": "17c39d285f8f09ca",
    "las": "aca388aa026b9431",
    "predicted": "6dcd962fcfcc88aa",
    "sjf-oracle": "81cc84c96897febf",
    "srtf-oracle": "b8a94de81f9e416a",
}


def test_every_policy_is_pinned() -> None:
    assert set(MIXED) == set(policy_names())


@pytest.mark.parametrize("policy", list(MIXED))
def test_mixed_replay_matches_the_code_before_the_replay_speed_work(policy: str) -> None:
    result = replay(synthetic_nodes(6, 8), mixed_trace(7, 1200), SimConfig(policy))
    assert result.cycles > 500
    assert digest(result) == MIXED[policy]


PHILLY_SLICE = {
    "fifo": "22199365e6a43a77",
    "fifo-besteffort": "0efa110c6f577316",
    "priority": "0efa110c6f577316",
    "backfill": "ea7c66327e54e934",
    "multifactor": "8faa87912289bddc",
    "las": "34289c1cf22e9a06",
    "predicted": "dc51524025069734",
    "sjf-oracle": "fc90bda7d95ab357",
    "srtf-oracle": "d6bc4349d22cb631",
}


@pytest.mark.parametrize("policy", list(PHILLY_SLICE))
def test_philly_slice_replay_matches_the_code_before_the_replay_speed_work(policy: str) -> None:
    jobs = load_philly(PHILLY)[:2500]
    result = replay(synthetic_nodes(12, 8), jobs, SimConfig(policy))
    assert digest(result) == PHILLY_SLICE[policy]


VARIANTS = {
    "forecast-backfill": "45e63eb706ab4020",
    "forecast-predicted": "3654295b7ffe7f1b",
    "backfill-estimates": "a9573632c65ad828",
    "las-no-promotion": "bc46df1156944b56",
    "quota-fair-multifactor": "d58f6868c0cec30c",
    "quota-fair-las": "e85d6dc0f61a4ee4",
}

QUOTAS = """
flavors: {gpu: {node_labels: {nvidia.com/gpu.product: GPU}}}
cohorts: {org: {}}
fair_sharing: {enabled: true, usage_half_life: 1d}
queues:
  q0: {cohort: org, quotas: {gpu: {gpu: 16}}, preemption: {reclaim_within_cohort: any}}
  q1: {cohort: org, quotas: {gpu: {gpu: 16}}, preemption: {reclaim_within_cohort: any}}
  q2: {cohort: org, quotas: {gpu: {gpu: 16}}}
"""


def variant_config(name: str) -> SimConfig:
    from trainyard.scheduler.las import LasSettings

    if name.startswith("forecast-"):
        return SimConfig(name.removeprefix("forecast-"), forecast_interval=7200.0)
    if name == "backfill-estimates":
        return SimConfig("backfill", PolicySettings(backfill_estimates=True))
    if name == "las-no-promotion":
        return SimConfig("las", PolicySettings(las=LasSettings(starvation_seconds=None)))
    policy = name.removeprefix("quota-fair-")
    return SimConfig(policy, quotas=load_quota_text(QUOTAS))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_replay_variants_match_the_code_before_the_replay_speed_work(variant: str) -> None:
    result = replay(synthetic_nodes(6, 8), mixed_trace(11, 600), variant_config(variant))
    assert digest(result) == VARIANTS[variant]
