"""The simulator on slices of the real traces, and its checkpoint/preemption accounting."""

from __future__ import annotations

import json
import os
from itertools import islice
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from trainyard.scheduler.policies import PolicySettings
from trainyard.scheduler.simulator.cli import simulate
from trainyard.scheduler.simulator.engine import SimConfig, SimJob, replay
from trainyard.scheduler.simulator.loaders import (
    TraceError,
    load_alibaba,
    load_alibaba_nodes,
    load_native,
    load_philly,
    synthetic_nodes,
)
from trainyard.scheduler.simulator.metrics import METRIC_KEYS, percentile, summarize
from trainyard.scheduler.types import WorkerRequest

# The real traces live next to the repository (../shared/traces from a checkout), or
# where TRAINYARD_TRACES points (a worktree elsewhere).
TRACES = Path(
    os.environ.get("TRAINYARD_TRACES")
    or Path(__file__).resolve().parents[3].parent / "shared" / "traces"
)
PHILLY = TRACES / "philly" / "philly-2017-sep-dec.csv"
ALIBABA_PODS = TRACES / "alibaba-gpu-2023" / "openb_pod_list_gpuspec33.csv"
ALIBABA_NODES = TRACES / "alibaba-gpu-2023" / "openb_node_list_gpu_node.csv"
POLICIES = [
    "fifo",
    "fifo-besteffort",
    "priority",
    "backfill",
    "multifactor",
    "las",
    "predicted",
    "sjf-oracle",
    "srtf-oracle",
]


def _slice(path: Path, rows: int, tmp_path: Path) -> Path:
    """The header and first `rows` rows of a trace, as the loaders would see a file."""
    out = tmp_path / path.name
    with path.open() as src:
        out.write_text("".join(islice(src, rows + 1)))
    return out


@pytest.mark.parametrize("policy", POLICIES)
def test_philly_slice_replays_every_job(policy: str, tmp_path: Path) -> None:
    jobs = load_philly(_slice(PHILLY, 400, tmp_path))
    assert len(jobs) == 400
    assert {j.request.gpus * j.workers for j in jobs} >= {1, 8}
    result = replay(synthetic_nodes(4, 8), jobs, SimConfig(policy))
    assert result.unschedulable == sum(1 for j in jobs if j.request.gpus * j.workers > 32)
    finished = [r for r in result.records if r.end is not None]
    assert len(finished) == len(result.records) == 400 - result.unschedulable
    for r in finished:
        assert r.first_start is not None and r.submit_time <= r.first_start <= r.end  # type: ignore[operator]
        assert r.end - r.first_start >= r.duration - 1e-6  # type: ignore[operator]
    metrics = summarize([result], 0.5)
    assert tuple(metrics) == METRIC_KEYS
    assert 0.0 < metrics["gpu_utilization"] <= 1.0
    assert metrics["jct_p50"] <= metrics["jct_p95"] <= metrics["jct_p99"]


def test_philly_gang_sizes_follow_eight_gpu_nodes(tmp_path: Path) -> None:
    trace = tmp_path / "p.csv"
    trace.write_text(
        "timestamp,duration,num_gpus,gpu_time,cluster\n"
        "2017-10-01 00:00:00,10.0,24,240.0,a\n"
        "2017-10-01 00:00:05,10.0,4,40.0,b\n"
    )
    big, small = load_philly(trace)
    assert (big.workers, big.request.gpus, big.queue, big.submit_time) == (3, 8, "a", 0.0)
    assert (small.workers, small.request.gpus, small.submit_time) == (1, 4, 5.0)


def test_philly_loader_names_the_bad_row(tmp_path: Path) -> None:
    trace = tmp_path / "p.csv"
    trace.write_text(
        "timestamp,duration,num_gpus,gpu_time,cluster\n2017-10-01 00:00:00,ten,1,1,a\n"
    )
    with pytest.raises(TraceError, match=r"p\.csv:2"):
        load_philly(trace)


def test_alibaba_slice_uses_shares_models_and_qos(tmp_path: Path) -> None:
    nodes = load_alibaba_nodes(ALIBABA_NODES)
    assert len(nodes) == 1213
    jobs = load_alibaba(_slice(ALIBABA_PODS, 600, tmp_path))
    assert any(j.request.gpu_share_milli for j in jobs)
    assert any(j.request.gpu_models for j in jobs)
    assert {j.priority for j in jobs} >= {0, 200}
    # A small slice of the real cluster so that jobs queue and the policies differ.
    small = nodes[::40]
    for policy in ("priority", "backfill"):
        result = replay(small, jobs, SimConfig(policy))
        done = [r for r in result.records if r.end is not None]
        assert len(done) + result.unschedulable == len(jobs)
        assert result.busy_gpu_seconds > 0


def test_preempted_job_keeps_checkpointed_work_and_original_submit_time(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text(
        '{"id": "low", "submit_time": 0, "duration": 1000, "gpus": 8, "priority": 0}\n'
        '{"id": "high", "submit_time": 250, "duration": 100, "gpus": 8, "priority": 10,'
        ' "preemptible": false}\n'
    )
    jobs = load_native(trace)
    result = replay(synthetic_nodes(1, 8), jobs, SimConfig("priority", checkpoint_interval=100))
    records = {r.id: r for r in result.records}
    assert result.preemptions == 1 and records["low"].preemptions == 1
    assert (records["high"].first_start, records["high"].end) == (250, 350)
    # low ran 250 s, saved 200 s at its last checkpoint, lost 50 s: 800 s left from t=350,
    # after the default 60 s restart.
    assert (records["low"].submit_time, records["low"].first_start, records["low"].end) == (
        0,
        0,
        1210,
    )
    # Lost: 8 GPUs x (50 s unsaved + 60 s restart).
    assert records["low"].lost_gpu_seconds == result.lost_gpu_seconds == 8 * 110
    free = replay(
        synthetic_nodes(1, 8), jobs, SimConfig("priority", checkpoint_interval=100, restart_cost=0)
    )
    assert {r.id: r.end for r in free.records}["low"] == 1150


def test_replay_is_deterministic() -> None:
    jobs = [
        SimJob(
            f"j{i}",
            float(i * 7 % 50),
            float(10 + i * 13 % 90),
            WorkerRequest(gpus=1 + i % 8),
            queue=f"q{i % 3}",
        )
        for i in range(120)
    ]
    for policy in POLICIES:
        first = replay(synthetic_nodes(3, 8), jobs, SimConfig(policy))
        second = replay(synthetic_nodes(3, 8), list(reversed(jobs)), SimConfig(policy))
        assert [(r.id, r.first_start, r.end) for r in first.records] == [
            (r.id, r.first_start, r.end) for r in second.records
        ]


def test_percentile_matches_linear_interpolation() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert percentile(list(range(101)), 95) == 95.0


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("simulate")(simulate)

    @app.callback()
    def _root() -> None:
        """Group, so that `simulate` is a subcommand as in the real CLI."""

    return app


def test_cli_writes_metrics_report_and_plot(tmp_path: Path) -> None:
    trace = _slice(PHILLY, 300, tmp_path)
    queues = tmp_path / "queues.csv"
    queues.write_text("queue,nodes\n6214e9,2\n11cb48,2\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        _cli(),
        [
            "simulate",
            "--trace",
            str(trace),
            "--format",
            "philly",
            "--policy",
            "fifo,backfill",
            "--queue-nodes",
            str(queues),
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    # The SRTF oracle is replayed too, as the reference of every report.
    assert list(metrics) == ["fifo", "backfill", "srtf-oracle"]
    assert all(tuple(m) == METRIC_KEYS for m in metrics.values())
    jobs = load_philly(trace)
    kept = sum(1 for j in jobs if j.queue in {"6214e9", "11cb48"})
    assert metrics["fifo"]["jobs"] == kept < len(jobs)
    report = (out / "report.md").read_text()
    assert (
        "| jct_mean |" in report
        and f"dropped (queue without a cluster): {len(jobs) - kept}" in report
    )
    ratio = metrics["fifo"]["jct_mean"] / metrics["srtf-oracle"]["jct_mean"]
    assert f"| jct_mean / srtf-oracle | x{ratio:.2f} |" in report
    # Printed to a pipe, the comparison keeps whole column names and the oracle ratio
    # (rich folds a table to 80 columns when it cannot ask a terminal).
    assert "x oracle" in result.output and f"x{ratio:.2f}" in result.output
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_rejects_unknown_policy(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"id": "a", "submit_time": 0, "duration": 1}\n')
    result = CliRunner().invoke(
        _cli(),
        [
            "simulate",
            "--trace",
            str(trace),
            "--policy",
            "sjf",
            "--nodes",
            "1",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2
    assert "unknown policy sjf" in result.output


def test_native_loader_rejects_duplicate_ids(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text(
        '{"id": "a", "submit_time": 0, "duration": 1}\n'
        '{"id": "a", "submit_time": 1, "duration": 1}\n'
    )
    with pytest.raises(TraceError, match="job id 'a' appears twice"):
        load_native(trace)


def test_native_csv_trace_with_models_and_inference(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(
        "id,submit_time,duration,workers,gpus,gpu_models,kind,queue,priority,preemptible\n"
        "svc,0,50,2,1,H100|A100,inference,serving,5,false\n"
    )
    (job,) = load_native(trace)
    assert (job.workers, job.request.gpu_models, job.kind.value, job.queue) == (
        2,
        ("H100", "A100"),
        "inference",
        "serving",
    )
    assert (job.priority, job.preemptible) == (5, False)
    result = replay(
        synthetic_nodes(2, 8, product="NVIDIA-H100-80GB-HBM3"), [job], SimConfig("fifo")
    )
    assert [(r.first_start, r.end) for r in result.records] == [(0, 50)]


def test_simulate_is_registered_on_the_trainyard_command() -> None:
    from trainyard.cli import app

    assert "simulate" in [c.name for c in app.registered_commands]


def test_nodes_file_in_json_lines_with_zones_and_taints(tmp_path: Path) -> None:
    from trainyard.scheduler.simulator.loaders import load_nodes_file

    nodes_file = tmp_path / "nodes.jsonl"
    nodes_file.write_text(
        '{"name": "a", "cpu_millicores": 8000, "memory_bytes": 68719476736, "gpus": 8,'
        ' "gpu_product": "NVIDIA-H100-80GB-HBM3", "zone": "z1"}\n'
        '{"name": "b", "cpu_millicores": 8000, "memory_bytes": 68719476736, "gpus": 8,'
        ' "gpu_product": "NVIDIA-H100-80GB-HBM3", "zone": "z2",'
        ' "taints": [{"key": "reserved", "effect": "NoSchedule"}]}\n'
    )
    nodes = load_nodes_file(nodes_file)
    assert [(n.name, n.zone, n.gpu_product, len(n.taints)) for n in nodes] == [
        ("a", "z1", "NVIDIA-H100-80GB-HBM3", 0),
        ("b", "z2", "NVIDIA-H100-80GB-HBM3", 1),
    ]
    jobs = [
        SimJob(f"j{i}", 0.0, 10.0, WorkerRequest(gpus=8, gpu_models=("H100",))) for i in range(2)
    ]
    result = replay(nodes, jobs, SimConfig("fifo"))
    # The tainted node takes nothing, so the two jobs run one after the other on "a".
    assert sorted((r.first_start, r.end) for r in result.records) == [(0, 10), (10, 20)]


def test_backfill_by_estimate_never_stops_a_job_that_outlives_its_estimate() -> None:
    """Estimates learned from short jobs are wrong for the long one; it still runs to
    its real end (only a runtime limit kills, and the simulator has none)."""
    jobs = [SimJob(f"short{i}", float(i), 100.0, WorkerRequest(gpus=8)) for i in range(3)]
    jobs.append(SimJob("long", 500.0, 10_000.0, WorkerRequest(gpus=8)))
    jobs.append(SimJob("after", 600.0, 100.0, WorkerRequest(gpus=8)))
    settings = PolicySettings(backfill_estimates=True)
    result = replay(synthetic_nodes(1, 8), jobs, SimConfig("backfill", settings=settings))
    records = {r.id: r for r in result.records}
    assert records["long"].runtime_estimate == pytest.approx(100.0)  # learned from shorts
    assert (records["long"].first_start, records["long"].end) == (500.0, 10_500.0)
    assert records["after"].first_start == 10_500.0


def test_start_forecasts_in_a_replay_are_recorded_and_scored() -> None:
    """fifo on one node, jobs of 1000 s. Early forecasts use the prior (1 h) and miss;
    once two jobs have finished the estimator knows 1000 s and the forecasts are exact."""
    submits = [0.0, 1.0, 2.0, 2100.0, 2101.0]
    jobs = [SimJob(f"j{i}", t, 1000.0, WorkerRequest(gpus=8)) for i, t in enumerate(submits)]
    result = replay(synthetic_nodes(1, 8), jobs, SimConfig("fifo", forecast_interval=0.0))
    records = {r.id: r for r in result.records}
    assert (records["j1"].forecast_at, records["j1"].estimated_start) == (1.0, 3600.0)
    assert records["j1"].first_start == 1000.0  # a miss: 999 s instead of 3599 s
    assert (records["j3"].forecast_at, records["j3"].estimated_start) == (2100.0, 3000.0)
    assert (records["j4"].estimated_start, records["j4"].first_start) == (4000.0, 4000.0)
    assert records["j0"].forecast_at is None  # started on arrival: nothing to forecast
    metrics = summarize([result], 0.1)
    assert (metrics["start_estimates"], metrics["start_within_tolerance"]) == (4, 0.5)


def test_oracles_see_the_truth_and_others_the_learned_estimate() -> None:
    jobs = [
        SimJob("long", 0.0, 5000.0, WorkerRequest(gpus=8)),
        SimJob("b-long", 1.0, 4000.0, WorkerRequest(gpus=8)),
        SimJob("c-short", 2.0, 10.0, WorkerRequest(gpus=8)),
    ]
    oracle = {r.id: r for r in replay(synthetic_nodes(1, 8), jobs, SimConfig("sjf-oracle")).records}
    assert oracle["c-short"].first_start == 5000.0 < oracle["b-long"].first_start  # truth
    learned = {r.id: r for r in replay(synthetic_nodes(1, 8), jobs, SimConfig("predicted")).records}
    # Nothing has finished when b and c arrive: equal estimates, so submit order decides.
    assert learned["b-long"].first_start == 5000.0 < learned["c-short"].first_start
