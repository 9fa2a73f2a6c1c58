"""Node inventories: what the cluster can hold, behind one small interface.

The API layer needs capacity only; it must not depend on the operator's internals, so
each backend's way of listing nodes lives here behind `NodeInventory`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from trainyard.machine import Machine
from trainyard.scheduler.quantity import QuantityError, cpu_millicores, memory_bytes
from trainyard.scheduler.types import (
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    TPU_ACCELERATOR_LABEL,
    TPU_RESOURCE,
)


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    """What one node can give to jobs."""

    name: str
    cpu_millicores: int
    memory_bytes: int
    gpu: int = 0
    gpu_model: str | None = None
    tpu: int = 0
    tpu_type: str | None = None


class NodeInventory(Protocol):
    """Lists the nodes jobs can run on, with their allocatable capacity."""

    def nodes(self) -> list[NodeCapacity]:
        """Current nodes; may block (it can call out to a cluster)."""
        ...


class LocalInventory:
    """This machine as the only node, detected as the local backend detects it
    (trainyard.machine: CPU affinity, memory, NVIDIA GPUs via NVML or nvidia-smi,
    limited by CUDA_VISIBLE_DEVICES), so both report the same node.

    Detected once: a machine's hardware does not change while the server runs.
    """

    def __init__(self, *, nvml: bool = True, nvidia_smi: str | None = None) -> None:
        self._nvml = nvml
        self._nvidia_smi = nvidia_smi
        self._nodes: list[NodeCapacity] | None = None

    def nodes(self) -> list[NodeCapacity]:
        if self._nodes is None:
            node = Machine.detect(nvml=self._nvml, nvidia_smi=self._nvidia_smi).node()
            self._nodes = [
                NodeCapacity(
                    name=node.name,
                    cpu_millicores=node.cpu_millicores,
                    memory_bytes=node.memory_bytes,
                    gpu=node.gpus,
                    gpu_model=node.labels.get(GPU_PRODUCT_LABEL),
                )
            ]
        return list(self._nodes)


def _quantity(allocatable: dict[str, Any], key: str, parse: Any) -> int:
    value = allocatable.get(key)
    if value is None:
        return 0
    try:
        return int(parse(str(value)))
    except QuantityError:
        return 0


def node_capacity_from_k8s(
    name: str, labels: dict[str, str], allocatable: dict[str, Any]
) -> NodeCapacity:
    """A Kubernetes Node's allocatable resources and accelerator labels as NodeCapacity."""
    gpu = _quantity(allocatable, GPU_RESOURCE, lambda v: int(float(v)))
    tpu = _quantity(allocatable, TPU_RESOURCE, lambda v: int(float(v)))
    return NodeCapacity(
        name=name,
        cpu_millicores=_quantity(allocatable, "cpu", cpu_millicores),
        memory_bytes=_quantity(allocatable, "memory", memory_bytes),
        gpu=gpu,
        gpu_model=labels.get(GPU_PRODUCT_LABEL, "unknown") if gpu else None,
        tpu=tpu,
        tpu_type=labels.get(TPU_ACCELERATOR_LABEL, "unknown") if tpu else None,
    )


class KubernetesInventory:
    """The cluster's schedulable nodes, read from the Kubernetes API on each call."""

    def __init__(self, kubeconfig: Path | None = None) -> None:
        from kubernetes import client, config

        if kubeconfig is not None:
            api_client = config.new_client_from_config(config_file=str(kubeconfig))
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
            api_client = client.ApiClient()
        else:
            api_client = config.new_client_from_config()
        self._core = client.CoreV1Api(api_client)

    def nodes(self) -> list[NodeCapacity]:
        result = []
        for node in self._core.list_node(_request_timeout=30).items:
            if node.spec is not None and node.spec.unschedulable:
                continue
            result.append(
                node_capacity_from_k8s(
                    node.metadata.name,
                    dict(node.metadata.labels or {}),
                    dict(node.status.allocatable or {}) if node.status else {},
                )
            )
        return result


class PublishedInventory:
    """The node view the scheduling loop schedules on, as it last published it.

    The loop may run in another process or replica; reading its published view keeps
    GET /v1/cluster and the scheduler in agreement. Before the loop's first cycle
    (or with no loop at all) the backend's own listing answers instead.
    """

    def __init__(self, engine: Any, fallback: NodeInventory) -> None:
        self._engine = engine
        self._fallback = fallback

    def nodes(self) -> list[NodeCapacity]:
        from trainyard.store import read_transaction
        from trainyard.store.scheduling import published_nodes

        with read_transaction(self._engine) as conn:
            published = published_nodes(conn)
        if not published:
            return self._fallback.nodes()
        return [
            NodeCapacity(
                name=name,
                cpu_millicores=doc["cpu_millicores"],
                memory_bytes=doc["memory_bytes"],
                gpu=doc["gpus"],
                gpu_model=doc.get("gpu_model") or ("unknown" if doc["gpus"] else None),
                tpu=doc["tpu_chips"],
                tpu_type=doc.get("tpu_type") or ("unknown" if doc["tpu_chips"] else None),
            )
            for name, doc in sorted(published.items())
        ]


def inventory_for(backend: str, kubeconfig: Path | None) -> NodeInventory:
    """The inventory matching the configured backend."""
    if backend == "kubernetes":
        return KubernetesInventory(kubeconfig)
    return LocalInventory()
