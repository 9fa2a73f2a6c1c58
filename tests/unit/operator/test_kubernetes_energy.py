"""The control plane's side of the energy report: a pod's termination message parsed
into `PodRecord.energy` (the failure's words stay the message, the report does not
leak into it), and `ReportedEnergy` keeping an attempt's figures until the loop ends
the attempt, which for a stopped gang is after its pods are gone.

The messages are written by the worker's own code (trainyard.worker.termination), so
both sides of the format are exercised together; no NVML is involved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.termination_messages import energy_termination_message
from trainyard.checkpoint_index import REPORT_MARKER
from trainyard.energy_report import ENERGY_MARKER
from trainyard.operator.kubernetes.energy import ReportedEnergy
from trainyard.operator.kubernetes.observe import PodRecord, pod_record

JOB = "0123456789abcdef0123456789abcdef"


def pod(index: int, message: str, *, attempt: int = 1, job: str = JOB, code: int = 0) -> PodRecord:
    terminated = {"exitCode": code, "reason": "Error" if code else "Completed", "message": message}
    raw: dict[str, Any] = {
        "metadata": {
            "name": f"{job}-worker-{index}",
            "namespace": "ty",
            "uid": f"{job}-{attempt}-{index}",
            "labels": {
                "app.kubernetes.io/managed-by": "trainyard",
                "trainyard.io/job-id": job,
                "trainyard.io/attempt": str(attempt),
                "trainyard.io/worker-index": str(index),
            },
        },
        "spec": {"nodeName": f"gpu-{index}", "containers": [{}]},
        "status": {
            "phase": "Failed" if code else "Succeeded",
            "containerStatuses": [{"state": {"terminated": terminated}}],
        },
    }
    return pod_record(raw, "ty")


def test_a_pods_energy_is_parsed_and_its_failure_stays_the_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = energy_termination_message(
        tmp_path, monkeypatch, {2: 100.0, 3: 50.5}, "step 41\nRuntimeError: NCCL timeout"
    )
    record = pod(1, message, code=1)
    assert record.energy == ((2, 100.0), (3, 50.5))
    assert record.message == "exited 1 (Error): RuntimeError: NCCL timeout"
    assert ENERGY_MARKER not in record.log_tail and "NCCL timeout" in record.log_tail
    assert pod(0, "just logs", code=1).energy is None  # no report: unmeasured, not zero
    assert pod(0, f"{REPORT_MARKER}[]\n{ENERGY_MARKER}{{}}\n").energy == ()


def test_an_attempt_sums_every_rank_of_every_pod_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    energy = ReportedEnergy()
    pod0 = pod(0, energy_termination_message(tmp_path, monkeypatch, {0: 1000.0, 1: 500.0}))
    pod1 = pod(1, energy_termination_message(tmp_path, monkeypatch, {2: 250.0, 3: 0.5}))
    energy.record(pod0)
    assert energy.joules(JOB, 1) == pytest.approx(1500.0)
    energy.record(pod0)  # the same report seen again (a later watch event)
    energy.record(pod1)
    assert energy.joules(JOB, 1) == pytest.approx(1750.5)
    assert energy.joules(JOB, 2) is None
    assert energy.joules("other", 1) is None


def test_a_report_whose_change_hook_has_not_run_yet_still_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    energy = ReportedEnergy()
    energy.record(pod(0, energy_termination_message(tmp_path, monkeypatch, {0: 10.0})))
    cached = [
        pod(1, energy_termination_message(tmp_path, monkeypatch, {1: 5.0})),
        pod(
            1, energy_termination_message(tmp_path, monkeypatch, {1: 99.0}), attempt=2
        ),  # not this one
    ]
    assert energy.joules(JOB, 1, cached) == pytest.approx(15.0)


def test_figures_outlive_the_pods_until_the_next_attempt_and_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    energy = ReportedEnergy(limit=2)
    message = energy_termination_message(tmp_path, monkeypatch, {0: 7.0})
    energy.record(pod(0, message, attempt=1))
    energy.record(pod(0, message, attempt=2))
    assert energy.joules(JOB, 1) == 7.0  # no pod is left: the figure is kept
    energy.forget_before(JOB, 2)  # attempt 2 is being launched: 1 has ended
    assert (energy.joules(JOB, 1), energy.joules(JOB, 2)) == (None, 7.0)
    for job in ("a" * 32, "b" * 32):  # two more jobs: the least recent one goes
        energy.record(pod(0, message, job=job))
    assert energy.joules(JOB, 2) is None
    assert energy.joules("a" * 32, 1) == energy.joules("b" * 32, 1) == 7.0
