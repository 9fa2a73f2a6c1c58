"""A model service through the scheduling loop on the real test cluster (kwok nodes).

Real apiserver, real loop, real store (SQLite in tmp): the loop admits a 2-replica
service, the backend creates a ClusterIP Service and one pod per replica with health
probes, binds them to different nodes, and the loop publishes the Service's DNS name
as the job's endpoint. (kwok runs no containers, so the replicas' HTTP is not tested
here; the local-backend tests do that with real processes.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.cluster.simcluster import KWOK_IMMEDIATE, Cluster
from tests.integration.operator.k8s_support import running_backend
from tests.support.servers import wait_for
from trainyard.api.schemas import JobCreate
from trainyard.operator.kubernetes.names import service_name
from trainyard.operator.loop import SchedulingLoop
from trainyard.store import Submission, get_job, make_engine, migrate, read_transaction
from trainyard.store.repository import submit_jobs
from trainyard.store.services import load_endpoints
from trainyard.store.states import JobState

pytestmark = pytest.mark.cluster


def test_a_service_gets_a_clusterip_service_probed_pods_on_two_nodes_and_an_endpoint(
    kube_cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    document = JobCreate(
        name="svc",
        kind="inference",
        mode="service",
        replicas=2,
        port=8080,
        serve_checkpoint="/output/some-training-job",
        resources={"cpu": "2", "memory": "8Gi", "gpu": 1},
        workload={"builtin": "gpt"},
        annotations=KWOK_IMMEDIATE,  # its pods start once bound: start-up is not tested here
    ).model_dump(mode="json")
    [(job, _)] = submit_jobs(  # type: ignore[misc]
        engine, submissions=[Submission(owner="alice", spec=document, priority_value=0)]
    )
    with running_backend(kube_cluster.kubeconfig, namespace) as backend:
        loop = SchedulingLoop(engine, backend)

        def running() -> bool:
            loop.cycle()
            with read_transaction(engine) as conn:
                stored = get_job(conn, job_id=job.id)
            assert stored is not None and stored.state not in (
                JobState.FAILED,
                JobState.CANCELLED,
            ), stored.reason
            return stored.state is JobState.RUNNING

        wait_for(running, timeout=90, interval=0.2, what="the service RUNNING")
        loop.cycle()
        core = kube_cluster.core
        service = core.read_namespaced_service(service_name(job.id), namespace)
        assert service.spec.type == "ClusterIP" and service.spec.cluster_ip not in (None, "None")
        assert [p.port for p in service.spec.ports] == [8080]
        assert service.spec.selector["trainyard.io/job-id"] == job.id
        pods = core.list_namespaced_pod(namespace, label_selector=f"trainyard.io/job-id={job.id}")
        assert len(pods.items) == 2
        assert len({pod.spec.node_name for pod in pods.items}) == 2  # spread by the core
        container = pods.items[0].spec.containers[0]
        assert container.readiness_probe.http_get.path == "/healthz"
        assert container.liveness_probe.http_get.path == "/healthz"
        # the service port, and the runtime's metrics port for the PodMonitor (issue 10)
        assert [(p.name, p.container_port) for p in container.ports] == [
            ("http", 8080),
            ("metrics-0", 9400),
        ]
        env = {e.name: e.value for e in container.env}
        assert env["TRAINYARD_SERVE"] == "1" and env["TRAINYARD_SERVE_PORT"] == "8080"
        assert "/output/some-training-job" in container.command
        with read_transaction(engine) as conn:
            endpoint = load_endpoints(conn, [job.id])[job.id]
        assert endpoint.endpoint == f"{service_name(job.id)}.{namespace}.svc.cluster.local:8080"
        backend.stop(job.id, grace_seconds=0, reason="test over")
    engine.dispose()
