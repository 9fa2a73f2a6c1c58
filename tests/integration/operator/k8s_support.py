"""Helpers for the Kubernetes backend's tests: a backend on the test cluster, gangs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubernetes import client

from trainyard.operator.backend import GangLaunch, WorkerPhase, WorkerStatus
from trainyard.operator.kubernetes import (
    RUNTIME,
    KubernetesBackend,
    KubernetesConfig,
    api_client,
)
from trainyard.operator.launch import build_workers


@contextmanager
def running_backend(kubeconfig: Path, namespace: str, **config: Any) -> Iterator[KubernetesBackend]:
    """A started backend whose caches have listed the cluster; closed afterwards."""
    backend = KubernetesBackend(
        api_client(kubeconfig), KubernetesConfig(namespace=namespace, **config)
    )
    backend.start(lambda: None)
    try:
        backend.wait_synced(60)
        yield backend
    finally:
        backend.close()


def gang_spec(workers: int, gpus: int) -> dict[str, Any]:
    return {
        "workers": workers,
        "resources": {"cpu": "4", "memory": "16Gi", "gpu": gpus},
        "workload": {"builtin": "gpt", "args": {"steps": 30}},
    }


def make_gang(
    backend: KubernetesBackend,
    nodes: Sequence[str],
    *,
    gpus: int = 8,
    annotations: Mapping[str, str] | None = None,
    attempt: int = 1,
    job_id: str | None = None,
    spec: Mapping[str, Any] | None = None,
) -> GangLaunch:
    """A gang of len(nodes) workers of the built-in gpt workload, worker i on nodes[i]."""
    job_id = job_id or uuid.uuid4().hex
    spec = dict(spec or gang_spec(len(nodes), gpus))
    workers = build_workers(
        job_id=job_id,
        name="llm",
        kind="training",
        spec=spec,
        attempt=attempt,
        placement=dict(enumerate(nodes)),
        rendezvous=backend.rendezvous(job_id, attempt),
        output_dir=f"/output/{job_id}",
        runtime=RUNTIME,
    )
    return GangLaunch(
        job_id=job_id,
        attempt=attempt,
        name="llm",
        queue="default",
        owner="alice",
        workers=workers,
        annotations=dict(annotations or {}),
        spec=spec,
    )


def job_workers(backend: KubernetesBackend, job_id: str) -> list[WorkerStatus]:
    return sorted((w for w in backend.workers() if w.job_id == job_id), key=lambda w: w.index)


def phases(backend: KubernetesBackend, job_id: str) -> list[WorkerPhase]:
    return [w.phase for w in job_workers(backend, job_id)]


MERGE_PATCH = "application/merge-patch+json"


def end_container_as_the_kubelet_would(
    core: client.CoreV1Api, namespace: str, pod: client.V1Pod, message: str, code: int
) -> None:
    """Write what a kubelet writes when the pod's only container ends with `code`
    (kwok runs no containers): the terminated state with its termination message."""
    now = "2026-12-01T12:00:00Z"
    container = pod.spec.containers[0]
    terminated = {
        "exitCode": code,
        "reason": "Error" if code else "Completed",
        "message": message,
        "startedAt": now,
        "finishedAt": now,
    }
    status = {
        "status": {
            "phase": "Failed" if code else "Succeeded",
            "containerStatuses": [
                {
                    "name": container.name,
                    "image": container.image,
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": terminated},
                }
            ],
        }
    }
    core.patch_namespaced_pod_status(
        pod.metadata.name, namespace, status, _content_type=MERGE_PATCH
    )
