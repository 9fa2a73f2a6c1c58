"""`trainyard serve --backend kubernetes` end to end: REST in, pods on the real test
cluster out (kwok plays the kubelets: sim.trainyard.io/duration makes a pod succeed
that many seconds after it starts, sim.trainyard.io/fail-after makes it exit 1).

Every job here carries KWOK_IMMEDIATE: kwok starts its pods as soon as they are bound
(not after its simulated 2-10 s container start), since no test here is about start-up
latency. A gang's workers then start within the same second, so a job that must be
seen RUNNING with all workers at once needs only a few seconds of SIM_DURATION.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes import client

from tests.integration.cluster.simcluster import (
    KWOK_IMMEDIATE,
    SIM_DURATION,
    SIM_FAIL_AFTER,
    Cluster,
    make_node_not_ready,
    make_node_ready,
    node_ready_status,
    wait_until,
)
from tests.integration.operator.loop_support import Serve, serve, serve_env
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.cluster

PY = sys.executable


def k8s_settings(kube_cluster: Cluster, namespace: str, **extra: str) -> dict[str, str]:
    return {
        "backend": "kubernetes",
        "kubeconfig": str(kube_cluster.kubeconfig),
        "namespace": namespace,
        "node_lost_grace": "3",
        "stop_grace_seconds": "2",
        "lease_ttl_seconds": "4",
        **extra,
    }


@contextmanager
def k8s_serve(
    tmp_path: Path, kube_cluster: Cluster, namespace: str, **extra: str
) -> Iterator[Serve]:
    with serve(tmp_path / "home", **k8s_settings(kube_cluster, namespace, **extra)) as server:
        yield server


def gpu_job(name: str, workers: int, gpus: int, annotations: dict[str, str], **extra: Any) -> dict:
    """A job of `workers` workers with `gpus` GPUs each; its pods start once bound."""
    return {
        "name": name,
        "workers": workers,
        "resources": {"cpu": "4", "memory": "16Gi", "gpu": gpus, **extra.pop("resources", {})},
        "workload": {"builtin": "gpt", "args": {"steps": 30}},
        "annotations": {**KWOK_IMMEDIATE, **annotations},
        **extra,
    }


def pods(core: client.CoreV1Api, namespace: str, job_id: str) -> list[client.V1Pod]:
    found = core.list_namespaced_pod(namespace, label_selector=f"trainyard.io/job-id={job_id}")
    return sorted(found.items, key=lambda p: p.metadata.name)


def states(server: Serve, job_id: str) -> list[str]:
    """The job's transitions; notes (events that keep the state, such as "checkpoints stay
    pod-local") are not transitions."""
    return [e["to_state"] for e in server.events(job_id) if e["from_state"] != e["to_state"]]


def test_rest_gang_is_bound_to_two_h100_nodes_the_core_chose_and_succeeds(
    tmp_path: Path, kube_cluster: Cluster, namespace: str
) -> None:
    core = kube_cluster.core
    with k8s_serve(tmp_path, kube_cluster, namespace) as server:
        job = server.submit(
            gpu_job("llm", 2, 8, {SIM_DURATION: "6"}, resources={"gpu_models": ["H100"]})
        )
        running = server.wait_state(job["id"], "RUNNING", timeout=120)
        placement = running["placement"]
        bound = pods(core, namespace, job["id"])
        assert [p.spec.node_name for p in bound] == [placement["0"], placement["1"]]
        assert len(set(placement.values())) == 2
        for index, pod in enumerate(bound):
            node = core.read_node(pod.spec.node_name)
            assert node.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
            argv = pod.spec.containers[0].command
            assert argv[:7] == [
                "torchrun",
                "--nnodes",
                "2",
                "--node_rank",
                str(index),
                "--nproc_per_node",
                "8",
            ]
            master = argv[argv.index("--master_addr") + 1]
            assert master.startswith(f"{job['id']}-worker-0.ty-{job['id']}.{namespace}.svc")
            env = {e.name: e.value for e in pod.spec.containers[0].env}
            assert env["MASTER_ADDR"] == master
            assert env["TRAINYARD_JOB_ID"] == job["id"]
            assert pod.status.phase == "Running"
        done = server.wait_state(job["id"], "SUCCEEDED", timeout=120)
        assert states(server, job["id"]) == ["PENDING", "ADMITTED", "RUNNING", "SUCCEEDED"]
        assert done["reason"] == "all workers exited 0"
        scheduled = [
            e for e in core.list_namespaced_event(namespace).items if e.reason == "Scheduled"
        ]
        assert len(scheduled) == 2
        wait_until("the finished job's pods to go", lambda: not pods(core, namespace, job["id"]))


def test_a_64_worker_gang_stays_pending_and_no_pod_is_created(
    tmp_path: Path, kube_cluster: Cluster, namespace: str
) -> None:
    core = kube_cluster.core
    with k8s_serve(tmp_path, kube_cluster, namespace) as server:
        job = server.submit(gpu_job("huge", 64, 8, {SIM_DURATION: "5"}))
        small = server.submit(gpu_job("small", 1, 1, {SIM_DURATION: "1"}))
        # A later job runs to the end: the loop has had cycles to act on the huge one.
        server.wait_state(small["id"], "SUCCEEDED", timeout=120)
        seen = server.job(job["id"])
        assert seen["state"] == "PENDING"
        assert seen["reason"].startswith("unschedulable"), seen["reason"]
        assert pods(core, namespace, job["id"]) == []
        bindings = [
            e
            for e in core.list_namespaced_event(namespace).items
            if e.involved_object.name.startswith(job["id"])
        ]
        assert bindings == []


def test_a_high_priority_gang_preempts_a_low_priority_one_which_reruns_later(
    tmp_path: Path, kube_cluster: Cluster, namespace: str
) -> None:
    core = kube_cluster.core
    queues = json.dumps([{"name": "default", "policy": "priority"}])
    with k8s_serve(tmp_path, kube_cluster, namespace, queues=queues) as server:
        h100 = {"gpu_models": ["H100"]}
        # Every H100 GPU; long enough that only preemption lets `high` in before it ends
        # (preemption takes a loop cycle and the 2 s stop grace).
        low = server.submit(
            gpu_job("low", 4, 8, {SIM_DURATION: "20"}, resources=h100, priority="low")
        )
        server.wait_state(low["id"], "RUNNING", timeout=120)
        victims = {p.metadata.name: p.metadata.uid for p in pods(core, namespace, low["id"])}
        high = server.submit(
            gpu_job("high", 4, 8, {SIM_DURATION: "4"}, resources=h100, priority="high")
        )
        server.wait_state(high["id"], "RUNNING", "SUCCEEDED", timeout=180)
        # The victims were deleted (with the stop grace) before the preemptor was bound.
        preempted = [
            e for e in core.list_namespaced_event(namespace).items if e.reason == "Preempted"
        ]
        assert {e.involved_object.uid for e in preempted} == set(victims.values())
        assert all(e.message.startswith(f"preempted by job {high['id']}") for e in preempted)
        assert "PREEMPTED" in states(server, low["id"])
        server.wait_state(high["id"], "SUCCEEDED", timeout=120)
        done = server.wait_state(low["id"], "SUCCEEDED", timeout=240)
        assert done["attempt"] >= 2
        assert done["created_at"] == low["created_at"]


def test_a_failing_worker_is_retried_then_the_job_fails_with_the_reason(
    tmp_path: Path, kube_cluster: Cluster, namespace: str
) -> None:
    with k8s_serve(tmp_path, kube_cluster, namespace, retry_backoff_seconds="0.2") as server:
        job = server.submit(gpu_job("crash", 1, 1, {SIM_FAIL_AFTER: "1"}, retries=2))
        failed = server.wait_state(job["id"], "FAILED", timeout=240)
        assert failed["attempt"] == 3
        assert "worker 0" in failed["reason"] and "exit" in failed["reason"], failed["reason"]
        assert states(server, job["id"]).count("ADMITTED") == 3


def test_a_node_made_not_ready_under_a_running_job_restarts_it_elsewhere(
    tmp_path: Path, kube_cluster: Cluster, namespace: str
) -> None:
    core = kube_cluster.core
    with k8s_serve(tmp_path, kube_cluster, namespace, retry_backoff_seconds="0.2") as server:
        job = server.submit(
            gpu_job(
                "resilient",
                1,
                8,
                {SIM_DURATION: "600"},
                resources={"gpu_models": ["A100"]},
                retries=3,
            )
        )
        first = server.wait_state(job["id"], "RUNNING", timeout=120)
        lost = first["placement"]["0"]
        make_node_not_ready(core, lost)
        try:

            def moved() -> dict[str, Any] | None:
                seen = server.job(job["id"])
                if seen["state"] == "RUNNING" and seen["placement"]["0"] != lost:
                    return seen
                return None

            second = wait_until("the job to run on another node", moved, 180)
            assert second["attempt"] == 2
            reasons = [e["reason"] or "" for e in server.events(job["id"])]
            assert any(f"node {lost} NotReady" in r for r in reasons), reasons
        finally:
            make_node_ready(core, lost)
        wait_until("the node to be Ready again", lambda: node_ready_status(core, lost) == "True")
        with server.client() as http:
            http.post(f"/v1/jobs/{job['id']}/cancel")
        server.wait_state(job["id"], "CANCELLED", timeout=120)


def test_gpus_taken_by_a_deployment_keep_a_job_pending_until_they_are_freed(
    tmp_path: Path, kube_cluster: Cluster, namespace: str
) -> None:
    core, apps = kube_cluster.core, client.AppsV1Api(kube_cluster.api)
    labels = {"app": "serving"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "serving"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        # Its pods go at once when it is deleted (not after up to 30 s
                        # of kwok's termination grace): the freed GPUs are the point.
                        "terminationGracePeriodSeconds": 0,
                        "containers": [
                            {
                                "name": "serve",
                                "image": "registry.invalid/serve:1",
                                "resources": {"limits": {"nvidia.com/gpu": "5"}},
                            }
                        ],
                    },
                },
            },
        },
    )
    replicas = wait_until(
        "the Deployment's 2 pods",
        lambda: (
            found
            if len(found := core.list_namespaced_pod(namespace, label_selector="app=serving").items)
            == 2
            else None
        ),
    )
    for pod, node in zip(replicas, ("gpu-a100-0", "gpu-a100-1"), strict=True):
        core.create_namespaced_pod_binding(
            pod.metadata.name,
            namespace,
            {
                "metadata": {"name": pod.metadata.name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            },
            _preload_content=False,
        )
    with k8s_serve(tmp_path, kube_cluster, namespace) as server:
        job = server.submit(
            gpu_job("a100", 1, 8, {SIM_DURATION: "2"}, resources={"gpu_models": ["A100"]})
        )
        wait_until(
            "the job to be found unschedulable",
            lambda: (server.job(job["id"])["reason"] or "").startswith("unschedulable"),
            60,
        )
        assert server.job(job["id"])["state"] == "PENDING"
        assert pods(core, namespace, job["id"]) == []
        apps.delete_namespaced_deployment("serving", namespace)
        server.wait_state(job["id"], "SUCCEEDED", timeout=180)


def test_loop_killed_between_creating_and_binding_pods_leaves_one_set(
    tmp_path: Path, kube_cluster: Cluster, namespace: str
) -> None:
    core = kube_cluster.core
    settings = k8s_settings(kube_cluster, namespace, loop="false")
    home = tmp_path / "home"
    with serve(home, **settings) as server:
        job = server.submit(gpu_job("half", 2, 8, {SIM_DURATION: "6"}))
        env = serve_env(home, **{**settings, "loop": "true", "fault_kill_before_bind": "1"})
        crashed = subprocess.run(
            [PY, "-m", "trainyard.operator"], env=env, timeout=180, capture_output=True
        )
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
        assert server.job(job["id"])["state"] == "ADMITTED"
        created = pods(core, namespace, job["id"])
        assert [p.spec.node_name for p in created] == [None, None]  # created, never bound
        loop = subprocess.Popen(
            [PY, "-m", "trainyard.operator"], env=serve_env(home, **{**settings, "loop": "true"})
        )
        try:
            running = server.wait_state(job["id"], "RUNNING", timeout=180)
            now = pods(core, namespace, job["id"])
            assert [p.metadata.uid for p in now] == [p.metadata.uid for p in created]
            assert [p.spec.node_name for p in now] == [running["placement"][i] for i in "01"]
            server.wait_state(job["id"], "SUCCEEDED", timeout=120)
            assert running["attempt"] == 1
        finally:
            loop.terminate()
            loop.wait(timeout=60)


def lease_holder(core_api: client.ApiClient, namespace: str) -> str | None:
    lease = client.CoordinationV1Api(core_api).read_namespaced_lease(
        "trainyard-scheduler", namespace
    )
    return lease.spec.holder_identity


def test_two_loop_replicas_elect_one_leader_and_killing_it_hands_over(
    tmp_path: Path, kube_cluster: Cluster, namespace: str
) -> None:
    settings = k8s_settings(kube_cluster, namespace, loop="false")
    home = tmp_path / "home"
    with serve(home, **settings) as server:
        env = serve_env(home, **{**settings, "loop": "true"})
        replicas = [subprocess.Popen([PY, "-m", "trainyard.operator"], env=env) for _ in "ab"]
        try:
            pids = {str(p.pid): p for p in replicas}

            def holder_pid() -> str | None:
                try:
                    holder = lease_holder(kube_cluster.api, namespace)
                except client.ApiException:
                    return None
                pid = (holder or "").split("-")[-2:-1]
                return pid[0] if pid and pid[0] in pids else None

            leader = wait_until("one replica to hold the Lease", holder_pid, 60)
            first = server.submit(gpu_job("one", 1, 1, {SIM_DURATION: "1"}))
            server.wait_state(first["id"], "SUCCEEDED", timeout=120)
            os.kill(int(leader), signal.SIGKILL)
            killed_at = time.monotonic()
            pids[leader].wait()
            survivor = wait_until(
                "the other replica to take the Lease",
                lambda: next((p for p in [holder_pid()] if p and p != leader), None),
                60,
                0.1,
            )
            took = time.monotonic() - killed_at
            assert took <= 4 + 2 * 1.0 + 2.0, took  # lease 4 s + two retries + slack
            second = server.submit(gpu_job("two", 1, 1, {SIM_DURATION: "1"}))
            server.wait_state(second["id"], "SUCCEEDED", timeout=120)
            assert pids[survivor].poll() is None
        finally:
            for process in replicas:
                if process.poll() is None:
                    process.terminate()
                    process.wait(timeout=60)


def proxied_kubeconfig(kube_cluster: Cluster, proxy: TcpProxy, path: Path) -> Path:
    """The cluster's kubeconfig with the server behind `proxy` (same certificates)."""
    document = yaml.safe_load(kube_cluster.kubeconfig.read_text())
    for entry in document["clusters"]:
        server = urlsplit(entry["cluster"]["server"])
        entry["cluster"]["server"] = f"https://{server.hostname}:{proxy.port}"
    path.write_text(yaml.safe_dump(document))
    path.chmod(0o600)
    return path


def test_the_loop_waits_out_an_unreachable_apiserver_and_catches_up(
    tmp_path: Path, kube_cluster: Cluster, namespace: str
) -> None:
    """The apiserver (real) goes unreachable behind a TCP forwarder that the test cuts:
    the API keeps serving reads and submits, the loop process neither crashes nor
    launches anything twice, and once the apiserver is back the running job's end (which
    happened during the outage) and the job submitted meanwhile are both caught up."""
    core = kube_cluster.core
    upstream = urlsplit(
        yaml.safe_load(kube_cluster.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    )
    with TcpProxy((upstream.hostname or "127.0.0.1", upstream.port or 443)) as proxy:
        kubeconfig = proxied_kubeconfig(kube_cluster, proxy, tmp_path / "kubeconfig")
        settings = {**k8s_settings(kube_cluster, namespace), "kubeconfig": str(kubeconfig)}
        with serve(tmp_path / "home", **settings) as server:
            before = server.submit(gpu_job("before", 1, 8, {SIM_DURATION: "14"}))
            server.wait_state(before["id"], "RUNNING", timeout=120)
            loop_pid = server.loop_pid()
            proxy.cut()
            # The outage is real to the loop once it has lost its Lease (4 s TTL).
            wait_until(
                "the loop to lose its Lease",
                lambda: "lost the lease" in server.out.read_text(errors="replace"),
                60,
            )
            during = server.submit(gpu_job("during", 1, 8, {SIM_DURATION: "1"}))
            assert server.job(before["id"])["state"] == "RUNNING"  # reads keep working
            with server.client() as http:
                listed = http.get("/v1/jobs").json()["data"]
            assert {j["id"] for j in listed} >= {before["id"], during["id"]}
            assert server.job(during["id"])["state"] == "PENDING"
            # `before` ends while nobody watches (kwok: 14 s after it started running).
            wait_until(
                "the first pod to succeed on the cluster",
                lambda: (
                    [p.status.phase for p in pods(core, namespace, before["id"])]
                    in (["Succeeded"], [])
                ),
                120,
            )
            proxy.restore()
            server.wait_state(before["id"], "SUCCEEDED", timeout=120)
            done = server.wait_state(during["id"], "SUCCEEDED", timeout=180)
            assert done["attempt"] == 1
            assert server.loop_pid() == loop_pid  # waited and retried; never restarted
            for job in (before, during):
                assert states(server, job["id"]) == ["PENDING", "ADMITTED", "RUNNING", "SUCCEEDED"]
            scheduled = [
                e.involved_object.name
                for e in core.list_namespaced_event(namespace).items
                if e.reason == "Scheduled"
            ]
            # One pod per job, bound once: no launch was repeated after the outage.
            assert sorted(scheduled) == sorted(f"{job['id']}-worker-0" for job in (before, during))
