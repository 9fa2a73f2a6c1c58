"""Checkpoint storage without a control-plane view of it: node-local checkpoints and the
pinned-restart events, a service's read-only model claim, and worker 0's checkpoint
report in its termination message (written by the worker, parsed from a pod)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.unit.operator.test_kubernetes_objects import gang, our_pod
from trainyard.checkpoint_index import MAX_REPORTED, REPORT_MARKER, parse_report, report_line
from trainyard.operator import admission
from trainyard.operator.kubernetes.config import KubernetesConfig
from trainyard.operator.kubernetes.manifests import pod_manifest
from trainyard.operator.kubernetes.observe import pod_record
from trainyard.operator.kubernetes.storage import (
    claim_names,
    keeps_node_checkpoints,
    local_storage_note,
)
from trainyard.operator.pinning import pin_note
from trainyard.scheduler.types import Node, Taint
from trainyard.worker import termination
from trainyard.worker.checkpoint import CheckpointManager

TRAINING = {"kind": "training", "workers": 1}
SERVICE = {"kind": "inference", "mode": "service", "checkpoint_job": "f" * 32}


def volume(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in pod["spec"]["volumes"] if v["name"] == name)


def mount(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == name)


def test_without_rwx_class_a_node_path_makes_the_output_a_host_directory() -> None:
    config = KubernetesConfig(namespace="ty", checkpoint_node_path="/var/lib/trainyard/ckpt")
    pod = pod_manifest(
        gang(spec=TRAINING), gang().workers[0], config=config, service_uid=None, node_labels={}
    )
    assert volume(pod, "output")["hostPath"] == {
        "path": "/var/lib/trainyard/ckpt",
        "type": "Directory",
    }
    assert mount(pod, "output")["mountPath"] == "/output"
    note = local_storage_note(TRAINING, None, "/var/lib/trainyard/ckpt")
    assert note is not None and "back on that node" in note and "step 0" in note


@pytest.mark.parametrize(
    ("spec", "rwx", "claim", "expected"),
    [
        (TRAINING, None, None, True),
        (TRAINING, "nfs-rwx", None, False),  # a claim per job instead
        (TRAINING, None, "shared-output", False),  # the deployment's own claim
        ({**TRAINING, "checkpoint": {"storage": "none"}}, None, None, False),
        ({**TRAINING, "checkpoint": {"storage": "pvc"}}, None, None, False),
        (SERVICE, None, None, False),  # services do not checkpoint
    ],
)
def test_which_jobs_keep_checkpoints_on_worker_0s_node(
    spec: dict[str, Any], rwx: str | None, claim: str | None, expected: bool
) -> None:
    assert keeps_node_checkpoints(spec, rwx, "/ckpt", claim) is expected
    assert keeps_node_checkpoints(spec, rwx, None, claim) is False


def test_without_a_node_path_the_output_stays_an_empty_dir() -> None:
    config = KubernetesConfig(namespace="ty")
    pod = pod_manifest(
        gang(spec=TRAINING), gang().workers[0], config=config, service_uid=None, node_labels={}
    )
    assert volume(pod, "output") == {"name": "output", "emptyDir": {}}
    note = local_storage_note(TRAINING, None, None)
    assert note is not None and "starts from scratch" in note


def test_a_service_mounts_its_training_jobs_claim_read_only_and_waits_for_it() -> None:
    config = KubernetesConfig(namespace="ty")
    pod = pod_manifest(
        gang(spec=SERVICE), gang().workers[0], config=config, service_uid=None, node_labels={}
    )
    claim = f"ty-{'f' * 32}-ckpt"
    assert volume(pod, "model")["persistentVolumeClaim"] == {"claimName": claim, "readOnly": True}
    assert mount(pod, "model") == {"name": "model", "mountPath": "/model", "readOnly": True}
    assert claim_names(SERVICE) == [claim]
    assert admission.may_block(SERVICE)
    assert not admission.may_block(TRAINING)


def test_pods_point_the_worker_at_the_termination_log() -> None:
    pod = pod_manifest(
        gang(), gang().workers[0], config=KubernetesConfig(), service_uid=None, node_labels={}
    )
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[termination.ENV] == container["terminationMessagePath"] == "/dev/termination-log"


NODES = {
    "a": Node("a", 1000, 1000),
    "b": Node("b", 1000, 1000, ready=False),
    "d": Node("d", 1000, 1000, taints=(Taint("node.kubernetes.io/unschedulable"),)),
}


def test_pin_notes_say_where_worker_0_went_and_why() -> None:
    assert pin_note("a", 2, ("a", "c"), NODES) == (
        "checkpoints: worker 0 is back on node a, where worker 0 of attempt 2 kept them"
    )
    full = pin_note("a", 2, ("c",), NODES)
    assert "has no room for worker 0 now" in full and "starts on c" in full
    assert "restarts from step 0" in full
    assert "is not ready" in pin_note("b", 1, ("c",), NODES)
    assert "is cordoned" in pin_note("d", 1, ("c",), NODES)
    assert "is gone from the cluster" in pin_note("z", 1, ("c",), NODES)


def _state() -> dict[str, object]:
    return {
        "workload": "gpt",
        "model": {"w": torch.zeros(4)},
        "optimizer": {},
        "scaler": {},
        "rng": [],
        "data": {},
    }


def test_worker_reports_its_checkpoints_in_the_termination_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "termination-log"
    monkeypatch.setenv(termination.ENV, str(log))
    manager = CheckpointManager(tmp_path / "out", keep_latest=2, attempt=3)
    for step in (10, 20, 30):
        manager.save(_state(), step=step)
    reported, rest = parse_report(log.read_text())
    assert rest == ""
    assert reported is not None
    assert [(c["step"], c["attempt"]) for c in reported] == [(30, 3), (20, 3)]  # pruned: 10
    assert all(c["size_bytes"] > 0 and c["written_at"] > 0 for c in reported)
    # A failure keeps the report and puts its last words first (the kubelet no longer
    # falls back to the log tail once the file is written).
    termination.record_failure("Traceback ...\nRuntimeError: CUDA error: out of memory\n")
    reported_after, rest = parse_report(log.read_text())
    assert reported_after == reported
    assert rest.splitlines()[-1] == "RuntimeError: CUDA error: out of memory"


def test_no_termination_log_outside_a_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(termination.ENV, raising=False)
    CheckpointManager(tmp_path, keep_latest=1, attempt=1).save(_state(), step=1)
    termination.record_failure("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1.json", "checkpoint-1.pt"]


def test_a_failed_pods_message_is_its_last_words_and_its_report_is_parsed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    CheckpointManager(out, keep_latest=3, attempt=2).save(_state(), step=40)
    message = f"step 41\nRuntimeError: CUDA error\n{report_line(out)}\n"
    terminated = {"exitCode": 1, "reason": "Error", "message": message}
    record = pod_record(
        our_pod("Failed", containerStatuses=[{"state": {"terminated": terminated}}]), "ty"
    )
    assert record.message == "exited 1 (Error): RuntimeError: CUDA error"
    assert record.checkpoints is not None
    [(step, written, size, attempt)] = record.checkpoints
    assert (step, attempt) == (40, 2) and size > 0 and written > 0
    plain = {"exitCode": 1, "reason": "Error", "message": "just logs"}
    assert (
        pod_record(
            our_pod("Failed", containerStatuses=[{"state": {"terminated": plain}}]), "ty"
        ).checkpoints
        is None
    )


@pytest.mark.parametrize(
    "line",
    [
        REPORT_MARKER + "not json",
        REPORT_MARKER + '{"step": 1}',
        REPORT_MARKER + '[{"step": -1}, {"step": "x"}, 7, {"step": 2, "size_bytes": -5}]',
    ],
)
def test_a_malformed_report_is_never_trusted(line: str) -> None:
    reported, _rest = parse_report(line)
    assert reported in (
        None,
        [],
        [{"step": 2, "written_at": 0.0, "size_bytes": 0, "attempt": None}],
    )


def test_a_report_is_capped(tmp_path: Path) -> None:
    many = REPORT_MARKER + "[" + ",".join(f'{{"step": {i}}}' for i in range(500)) + "]"
    reported, _ = parse_report(many)
    assert reported is not None and len(reported) == MAX_REPORTED
