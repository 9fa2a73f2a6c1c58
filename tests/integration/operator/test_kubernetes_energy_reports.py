"""GPU energy in the usage accounting on the Kubernetes backend, on the real test
cluster: the API server (kubernetes backend) over real HTTP, the real loop, backend
(pod watch) and store.

kwok runs no container and this machine has no GPU, so two things are simulated, and
only these: the NVML readings (the figures are given to the worker's own reporting
code, trainyard.worker.termination, which writes the termination log a rank writes in a
pod), and the kubelet, which copies that file into the pod's status when the container
ends; the test does that copy through the apiserver (`pods/status`). Everything after
that is what runs in a cluster: the watch parses the message, the loop ends the attempt
and stores the energy, `/v1/usage` reports it.

Two ways an attempt ends: every worker exits 0 (the attempt ends while its pods are
still there), and a worker fails (the loop stops the gang and ends the attempt only
once its pods are gone, so the figures must outlive them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.integration.cluster.simcluster import SIM_DURATION, Cluster
from tests.integration.operator.k8s_support import (
    end_container_as_the_kubelet_would,
    running_backend,
)
from tests.support.servers import running_server, wait_for
from tests.support.termination_messages import energy_termination_message
from trainyard.operator.loop import SchedulingLoop
from trainyard.store import get_job, read_transaction
from trainyard.store.scheduling import attempt_rows
from trainyard.store.states import JobState

pytestmark = pytest.mark.cluster


def test_the_energy_pods_report_is_in_the_usage_however_the_attempt_ends(
    kube_cluster: Cluster, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
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
        ) as server,
        server.client() as http,
        running_backend(kube_cluster.kubeconfig, namespace) as backend,
    ):
        engine = server.engine
        loop = SchedulingLoop(engine, backend, home=tmp_path / "home")

        def submit(name: str) -> str:
            response = http.post(
                "/v1/jobs",
                json={
                    "name": name,
                    "workers": 2,
                    "resources": {"cpu": "1", "memory": "2Gi"},
                    "workload": {"builtin": "gpt", "args": {"steps": 100}},
                    "annotations": {SIM_DURATION: "600"},
                },
            )
            assert response.status_code == 201, response.text
            return str(response.json()["id"])

        def pods_of(job_id: str) -> list[client.V1Pod]:
            pods = core.list_namespaced_pod(
                namespace, label_selector=f"trainyard.io/job-id={job_id}"
            ).items
            bound = [p for p in pods if p.spec.node_name]
            return sorted(bound, key=lambda p: p.metadata.labels["trainyard.io/worker-index"])

        def launched(job_id: str) -> bool:
            loop.cycle()
            return len(pods_of(job_id)) == 2

        def state(job_id: str) -> JobState | None:
            loop.cycle()
            with read_transaction(engine) as conn:
                job = get_job(conn, job_id=job_id)
            return None if job is None else job.state

        done, failed, silent = submit("done"), submit("failed"), submit("no-nvml")
        for job_id in (done, failed, silent):
            wait_for(lambda j=job_id: launched(j), timeout=60, interval=0.1, what="launched")
        for job_id in (done, failed, silent):  # kwok runs the pods: the gangs ran
            wait_for(lambda j=job_id: state(j) is JobState.RUNNING, timeout=60, interval=0.1,
                     what="RUNNING")  # fmt: skip

        # Every worker exits 0, each pod with its own two ranks' figures.
        first, second = pods_of(done)
        ranks_0, ranks_1 = {0: 1000.0, 1: 500.25}, {2: 250.0, 3: 0.25}
        end_container_as_the_kubelet_would(
            core, namespace, first, energy_termination_message(tmp_path, monkeypatch, ranks_0), 0
        )
        end_container_as_the_kubelet_would(
            core, namespace, second, energy_termination_message(tmp_path, monkeypatch, ranks_1), 0
        )
        # Worker 0 fails (its last words before its figure); worker 1 reports its figure
        # as it exits on SIGTERM (143), as when the failure stops its peers.
        first, second = pods_of(failed)
        message = energy_termination_message(
            tmp_path, monkeypatch, {0: 40.0}, "RuntimeError: NCCL timeout"
        )
        end_container_as_the_kubelet_would(core, namespace, first, message, 1)
        end_container_as_the_kubelet_would(
            core,
            namespace,
            second,
            energy_termination_message(tmp_path, monkeypatch, {1: 2.5}),
            143,
        )
        # Exits 0 without any figure: no NVML.
        for pod in pods_of(silent):
            end_container_as_the_kubelet_would(core, namespace, pod, "", 0)

        wait_for(lambda: state(done) is JobState.SUCCEEDED, timeout=60, interval=0.1,
                 what="done SUCCEEDED")  # fmt: skip
        wait_for(lambda: state(failed) is JobState.FAILED, timeout=60, interval=0.1,
                 what="failed FAILED")  # fmt: skip
        wait_for(lambda: state(silent) is JobState.SUCCEEDED, timeout=60, interval=0.1,
                 what="no-nvml SUCCEEDED")  # fmt: skip
        wait_for(lambda: not pods_of(failed), timeout=60, what="the failed gang's pods gone")

        with read_transaction(engine) as conn:
            [attempt] = attempt_rows(conn, job_id=failed)
        assert attempt["outcome"] == "FAILED" and "NCCL timeout" in attempt["reason"]
        assert attempt["energy_joules"] == pytest.approx(42.5)

        response = http.get("/v1/usage", params={"group_by": "job", "since": "1h"})
        assert response.status_code == 200, response.text
        by_job: dict[str, Any] = {g["key"]: g for g in response.json()["data"]}
        assert by_job[done]["energy_joules"] == pytest.approx(1750.5)
        assert by_job[failed]["energy_joules"] == pytest.approx(42.5)
        assert by_job[silent]["energy_joules"] is None  # not measured: not zero
