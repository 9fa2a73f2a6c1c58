"""The pure decisions of rolling updates and autoscaling (operator/rollout.py, autoscale.py).

A rollout is simulated step by step against a model of the world (an added replica
starts unready, becomes ready the next step; a removed one is gone): the order is the
contract, so it is asserted as the sequence of states the service passes through.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainyard.operator.autoscale import (
    AutoscalePolicy,
    ScaleState,
    decide,
    observe,
    quantile_from_buckets,
)
from trainyard.operator.replica_metrics import parse_metrics
from trainyard.operator.rollout import Replica, Rollback, Step, next_index, next_step, rollback_for
from trainyard.service_revisions import is_new_revision, revision_of

US = 1_000_000


def _simulate(
    replicas: list[Replica], *, revision: int, target: int, room: int, steps: int = 50
) -> list[list[Replica]]:
    """Apply next_step until idle; `room` is how many replicas fit beyond the target."""
    history = [replicas]
    for _ in range(steps):
        step = next_step(replicas, revision=revision, target=target)
        if step.idle:
            return history
        removed = set(step.remove)
        fits = len(replicas) - len(removed) < target + room
        if step.add and not fits and step.remove_if_no_room is not None:
            removed.add(step.remove_if_no_room)
        replicas = [r for r in replicas if r.index not in removed]
        if step.add and (fits or step.remove_if_no_room is not None):
            index = next_index({r.index: "n" for r in replicas}, sorted(removed))
            replicas.append(Replica(index, revision, ready=False))
        history.append(replicas)
        # The world moves on: a replica started in this step answers by the next one.
        replicas = [Replica(r.index, r.revision, ready=True) for r in replicas]
        history.append(replicas)
    raise AssertionError(f"no convergence: {history[-3:]}")


def _ready(replicas: list[Replica]) -> int:
    return sum(1 for r in replicas if r.ready)


def test_a_rollout_with_room_surges_one_and_never_drops_below_the_target_ready() -> None:
    start = [Replica(0, 1, ready=True), Replica(1, 1, ready=True)]
    history = _simulate(start, revision=2, target=2, room=1)
    final = history[-1]
    assert [r.revision for r in final] == [2, 2] and all(r.ready for r in final)
    for state in history:
        assert _ready(state) >= 2, state  # each new one ready before an old one goes
        assert len(state) <= 3  # one surge replica at a time
        assert sum(1 for r in state if r.revision == 2 and not r.ready) <= 1


def test_without_room_it_goes_one_down_at_a_time() -> None:
    start = [Replica(0, 1, ready=True), Replica(1, 1, ready=True), Replica(2, 1, ready=True)]
    history = _simulate(start, revision=2, target=3, room=0)
    assert [r.revision for r in history[-1]] == [2, 2, 2]
    for state in history:
        assert len(state) <= 3  # never more than fits
        assert _ready(state) >= 2  # at most one down


def test_first_step_with_room_adds_and_names_the_fallback_victim() -> None:
    step = next_step([Replica(0, 1, ready=True), Replica(1, 1, ready=True)], revision=2, target=2)
    assert step == Step(add=True, remove_if_no_room=0, rolling=True)


def test_no_old_replica_is_stopped_while_a_new_one_is_starting() -> None:
    replicas = [Replica(0, 1, ready=True), Replica(1, 1, ready=True), Replica(2, 2, ready=False)]
    assert next_step(replicas, revision=2, target=2) == Step(rolling=True)


def test_a_dead_old_replica_is_dropped_at_once_not_restarted() -> None:
    replicas = [Replica(0, 1, exited=True), Replica(1, 1, ready=True), Replica(2, 2, ready=False)]
    step = next_step(replicas, revision=2, target=2)
    assert step.remove == (0,) and not step.add


def test_scaling_adds_below_the_target_and_removes_the_newest_above_it() -> None:
    ready = [Replica(i, 1, ready=True) for i in range(3)]
    assert next_step(ready, revision=1, target=4) == Step(add=True)
    assert next_step(ready, revision=1, target=2) == Step(remove=(2,))
    unready_first = [Replica(0, 1, ready=True), Replica(1, 1, ready=False), Replica(2, 1, True)]
    assert next_step(unready_first, revision=1, target=2).remove == (1,)
    assert next_step(ready, revision=1, target=3).idle


@given(
    old=st.integers(1, 5),
    target=st.integers(1, 5),
    room=st.integers(0, 2),
)
def test_every_rollout_converges_to_the_target_all_new(old: int, target: int, room: int) -> None:
    start = [Replica(i, 1, ready=True) for i in range(old)]
    history = _simulate(start, revision=2, target=target, room=room)
    final = history[-1]
    assert len(final) == target and all(r.revision == 2 and r.ready for r in final)
    assert len({r.index for r in final}) == target
    for state in history:
        assert len(state) <= max(old, target) + room


def test_next_index_skips_indexes_still_known_to_the_backend() -> None:
    assert next_index({0: "a", 1: "a"}) == 2
    assert next_index({0: "a"}, [3]) == 4
    assert next_index({}) == 0


def test_a_new_revision_is_any_launch_input_but_not_the_counts() -> None:
    base = {"kind": "inference", "replicas": 2, "workers": 2, "serve_checkpoint": "/a"}
    assert not is_new_revision(base, {**base, "replicas": 3, "workers": 3, "max_replicas": 4})
    assert is_new_revision(base, {**base, "serve_checkpoint": "/b"})
    assert is_new_revision(base, {**base, "runtime": "onnx"})  # a field added later counts
    assert revision_of(base) == 1 and revision_of({"revision": 3}) == 3


# ---------------------------------------------------------------------- autoscaling

POLICY = AutoscalePolicy(metric="inflight", target=2.0, cooldown_s=10.0, low=1, high=4)


def test_above_target_grows_by_the_ratio_within_max() -> None:
    state = ScaleState(target=1, changed_at_us=0)
    assert decide(state, 5.0, POLICY, now_us=US).target == 3  # ceil(1 * 5 / 2)
    assert decide(ScaleState(3, 0), 9.0, POLICY, now_us=US).target == 4  # max_replicas


def test_well_below_shrinks_by_one_only_after_the_cooldown() -> None:
    state = ScaleState(target=3, changed_at_us=0)
    first = decide(state, 0.2, POLICY, now_us=20 * US)
    assert first.target == 3 and first.low_since_us == 20 * US  # low from now on
    assert decide(first, 0.2, POLICY, now_us=25 * US).target == 3  # within the cooldown
    later = decide(first, 0.2, POLICY, now_us=30 * US)
    assert later.target == 2 and later.changed_at_us == 30 * US
    # A burst in between starts the cooldown afresh.
    burst = decide(first, 1.5, POLICY, now_us=26 * US)
    assert burst.low_since_us is None
    assert decide(burst, 0.2, POLICY, now_us=30 * US).target == 3


def test_near_target_and_no_data_change_nothing() -> None:
    state = ScaleState(target=2, changed_at_us=0)
    assert decide(state, 1.5, POLICY, now_us=100 * US).target == 2  # not well below
    assert decide(state, None, POLICY, now_us=100 * US) is state
    assert decide(ScaleState(1, 0), 0.0, POLICY, now_us=100 * US).target == 1  # min_replicas


def test_policy_bounds_come_from_the_document() -> None:
    spec = {
        "replicas": 2,
        "min_replicas": 1,
        "max_replicas": 5,
        "autoscale": {"metric": "p95_latency_ms", "target": 50, "cooldown": "1m"},
    }
    policy = AutoscalePolicy.of(spec)
    assert policy == AutoscalePolicy("p95_latency_ms", 50.0, 60.0, 1, 5)
    assert AutoscalePolicy.of({"replicas": 2}) is None


def test_quantiles_interpolate_inside_the_bucket_like_promql() -> None:
    buckets = [(0.01, 50.0), (0.1, 90.0), (1.0, 100.0), (math.inf, 100.0)]
    assert quantile_from_buckets(buckets, 0.5) == pytest.approx(0.01)
    assert quantile_from_buckets(buckets, 0.95) == pytest.approx(0.1 + 0.9 * 0.5)
    assert quantile_from_buckets([(0.1, 0.0), (math.inf, 0.0)], 0.95) is None


def test_observations_need_two_rounds_and_idle_is_zero() -> None:
    assert (
        observe("inflight", latency_delta=(), inflight_samples=(4.0,), replicas=2, rounds=1) is None
    )
    assert observe(
        "inflight", latency_delta=(), inflight_samples=(4.0, 2.0), replicas=2, rounds=2
    ) == pytest.approx(1.5)
    idle = ((0.1, 0.0), (math.inf, 0.0))
    assert (
        observe("p95_latency_ms", latency_delta=idle, inflight_samples=(), replicas=1, rounds=3)
        == 0.0
    )


def test_the_replicas_own_metrics_parse_into_buckets_and_inflight() -> None:
    from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest

    registry = CollectorRegistry()
    histogram = Histogram(
        "trainyard_worker_inference_latency_seconds",
        "",
        ["rank"],
        registry=registry,
        buckets=(0.01, 0.1),
    )
    gauge = Gauge("trainyard_worker_inference_inflight", "", ["rank"], registry=registry)
    for value in (0.005, 0.05, 0.05):
        histogram.labels(rank="0").observe(value)
    gauge.labels(rank="0").set(3)
    sample = parse_metrics(generate_latest(registry).decode())
    assert sample.buckets == ((0.01, 1.0), (0.1, 3.0), (math.inf, 3.0))
    assert sample.inflight == 3.0


# ---------------------------------------------------------------------- rollback


def test_a_new_revision_that_cannot_start_rolls_back_while_old_replicas_serve() -> None:
    replicas = [Replica(0, 1, ready=True), Replica(1, 1, ready=True), Replica(2, 2, exited=True)]
    got = rollback_for(replicas, revision=2, failed=2, reason="no valid checkpoint in /m")
    assert got == Rollback(bad=2, good=1, index=2, reason="no valid checkpoint in /m")
    assert got.note == (
        "revision 2 failed: replica 2 cannot start: no valid checkpoint in /m; "
        "rolled back to revision 1"
    )


def test_it_goes_back_to_the_newest_older_revision_with_a_live_replica() -> None:
    replicas = [
        Replica(0, 1, ready=True),
        Replica(3, 2, ready=True),
        Replica(4, 3, exited=True),
        Replica(5, 2, exited=True),
    ]
    got = rollback_for(replicas, revision=3, failed=4, reason="boom")
    assert got is not None and got.good == 2


def test_no_older_replica_left_means_no_rollback_the_service_fails() -> None:
    """A fresh service (one revision), or one whose old replicas are all gone or dead."""
    assert rollback_for([Replica(0, 1, exited=True)], revision=1, failed=0, reason="x") is None
    dead_old = [Replica(0, 1, exited=True), Replica(1, 2, exited=True)]
    assert rollback_for(dead_old, revision=2, failed=1, reason="x") is None


def test_a_failed_replica_of_an_older_revision_rolls_nothing_back() -> None:
    """It is being replaced by the current revision anyway (next_step drops it)."""
    replicas = [Replica(0, 1, exited=True), Replica(1, 2, ready=True)]
    assert rollback_for(replicas, revision=2, failed=0, reason="x") is None
    assert rollback_for(replicas, revision=2, failed=9, reason="x") is None  # unknown index
