"""KubernetesInventory against the real test control plane (hack/cluster)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from trainyard.api.inventory import KubernetesInventory

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        os.environ.get("TRAINYARD_SKIP_CLUSTER") == "1",
        reason="TRAINYARD_SKIP_CLUSTER=1: Kubernetes tests deliberately skipped",
    ),
]


def test_inventory_reads_allocatable_and_gpu_labels_of_nodes() -> None:
    kubeconfig = os.environ.get("KUBECONFIG")
    assert kubeconfig, "KUBECONFIG is not set: run hack/cluster/up.sh (make test does)"
    from kubernetes import client, config

    core = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    name = f"trainyard-inventory-{uuid.uuid4().hex[:8]}"
    node = client.V1Node(
        metadata=client.V1ObjectMeta(
            name=name, labels={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        )
    )
    core.create_node(node)
    try:
        allocatable = {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": "8", "pods": "110"}
        status = {"status": {"capacity": allocatable, "allocatable": allocatable}}
        core.patch_node_status(name, status)
        nodes = {n.name: n for n in KubernetesInventory(Path(kubeconfig)).nodes()}
    finally:
        core.delete_node(name)
    ours = nodes[name]
    assert (ours.cpu_millicores, ours.memory_bytes) == (32000, 256 * 2**30)
    assert (ours.gpu, ours.gpu_model) == (8, "NVIDIA-H100-80GB-HBM3")
