"""The simulator under quotas: strict partitions vs borrowing with reclaim, the
per-tenant report and finish-time fairness, and `trainyard simulate --quota-file`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from typer.testing import CliRunner

from trainyard.cli import app
from trainyard.scheduler.quota_file import load_quota_text
from trainyard.scheduler.simulator.engine import SimConfig, SimJob, replay
from trainyard.scheduler.simulator.loaders import synthetic_nodes
from trainyard.scheduler.simulator.metrics import tenant_summary
from trainyard.scheduler.simulator.partition import partition_nodes
from trainyard.scheduler.types import WorkerRequest

QUOTAS = """
flavors: {{gpu: {{node_labels: {{nvidia.com/gpu.product: GPU}}}}}}
{cohorts}
queues:
  a: {{quotas: {{gpu: {{gpu: 8}}}}{member}}}
  b: {{quotas: {{gpu: {{gpu: 8}}}}{member}}}
"""


def quota_text(shared: bool) -> str:
    member = ", cohort: org, preemption: {reclaim_within_cohort: any}" if shared else ""
    return QUOTAS.format(cohorts="cohorts: {org: {}}" if shared else "", member=member)


def trace() -> list[SimJob]:
    """Tenant a floods the cluster at t=0; tenant b asks for its share at t=10."""
    jobs = [SimJob(f"a{i}", 0.0, 100.0, WorkerRequest(gpus=8), queue="a") for i in range(4)]
    jobs.append(SimJob("b0", 10.0, 100.0, WorkerRequest(gpus=8), queue="b"))
    return jobs


def test_strict_partitions_hold_each_tenant_to_its_quota() -> None:
    config = SimConfig("fifo-besteffort", quotas=load_quota_text(quota_text(shared=False)))
    result = replay(synthetic_nodes(2, 8), trace(), config)
    ends = {r.id: r.end for r in result.records}
    assert [ends[f"a{i}"] for i in range(4)] == [100.0, 200.0, 300.0, 400.0]  # one at a time
    assert ends["b0"] == 110.0  # its own node was idle, never borrowed
    assert result.preemptions == 0


def test_borrowing_lends_idle_quota_and_reclaim_takes_it_back() -> None:
    config = SimConfig(
        "fifo-besteffort",
        quotas=load_quota_text(quota_text(shared=True)),
        checkpoint_interval=0.0,
        restart_cost=0.0,  # the quota arithmetic alone; restart overheads are tested apart
    )
    result = replay(synthetic_nodes(2, 8), trace(), config)
    records = {r.id: r for r in result.records}
    assert records["a1"].first_start == 0.0  # borrowed b's idle node
    assert records["b0"].first_start == 10.0  # reclaimed it at once
    assert result.preemptions == 1
    assert records["b0"].end == 110.0
    tenants = tenant_summary([result])
    # a received the 10 s of borrowed GPU time it lost, on top of 4 x 100 s x 8 GPUs.
    assert tenants["a"]["gpu_hours"] == (4 * 100 * 8 + 10 * 8) / 3600
    assert tenants["a"]["preemptions"] == 1


def test_finish_time_fairness_compares_with_the_tenant_alone_on_its_partition() -> None:
    quotas = load_quota_text(quota_text(shared=True))
    nodes = synthetic_nodes(2, 8)
    partition = partition_nodes(quotas, "a", nodes)
    assert [n.gpus for n in partition] == [8]
    config = SimConfig("fifo-besteffort", quotas=quotas, checkpoint_interval=0.0)
    shared = replay(nodes, trace(), config)
    alone_a = replay(
        partition, [j for j in trace() if j.queue == "a"], SimConfig("fifo-besteffort")
    )
    tenants = tenant_summary([shared], {"a": [alone_a]})
    assert tenants["a"]["alone_jct_mean"] == (100 + 200 + 300 + 400) / 4
    assert tenants["a"]["ftf_ratio"] is not None and tenants["a"]["ftf_ratio"] < 1.0
    assert tenants["b"]["ftf_ratio"] is None  # no partition given for b in this call


def test_cli_quota_files_write_the_tenant_report(tmp_path: Path) -> None:
    trace_file = tmp_path / "trace.jsonl"
    trace_file.write_text(
        "\n".join(
            json.dumps(
                {
                    "id": j.id,
                    "submit_time": j.submit_time,
                    "duration": j.duration,
                    "gpus": 8,
                    "queue": j.queue,
                }
            )
            for j in trace()
        )
    )
    strict = tmp_path / "strict.yaml"
    strict.write_text(quota_text(shared=False))
    shared = tmp_path / "borrow.yaml"
    shared.write_text(quota_text(shared=True))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--trace",
            str(trace_file),
            "--nodes",
            "2",
            "--policy",
            "fifo-besteffort",
            "--quota-file",
            str(strict),
            "--quota-file",
            str(shared),
            "--out",
            str(out),
            "--no-progress",
            "--no-reference",
        ],
    )
    assert result.exit_code == 0, result.output
    tenants = json.loads((out / "tenants.json").read_text())
    assert set(tenants) == {"fifo-besteffort@strict", "fifo-besteffort@borrow"}
    strict_a = tenants["fifo-besteffort@strict"]["a"]
    assert strict_a["ftf_ratio"] == 1.0  # strict partition = alone on the partition
    assert tenants["fifo-besteffort@borrow"]["a"]["ftf_ratio"] < 1.0
    report = (out / "report.md").read_text()
    assert "## Per tenant" in report and "fifo-besteffort@borrow" in report
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"fifo-besteffort@strict", "fifo-besteffort@borrow"}


def test_cli_names_the_broken_key_of_a_quota_file(tmp_path: Path) -> None:
    trace_file = tmp_path / "trace.jsonl"
    trace_file.write_text(json.dumps({"id": "x", "submit_time": 0, "duration": 1}))
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("queues: {a: {quotas: {h200: {gpu: 1}}}}"))
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--trace",
            str(trace_file),
            "--nodes",
            "1",
            "--quota-file",
            str(bad),
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ],
    )
    assert result.exit_code != 0
    assert "queues.a.quotas.h200" in result.output
