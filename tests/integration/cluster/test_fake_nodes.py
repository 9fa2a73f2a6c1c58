"""kwok's fake GPU/TPU nodes: the profile, simulated pod lifecycles, node failures."""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.integration.cluster.simcluster import (
    HACK_DIR,
    NODE_PROFILE_LABEL,
    RACK_LABEL,
    SIM_DURATION,
    SIM_FAIL_AFTER,
    STATE_DIR,
    ZONE_LABEL,
    Cluster,
    delete_node,
    make_node_not_ready,
    make_node_ready,
    node_ready_status,
    recreate_node,
    wait_until,
)

pytestmark = pytest.mark.cluster

IMAGE = "registry.invalid/trainyard/sim:1"  # never pulled: kwok plays the kubelet
GPU = "nvidia.com/gpu"
TPU = "google.com/tpu"


def test_nodes_follow_their_profile(kube_cluster: Cluster) -> None:
    nodes = kube_cluster.core.list_node(label_selector=NODE_PROFILE_LABEL).items
    profiles = {node.metadata.labels[NODE_PROFILE_LABEL] for node in nodes}
    assert len(profiles) == 1, profiles
    profile = yaml.safe_load((HACK_DIR / "profiles" / f"{profiles.pop()}.yaml").read_text())

    per_group = Counter(node.metadata.labels["trainyard.io/node-group"] for node in nodes)
    assert per_group == {group["name"]: group["count"] for group in profile["groups"]}
    for node in nodes:
        assert node_ready_status(kube_cluster.core, node.metadata.name) == "True"
        assert node.metadata.labels[ZONE_LABEL]
        assert node.metadata.labels[RACK_LABEL]
    gpus = sum(int(node.status.allocatable.get(GPU, "0")) for node in nodes)
    tpus = sum(int(node.status.allocatable.get(TPU, "0")) for node in nodes)
    assert gpus >= 16
    assert tpus >= 4
    products = {node.metadata.labels.get("nvidia.com/gpu.product") for node in nodes}
    assert {"NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB"} <= products
    tpu_nodes = [node for node in nodes if TPU in node.status.allocatable]
    for node in tpu_nodes:
        assert (
            node.metadata.labels["cloud.google.com/gke-tpu-accelerator"] == "tpu-v5-lite-podslice"
        )
        assert node.metadata.labels["cloud.google.com/gke-tpu-topology"] == "2x2"


def sim_pod(name: str, node: str, annotations: dict[str, str]) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, annotations=annotations),
        spec=client.V1PodSpec(
            node_name=node,
            restart_policy="Never",
            containers=[
                client.V1Container(
                    name="trainer",
                    image=IMAGE,
                    resources=client.V1ResourceRequirements(limits={GPU: "8"}),
                )
            ],
        ),
    )


def phase_is(core: client.CoreV1Api, name: str, namespace: str, phase: str) -> client.V1Pod | None:
    pod = core.read_namespaced_pod(name, namespace)
    return pod if pod.status.phase == phase else None


def test_pod_on_a_gpu_node_runs_then_succeeds_after_its_duration(
    kube_cluster: Cluster, namespace: str
) -> None:
    core = kube_cluster.core
    core.create_namespaced_pod(namespace, sim_pod("train", "gpu-h100-1", {SIM_DURATION: "3"}))
    running = wait_until(
        "the pod to run", lambda: phase_is(core, "train", namespace, "Running"), 120
    )
    assert running.status.pod_ip
    assert running.status.host_ip

    done = wait_until(
        "the pod to succeed", lambda: phase_is(core, "train", namespace, "Succeeded"), 120
    )
    (status,) = done.status.container_statuses
    assert status.state.terminated.exit_code == 0
    assert status.state.terminated.reason == "Completed"
    ran_for = status.state.terminated.finished_at - done.status.start_time
    assert ran_for.total_seconds() >= 3


def test_pod_fails_after_its_fail_after_annotation(kube_cluster: Cluster, namespace: str) -> None:
    core = kube_cluster.core
    # fail-after wins over duration when both are set.
    annotations = {SIM_FAIL_AFTER: "2", SIM_DURATION: "1"}
    core.create_namespaced_pod(namespace, sim_pod("crash", "gpu-a100-0", annotations))
    failed = wait_until(
        "the pod to fail", lambda: phase_is(core, "crash", namespace, "Failed"), 120
    )
    (status,) = failed.status.container_statuses
    assert status.state.terminated.exit_code == 1
    ran_for = status.state.terminated.finished_at - failed.status.start_time
    assert ran_for.total_seconds() >= 2


def has_taint(core: client.CoreV1Api, node: str, key: str) -> bool:
    return any(taint.key == key for taint in core.read_node(node).spec.taints or [])


def test_not_ready_node_is_tainted_by_the_node_controller_then_recovers(
    kube_cluster: Cluster,
) -> None:
    core, node = kube_cluster.core, "cpu-3"
    make_node_not_ready(core, node)
    try:
        assert node_ready_status(core, node) == "False"
        wait_until(
            "the node lifecycle controller to taint the NotReady node",
            lambda: has_taint(core, node, "node.kubernetes.io/not-ready"),
            120,
        )
        # kwok no longer manages the node, so nothing has flipped it back meanwhile.
        assert node_ready_status(core, node) == "False"
    finally:
        make_node_ready(core, node)
    wait_until("kwok to mark the node Ready again", lambda: node_ready_status(core, node) == "True")
    wait_until(
        "the not-ready taint to be lifted",
        lambda: not has_taint(core, node, "node.kubernetes.io/not-ready"),
        120,
    )


def test_deleted_node_is_gone_and_can_be_recreated(kube_cluster: Cluster) -> None:
    core, node = kube_cluster.core, "cpu-2"
    saved = delete_node(core, node)

    def gone() -> bool:
        try:
            core.read_node(node)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_until("the node to be deleted", gone)
    recreate_node(core, saved)
    wait_until("the recreated node to be Ready", lambda: node_ready_status(core, node) == "True")
    assert core.read_node(node).status.allocatable["cpu"] == saved.status.allocatable["cpu"]


def test_kubectl_and_helm_are_provided(kube_cluster: Cluster) -> None:
    kubectl = [str(STATE_DIR / "bin" / "kubectl"), "--kubeconfig", str(kube_cluster.kubeconfig)]
    names = subprocess.run(
        [*kubectl, "get", "nodes", "-o", "name"], check=True, capture_output=True, text=True
    ).stdout.split()
    api_names = {f"node/{n.metadata.name}" for n in kube_cluster.core.list_node().items}
    assert set(names) == api_names

    versions = (HACK_DIR / "versions.env").read_text()
    helm_version = re.search(r"^HELM_VERSION=(\S+)$", versions, re.MULTILINE).group(1)
    shown = subprocess.run(
        [str(STATE_DIR / "bin" / "helm"), "version", "--short"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert shown.startswith(helm_version), shown
    releases = subprocess.run(
        [str(STATE_DIR / "bin" / "helm"), "list", "--all-namespaces", "--output", "json"],
        check=True,
        capture_output=True,
        text=True,
        env={"KUBECONFIG": str(kube_cluster.kubeconfig), "HOME": str(STATE_DIR)},
    ).stdout
    assert isinstance(json.loads(releases), list)  # helm reached the apiserver
