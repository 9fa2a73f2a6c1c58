"""Restarts pinned to worker 0's node when checkpoints cannot be on ReadWriteMany storage:
the real loop, the real apiserver, kwok nodes (no container runs: kwok turns a pod
Failed after `sim.trainyard.io/fail-after` seconds, which is how attempts end here).

The deployment names no RWX class but a node checkpoint directory, so each pod's output
root is that host directory and the checkpoints stay on worker 0's node. Other load is
put on the nodes with plain pods bound directly (nodeName, as a DaemonSet's would be),
so the core's plain best fit would pick another node than the pinned one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.integration.cluster.simcluster import SIM_FAIL_AFTER, Cluster
from tests.integration.operator.k8s_support import running_backend
from tests.support.servers import wait_for
from trainyard.api.schemas import JobCreate
from trainyard.operator.kubernetes import KubernetesBackend
from trainyard.operator.loop import SchedulingLoop
from trainyard.operator.reconcile import RetryPolicy
from trainyard.store import Submission, get_job, list_events, make_engine, migrate, read_transaction
from trainyard.store.repository import submit_jobs
from trainyard.store.states import JobState

pytestmark = pytest.mark.cluster

A100 = ("gpu-a100-0", "gpu-a100-1")
NODE_PATH = "/var/lib/trainyard/checkpoints"


class Fillers:
    """Plain pods taking GPUs on named nodes (other workloads, for the core)."""

    def __init__(self, core: client.CoreV1Api, namespace: str) -> None:
        self.core = core
        self.namespace = namespace

    def add(self, node: str, gpus: int) -> str:
        name = f"filler-{uuid.uuid4().hex[:8]}"
        self.core.create_namespaced_pod(
            self.namespace,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name},
                "spec": {
                    "nodeName": node,
                    "containers": [
                        {
                            "name": "hold",
                            "image": "registry.k8s.io/pause:3.10",
                            "resources": {
                                "requests": {"nvidia.com/gpu": str(gpus)},
                                "limits": {"nvidia.com/gpu": str(gpus)},
                            },
                        }
                    ],
                },
            },
        )
        return name


def foreign_gpus(backend: KubernetesBackend, node: str) -> int:
    return next(n.used_gpus for n in backend.nodes() if n.name == node)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Any]:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


def test_a_restart_puts_worker_0_back_on_its_node_and_says_when_it_cannot(
    kube_cluster: Cluster, namespace: str, engine: Any, tmp_path: Path
) -> None:
    document = JobCreate(
        name="pinned",
        workers=1,
        retries=2,
        resources={"cpu": "2", "memory": "8Gi", "gpu": 4, "gpu_models": ["A100"]},
        workload={"builtin": "gpt", "args": {"steps": 1000}},
        annotations={SIM_FAIL_AFTER: "1"},
    ).model_dump(mode="json")
    [(job, _)] = submit_jobs(  # type: ignore[misc]
        engine, submissions=[Submission(owner="alice", spec=document, priority_value=0)]
    )
    core = kube_cluster.core
    fillers = Fillers(core, namespace)
    with running_backend(
        kube_cluster.kubeconfig, namespace, checkpoint_node_path=NODE_PATH
    ) as backend:
        loop = SchedulingLoop(engine, backend, home=tmp_path, retry=RetryPolicy(backoff_seconds=0))

        def stored() -> Any:
            with read_transaction(engine) as conn:
                found = get_job(conn, job_id=job.id)
            assert found is not None and found.state is not JobState.FAILED, found
            return found

        def admitted(attempt: int) -> Any:
            def check() -> bool:
                loop.cycle()
                now = stored()
                return now.attempt == attempt and now.state is not JobState.PENDING

            wait_for(check, timeout=90, interval=0.1, what=f"attempt {attempt} admitted")
            return stored()

        def notes() -> list[str]:
            with read_transaction(engine) as conn:
                return [e.reason or "" for e in list_events(conn, job_id=job.id)]

        first = admitted(1)
        home_node = first.placement[0]
        [other] = [n for n in A100 if n != home_node]
        pods = core.list_namespaced_pod(namespace, label_selector=f"trainyard.io/job-id={job.id}")
        [pod] = pods.items
        output = next(v for v in pod.spec.volumes if v.name == "output")
        assert output.host_path.path == NODE_PATH and output.host_path.type == "Directory"
        assert any("stay in /var/lib/trainyard/checkpoints" in n for n in notes())

        # Another workload takes half of the other node: the plain best fit for a 4-GPU
        # worker is now that node (fewest free GPUs that still fit), not the home node.
        fillers.add(other, 4)
        wait_for(lambda: foreign_gpus(backend, other) == 4, timeout=30, what="filler seen")

        second = admitted(2)  # attempt 1 failed (kwok), retried
        assert second.placement[0] == home_node
        back = f"checkpoints: worker 0 is back on node {home_node}, where worker 0 of attempt 1"
        assert any(n.startswith(back) for n in notes())

        # The home node fills up while attempt 2 runs (4 GPUs of other work beside it,
        # then 4 more once attempt 2 is gone): attempt 3 cannot go back, and says so.
        fillers.add(home_node, 4)
        wait_for(lambda: foreign_gpus(backend, home_node) == 4, timeout=30, what="filler on home")

        def attempt_2_failed() -> bool:
            return any(
                w.job_id == job.id and w.attempt == 2 and w.phase.exited for w in backend.workers()
            )

        wait_for(attempt_2_failed, timeout=60, interval=0.1, what="attempt 2 failed (kwok)")
        fillers.add(home_node, 4)
        wait_for(lambda: foreign_gpus(backend, home_node) == 8, timeout=30, what="home node full")
        third = admitted(3)
        assert third.placement[0] == other
        last = [n for n in notes() if n.startswith("checkpoints:")][-1]
        assert last.startswith(f"checkpoints: node {home_node}, where worker 0 of attempt 2")
        assert "has no room for worker 0 now" in last
        assert f"worker 0 starts on {other} and the job restarts from step 0" in last
        backend.stop(job.id, grace_seconds=0, reason="test over")
