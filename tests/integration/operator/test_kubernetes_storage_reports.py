"""Checkpoints the control plane cannot read, and a service reading them, on the real
test cluster: the API server (kubernetes backend) over real HTTP, the real loop and
store, the `trainyard` CLI as a real process.

kwok runs no container, so nothing writes a termination message here. The test writes
the message the way a pod's kubelet would: the real worker code (CheckpointManager
with TRAINYARD_TERMINATION_LOG) writes the file, and the test copies its contents into
the pod's status through the apiserver (`pods/status`, as the kubelet does when the
container ends). Everything after that is what runs in a cluster.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from kubernetes import client
from kubernetes.client.rest import ApiException
from sqlalchemy import update

from tests.integration.cluster.simcluster import SIM_DURATION, Cluster
from tests.integration.operator.k8s_support import (
    end_container_as_the_kubelet_would,
    running_backend,
)
from tests.support.servers import running_server, wait_for
from trainyard.operator.kubernetes.storage import checkpoint_claim_name
from trainyard.operator.loop import SchedulingLoop
from trainyard.operator.retention import CheckpointRetention
from trainyard.store import get_job, read_transaction, write_transaction
from trainyard.store.states import JobState
from trainyard.store.tables import jobs
from trainyard.worker import termination
from trainyard.worker.checkpoint import CheckpointManager

pytestmark = pytest.mark.cluster


def _state() -> dict[str, object]:
    return {
        "workload": "gpt",
        "model": {"w": torch.zeros(16)},
        "optimizer": {},
        "scaler": {},
        "rng": [],
        "data": {},
    }


def worker_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, steps: list[int]) -> str:
    """What worker 0 of attempt 1 leaves in its termination log after these saves."""
    log = tmp_path / "termination-log"
    monkeypatch.setenv(termination.ENV, str(log))
    manager = CheckpointManager(tmp_path / "claim" / "job", keep_latest=2, attempt=1)
    for step in steps:
        manager.save(_state(), step=step)
    monkeypatch.delenv(termination.ENV)
    return log.read_text()


def claim_gone(core: client.CoreV1Api, namespace: str, name: str) -> bool:
    try:
        claim = core.read_namespaced_persistent_volume_claim(name, namespace)
    except ApiException as exc:
        return exc.status == 404
    return claim.metadata.deletion_timestamp is not None


def test_reported_checkpoints_are_listed_and_served_read_only_and_kept_while_served(
    kube_cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    core = kube_cluster.core
    database = f"sqlite:///{tmp_path / 'store.db'}"
    with (
        running_server(
            home=tmp_path / "home",
            database_url=database,
            backend="kubernetes",
            kubeconfig=kube_cluster.kubeconfig,
            namespace=namespace,
            checkpoint_storage_class="nfs-rwx",
        ) as server,
        server.client() as http,
        running_backend(
            kube_cluster.kubeconfig, namespace, checkpoint_storage_class="nfs-rwx"
        ) as backend,
    ):
        engine = server.engine
        loop = SchedulingLoop(engine, backend, home=tmp_path / "home")
        train = http.post(
            "/v1/jobs",
            json={
                "name": "trainer",
                "workers": 1,
                "resources": {"cpu": "2", "memory": "8Gi"},
                "workload": {"builtin": "gpt", "args": {"steps": 100}},
                "annotations": {SIM_DURATION: "600"},
            },
        )
        assert train.status_code == 201, train.text
        train_id = train.json()["id"]
        # No checkpoint reported yet: a service cannot name it.
        early = http.post(
            "/v1/jobs",
            json={
                "name": "server",
                "kind": "inference",
                "mode": "service",
                "checkpoint_job": train_id,
                "resources": {"cpu": "1", "memory": "2Gi"},
                "workload": {"builtin": "gpt"},
            },
        )
        assert early.status_code == 422 and "checkpoint_job" in early.text

        def pod_of(job_id: str) -> client.V1Pod | None:
            pods = core.list_namespaced_pod(
                namespace, label_selector=f"trainyard.io/job-id={job_id}"
            ).items
            bound = [p for p in pods if p.spec.node_name]
            return bound[0] if bound else None

        def launched(job_id: str) -> bool:
            loop.cycle()
            return pod_of(job_id) is not None

        wait_for(lambda: launched(train_id), timeout=60, interval=0.1, what="trainer launched")
        listed = http.get(f"/v1/jobs/{train_id}/checkpoints").json()
        assert listed == {"data": [], "count": 0, "source": "reported"}

        message = worker_report(tmp_path, monkeypatch, [10, 20, 30])
        pod = pod_of(train_id)
        assert pod is not None
        end_container_as_the_kubelet_would(core, namespace, pod, message, 0)

        def reported() -> list[dict[str, Any]]:
            loop.cycle()
            return http.get(f"/v1/jobs/{train_id}/checkpoints").json()["data"]

        wait_for(lambda: reported(), timeout=60, interval=0.1, what="the report stored")
        listing = http.get(f"/v1/jobs/{train_id}/checkpoints").json()
        assert listing["source"] == "reported"
        assert [(c["step"], c["attempt"]) for c in listing["data"]] == [(30, 1), (20, 1)]
        assert all(c["size_bytes"] > 1000 for c in listing["data"])

        def finished() -> bool:
            loop.cycle()
            with read_transaction(engine) as conn:
                job = get_job(conn, job_id=train_id)
            return job is not None and job.state is JobState.SUCCEEDED

        wait_for(finished, timeout=60, interval=0.1, what="trainer SUCCEEDED")

        # The CLI, as a real process against the real server.
        env = {
            **os.environ,
            "TRAINYARD_URL": server.url,
            "TRAINYARD_TOKEN": server.admin_token,
            "PYTHONPATH": str(Path(__file__).resolve().parents[3]),
        }
        cli = subprocess.run(
            [str(Path(sys.executable).parent / "trainyard"), "checkpoints", train_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert cli.returncode == 0, cli.stderr
        bars = str.maketrans("\u2502\u2503", "  ")  # rich's column rules
        lines = [line.translate(bars) for line in cli.stdout.splitlines()]
        header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["STEP", "WRITTEN"])
        rows = [
            line.split() for line in lines[header + 1 :] if line.split()[:1] in (["30"], ["20"])
        ]
        assert [(row[0], row[-1]) for row in rows] == [("30", "1"), ("20", "1")], cli.stdout
        assert "worker 0 last reported" in cli.stdout

        # A service of the training job: its claim read-only at /model.
        service = http.post(
            "/v1/jobs",
            json={
                "name": "server",
                "kind": "inference",
                "mode": "service",
                "replicas": 1,
                "checkpoint_job": train_id,
                "resources": {"cpu": "1", "memory": "2Gi"},
                "workload": {"builtin": "gpt"},
            },
        )
        assert service.status_code == 201, service.text
        service_id = service.json()["id"]
        wait_for(lambda: launched(service_id), timeout=60, interval=0.1, what="service up")
        served = pod_of(service_id)
        assert served is not None
        claim = checkpoint_claim_name(train_id)
        model = next(v for v in served.spec.volumes if v.name == "model")
        assert model.persistent_volume_claim.claim_name == claim
        assert model.persistent_volume_claim.read_only is True
        mount = next(m for m in served.spec.containers[0].volume_mounts if m.name == "model")
        assert (mount.mount_path, mount.read_only) == ("/model", True)
        command = served.spec.containers[0].command
        assert command[command.index("--checkpoint-dir") + 1] == f"/model/{train_id}"

        # Retention: the trainer finished long ago, but a live service reads its claim.
        retention = CheckpointRetention(
            engine, backend, home=tmp_path / "home", retention_seconds=3600
        )
        with write_transaction(engine) as conn:
            conn.execute(update(jobs).where(jobs.c.id == train_id).values(finished_at=10**15))
        assert train_id not in retention.sweep(now=10**9 + 7200)
        assert not claim_gone(core, namespace, claim)
        cancel = http.post(f"/v1/jobs/{service_id}/cancel")
        assert cancel.status_code in (200, 202), cancel.text

        def cancelled() -> bool:
            loop.cycle()
            with read_transaction(engine) as conn:
                job = get_job(conn, job_id=service_id)
            return job is not None and job.state is JobState.CANCELLED

        wait_for(cancelled, timeout=60, interval=0.1, what="service CANCELLED")
        assert train_id in retention.sweep(now=10**9 + 7200)
        wait_for(lambda: claim_gone(core, namespace, claim), timeout=60, what="claim deleted")
        gone = http.get(f"/v1/jobs/{train_id}/checkpoints").json()
        assert gone == {"data": [], "count": 0, "source": "reported"}
