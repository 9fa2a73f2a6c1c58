"""The loop's metric recorders against a real store (SQLite and PostgreSQL), the usage
window rules, and the worker's NVML energy meter (NVML is mocked here: this machine has
no GPU; the mock stands in for pynvml only)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import Engine

from tests.support.store_rows import admit, job_spec, start, submit
from trainyard.observability.accounting import aggregate, parse_since
from trainyard.observability.cycles import STATS_NAME, CycleRecorder
from trainyard.observability.energy import attempt_energy_joules
from trainyard.observability.targets import TargetsRecorder
from trainyard.store import read_transaction
from trainyard.store.telemetry import UsageRow, read_loop_stats, running_metrics_targets


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_cycles_are_flushed_at_most_once_per_interval_and_accumulate(engine: Engine) -> None:
    clock = Clock()
    recorder = CycleRecorder(engine, interval_s=1.0, clock=clock)
    recorder.record_cycle(0.002, {"admitted": 1})  # first cycle flushes at once
    recorder.record_cycle(0.2, {"admitted": 2, "Bad Label!": 5})
    with read_transaction(engine) as conn:
        assert read_loop_stats(conn, name=STATS_NAME)["cycles"] == 1
    clock.now = 1.5
    recorder.record_cycle(7.0, {}, pending={("default", "never_fits"): 4})
    with read_transaction(engine) as conn:
        doc = read_loop_stats(conn, name=STATS_NAME)
    assert doc["cycles"] == 3
    assert doc["decisions"] == {"admitted": 3}  # the unbounded label was dropped
    assert doc["sum"] == pytest.approx(7.202)
    assert sum(doc["buckets"]) == 2  # 7 s is above every bucket: only in +Inf (cycles)
    assert doc["pending"] == [["default", "never_fits", 4]]
    # a second recorder (a new leader) adds to the same document
    CycleRecorder(engine).record_cycle(0.001, {"admitted": 1})
    with read_transaction(engine) as conn:
        assert read_loop_stats(conn, name=STATS_NAME)["decisions"]["admitted"] == 4


def test_a_failed_flush_keeps_the_counts_for_the_next(engine: Engine) -> None:
    recorder = CycleRecorder(engine, interval_s=3600)
    recorder.record_cycle(0.01, {"admitted": 2})
    recorder.flush()
    recorder.record_cycle(0.01, {"admitted": 5})
    good_engine, recorder._engine = recorder._engine, None  # type: ignore[assignment]
    with pytest.raises(AttributeError):
        recorder.flush()
    recorder._engine = good_engine
    recorder.flush()
    with read_transaction(engine) as conn:
        doc = read_loop_stats(conn, name=STATS_NAME)
    assert doc["cycles"] == 2 and doc["decisions"]["admitted"] == 7


@dataclass
class Worker:
    job_id: str
    attempt: int
    index: int
    metrics_address: str | None
    phase: object = field(default_factory=lambda: SimpleNamespace(exited=False))


def test_targets_are_written_once_per_change(engine: Engine) -> None:
    job = submit(engine, job_spec("t", workers=2))
    attempt = admit(engine, job, at=1)
    start(engine, job, attempt, at=2)
    recorder = TargetsRecorder(engine)
    workers = [Worker(job, attempt, 0, "127.0.0.1:9500"), Worker(job, attempt, 1, None)]
    assert recorder.observe(workers) == 1
    assert recorder.observe(workers) == 0  # unchanged: no write
    workers[1].metrics_address = "127.0.0.1:9501"
    assert recorder.observe(workers) == 1
    with read_transaction(engine) as conn:
        (target,) = running_metrics_targets(conn)
    assert target.targets == {0: "127.0.0.1:9500", 1: "127.0.0.1:9501"}
    exited = [Worker(job, attempt, 0, "127.0.0.1:9500", SimpleNamespace(exited=True))]
    assert recorder.observe(exited) == 0


def test_since_accepts_iso_times_and_spans_and_names_its_rule() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert parse_since("7d", now=now) == now - timedelta(days=7)
    assert parse_since("90m", now=now) == now - timedelta(minutes=90)
    assert parse_since("2026-11-30T00:00:00Z", now=now) == datetime(2026, 11, 30, tzinfo=UTC)
    assert parse_since("2026-11-30T01:00:00+01:00", now=now) == datetime(2026, 11, 30, tzinfo=UTC)
    # A future start is an empty window ending now (the clock is not the schema's to state).
    assert parse_since("2027-01-01", now=now) == now
    # The longest span the schema allows (12,000+ years) is the whole history, not a 500.
    assert parse_since("999999w", now=now) == datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_since("658579w", now=now) == datetime(1970, 1, 1, tzinfo=UTC)
    for bad in ("soon", "3y", " 7d"):
        with pytest.raises(ValueError, match="ISO 8601"):
            parse_since(bad, now=now)


def _row(**values: object) -> UsageRow:
    base = dict(
        job_id="j", name="n", queue="q", owner="o", attempt=1, workers=2, cpu_millicores=1000,
        gpus=1, tpu_chips=0, accelerator_model="A100", job_created_at=0, job_started_at=0,
        started_at=0, ended_at=None, outcome=None, energy_joules=None,
    )  # fmt: skip
    base.update(values)
    return UsageRow(**base)  # type: ignore[arg-type]


def test_the_window_clips_attempts_and_adjacent_windows_add_up() -> None:
    hour = 3_600_000_000
    rows = [_row(started_at=0, ended_at=4 * hour), _row(job_id="k", started_at=3 * hour)]
    now = 5 * hour

    def gpu_hours(since: int) -> float:
        (group,) = aggregate(rows, group_by="queue", since_us=since, now_us=now, prices={})
        return group.gpu_hours

    # j: 2 workers x 4 h; k: 2 workers x 2 h (still running at `now`)
    assert gpu_hours(0) == pytest.approx(12.0)
    assert gpu_hours(2 * hour) == pytest.approx(8.0)  # j from 2 h to 4 h, k from 3 h
    (priced,) = aggregate(rows, group_by="model", since_us=0, now_us=now, prices={"A100": 2})
    assert priced.key == "A100" and priced.cost == pytest.approx(24.0)


def test_energy_of_an_attempt_never_seen_running_still_counts() -> None:
    """A gang that failed before the loop saw it RUNNING has no resource time, but the
    energy its ranks measured (and the attempt stored) is still its queue's."""
    rows = [_row(started_at=None, ended_at=10, energy_joules=42.5), _row(job_id="k")]
    (group,) = aggregate(rows, group_by="queue", since_us=0, now_us=100, prices={})
    assert group.energy_joules == pytest.approx(42.5) and group.attempts == 2


class FakeNvml:
    """Stands in for pynvml (no GPU on this machine): a counter in millijoules."""

    def __init__(self) -> None:
        self.millijoules = 5_000_000

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: object) -> int:
        return self.millijoules


def test_energy_is_measured_from_the_counter_and_summed_per_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainyard.worker.metrics import WorkerMetrics

    nvml = FakeNvml()
    monkeypatch.setenv("TRAINYARD_ATTEMPT", "3")
    ranks = [WorkerMetrics("job", rank, queue="default") for rank in (0, 1)]
    for metrics in ranks:
        metrics._watch_energy(nvml, handle=None)
    nvml.millijoules += 1_500_000  # 1.5 kJ used since the start
    for metrics in ranks:
        assert metrics.energy_joules() == pytest.approx(1500.0)
        metrics.write_energy(tmp_path)
    assert attempt_energy_joules(tmp_path, 3) == pytest.approx(3000.0)
    assert attempt_energy_joules(tmp_path, 2) is None
    text = (tmp_path / "energy" / "attempt-3-rank-1.json").read_text()
    assert json.loads(text) == {"rank": 1, "joules": 1500.0}
    exported = {s.name: s for f in ranks[0].registry.collect() for s in f.samples}
    sample = exported["trainyard_worker_gpu_energy_joules"]
    assert sample.labels == {"job": "job", "queue": "default", "rank": "0"}


def test_a_worker_without_nvml_writes_no_energy(tmp_path: Path) -> None:
    from trainyard.worker.metrics import WorkerMetrics

    metrics = WorkerMetrics("job", 0, queue="q")
    assert metrics.energy_joules() is None
    assert metrics.write_energy(tmp_path, attempt=1) is None
    assert attempt_energy_joules(tmp_path, 1) is None


def test_settled_counts_plus_recent_ones_equal_a_full_count(engine: Engine) -> None:
    """Old rows are counted once and cached, recent ones per scrape: the sum must be the
    full count however the rows fall on either side of the horizon, scrape after scrape."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from tests.support.store_rows import end
    from trainyard.api.metrics import StoreCollector
    from trainyard.store import JobState, now_us

    minute = 60_000_000
    now = now_us()
    for i, age_minutes in enumerate((300, 120, 61, 30, 0.5, 0)):
        created = now - int((age_minutes + 2) * minute)
        job = submit(engine, job_spec(f"j{i}"), created_at=created)
        attempt = admit(engine, job, at=created + minute)
        start(engine, job, attempt, at=created + minute + i * 1_000_000)
        outcome = JobState.PREEMPTED if i == 3 else JobState.SUCCEEDED
        end(engine, job, attempt, at=now - int(age_minutes * minute), to_state=outcome)
    registry = CollectorRegistry()
    registry.register(
        StoreCollector(engine, queues=["default"], priority_classes=["normal"], inventory=None,
                       cache_seconds=0)
    )  # fmt: skip

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = generate_latest(registry).decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    first, second = scrape(), scrape()  # the second extends the settled range
    for samples in (first, second):
        assert samples[("trainyard_admissions_total", (("queue", "default"),))] == 6
        assert samples[("trainyard_preemptions_total", (("queue", "default"),))] == 1
        finished = (("outcome", "SUCCEEDED"), ("queue", "default"))
        assert samples[("trainyard_job_finished_total", finished)] == 5
        assert samples[("trainyard_job_wait_seconds_count", (("queue", "default"),))] == 6
        assert samples[("trainyard_job_duration_seconds_count", (("outcome", "SUCCEEDED"),))] == 5
        cpu_hours = samples[
            ("trainyard_cpu_core_hours_total", (("owner", "alice"), ("queue", "default")))
        ]
        assert cpu_hours > 0
    counted = ("_total", "_bucket", "_count", "_sum")  # not the time-dependent gauges
    assert {k: v for k, v in first.items() if k[0].endswith(counted)} == {
        k: v for k, v in second.items() if k[0].endswith(counted)
    }


def test_tpu_chip_hours_and_their_cost_per_tpu_type() -> None:
    hour = 3_600_000_000
    rows = [
        _row(gpus=0, tpu_chips=4, accelerator_model="tpu-v5-lite-podslice", started_at=0,
             ended_at=hour, cpu_millicores=500),
        _row(job_id="cpu", gpus=0, tpu_chips=0, accelerator_model=None, started_at=0,
             ended_at=hour),
    ]  # fmt: skip
    groups = aggregate(
        rows, group_by="model", since_us=0, now_us=hour, prices={"tpu-v5-lite-podslice": 1.5}
    )
    by_model = {g.key: g for g in groups}
    tpu = by_model["tpu-v5-lite-podslice"]
    assert tpu.tpu_chip_hours == pytest.approx(8.0)  # 2 workers x 4 chips x 1 h
    assert tpu.gpu_hours == 0 and tpu.cpu_core_hours == pytest.approx(1.0)
    assert tpu.cost == pytest.approx(12.0)
    assert by_model["none"].cost is None and by_model["none"].tpu_chip_hours == 0
