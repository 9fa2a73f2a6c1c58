"""Checkpoint claims and volumes on the real test cluster (apiserver, etcd,
controller-manager; kwok runs the pods). No storage provisioner runs here, so claims
stay Pending: what is tested is the objects Trainyard makes and when it starts a job,
which is what the apiserver, not a provisioner, decides."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from sqlalchemy import update

from tests.integration.cluster.simcluster import SIM_DURATION, Cluster, wait_until
from tests.integration.operator.k8s_support import gang_spec, make_gang, running_backend
from trainyard.api.schemas import JobCreate
from trainyard.operator.kubernetes.storage import checkpoint_claim_name
from trainyard.operator.loop import SchedulingLoop
from trainyard.operator.retention import CheckpointRetention
from trainyard.store import (
    Submission,
    get_job,
    make_engine,
    migrate,
    read_transaction,
    submit_jobs,
    write_transaction,
)
from trainyard.store.tables import jobs

pytestmark = pytest.mark.cluster

H100 = ("gpu-h100-0", "gpu-h100-1")
CHECKPOINT = {"storage": "pvc", "size": "5Gi", "storage_class": "nfs-rwx"}


def store(tmp_path: Path) -> Any:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    return engine


def submit(engine: Any, spec: dict[str, Any]) -> str:
    """Store `spec` as the API would (validated, defaults filled in)."""
    spec = JobCreate(**spec).model_dump(mode="json")
    [result] = submit_jobs(
        engine,
        submissions=[
            Submission(
                owner="alice", spec=spec, priority_value=500, idempotency_key=uuid.uuid4().hex
            )
        ],
    )
    assert not isinstance(result, Exception)
    return result[0].id


def pods_of(core: client.CoreV1Api, namespace: str, job_id: str) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(namespace, label_selector=f"trainyard.io/job-id={job_id}")
    return sorted(pods.items, key=lambda p: p.metadata.name)


def claim_gone(core: client.CoreV1Api, namespace: str, name: str) -> bool:
    try:
        claim = core.read_namespaced_persistent_volume_claim(name, namespace)
    except ApiException as exc:
        return exc.status == 404
    return claim.metadata.deletion_timestamp is not None


def test_a_pvc_job_gets_one_claim_both_pods_mount_a_restart_reuses_and_retention_deletes(
    kube_cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    core = kube_cluster.core
    engine = store(tmp_path)
    spec = {"name": "llm", **gang_spec(2, 8), "checkpoint": CHECKPOINT}
    job_id = submit(engine, spec)
    claim_name = checkpoint_claim_name(job_id)
    with running_backend(kube_cluster.kubeconfig, namespace) as backend:
        backend.launch(
            make_gang(backend, H100, job_id=job_id, spec=spec, annotations={SIM_DURATION: "600"})
        )
        claims = core.list_namespaced_persistent_volume_claim(
            namespace, label_selector=f"trainyard.io/job-id={job_id}"
        ).items
        assert [c.metadata.name for c in claims] == [claim_name]
        claim = claims[0]
        assert claim.spec.access_modes == ["ReadWriteMany"]
        assert claim.spec.resources.requests["storage"] == "5Gi"
        assert claim.spec.storage_class_name == "nfs-rwx"

        def mounts_of(pod: client.V1Pod) -> tuple[str | None, str | None, set[str]]:
            output = next(v for v in pod.spec.volumes if v.name == "output")
            mount = next(m for m in pod.spec.containers[0].volume_mounts if m.name == "output")
            owners = {o.uid for o in pod.metadata.owner_references or ()}
            return output.persistent_volume_claim.claim_name, mount.mount_path, owners

        first = pods_of(core, namespace, job_id)
        assert len(first) == 2
        for pod in first:
            name, path, owners = mounts_of(pod)
            assert (name, path) == (claim_name, "/output")
            assert claim.metadata.uid in owners

        # A gang restart (attempt 2, after the first gang is gone) reuses the claim.
        backend.stop(job_id, grace_seconds=0, reason="restart")
        wait_until("gang gone", lambda: not pods_of(core, namespace, job_id), timeout=60)
        second = make_gang(backend, H100, job_id=job_id, spec=spec, attempt=2)
        wait_until("attempt 2 launched", lambda: _launched(backend, second), timeout=60)
        again = pods_of(core, namespace, job_id)
        assert {p.metadata.labels["trainyard.io/attempt"] for p in again} == {"2"}
        assert all(mounts_of(p)[0] == claim_name for p in again)
        after = core.read_namespaced_persistent_volume_claim(claim_name, namespace)
        assert after.metadata.uid == claim.metadata.uid
        backend.stop(job_id, grace_seconds=0, reason="done")
        wait_until("gang gone", lambda: not pods_of(core, namespace, job_id), timeout=60)

        retention = CheckpointRetention(engine, backend, home=tmp_path, retention_seconds=3600)
        # Finished, but within the retention: kept.
        with write_transaction(engine) as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(state="SUCCEEDED", finished_at=10**15)
            )
        assert retention.sweep(now=10**9 + 60) == []
        assert not claim_gone(core, namespace, claim_name)
        # Past the retention: the claim is deleted.
        assert retention.sweep(now=10**9 + 3601) == [job_id]
        wait_until("claim deleted", lambda: claim_gone(core, namespace, claim_name), timeout=60)


def _launched(backend: Any, gang: Any) -> bool:
    try:
        backend.launch(gang)
    except Exception:
        return False
    return True


def test_a_job_naming_a_missing_claim_stays_pending_then_starts_once_it_appears(
    kube_cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    core = kube_cluster.core
    engine = store(tmp_path)
    claim = f"data-{uuid.uuid4().hex[:8]}"
    spec = {
        "name": "reader",
        "workers": 1,
        "resources": {"cpu": "1", "memory": "1Gi"},
        "workload": {"command": ["python", "-c", "pass"]},
        "volumes": [{"name": "data", "pvc": claim}],
        "mounts": [{"volume": "data", "path": "/data", "read_only": True}],
    }
    job_id = submit(engine, spec)
    with running_backend(kube_cluster.kubeconfig, namespace) as backend:
        loop = SchedulingLoop(engine, backend, home=tmp_path)

        def reason() -> str:
            with read_transaction(engine) as conn:
                job = get_job(conn, job_id=job_id)
            assert job is not None
            return f"{job.state.value}: {job.reason}"

        for _ in range(3):
            loop.cycle()
        assert reason().startswith("PENDING: pending: waiting for PersistentVolumeClaim")
        assert claim in reason()
        assert pods_of(core, namespace, job_id) == []

        core.create_namespaced_persistent_volume_claim(
            namespace,
            {
                "metadata": {"name": claim},
                "spec": {
                    "accessModes": ["ReadOnlyMany"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )

        def started() -> bool:
            loop.cycle()
            return bool(pods_of(core, namespace, job_id))

        wait_until("the job launched once its claim exists", started, timeout=60)
        [pod] = pods_of(core, namespace, job_id)
        data = next(v for v in pod.spec.volumes if v.name == "v-data")
        assert data.persistent_volume_claim.claim_name == claim
        mount = next(m for m in pod.spec.containers[0].volume_mounts if m.name == "v-data")
        assert (mount.mount_path, mount.read_only) == ("/data", True)
        assert not reason().startswith("PENDING")
        backend.stop(job_id, grace_seconds=0, reason="test over")
