"""The Kubernetes backend's own settings (the parts of Settings it reads, plus tuning)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

DEFAULT_WORKER_IMAGE = "trainyard/worker:0.1.0"
# NCCL defaults for pods: the pod network is eth0 and there is no InfiniBand unless the
# operator says so; a job's own `env` wins over these.
DEFAULT_NCCL_ENV: Mapping[str, str] = MappingProxyType(
    {"NCCL_SOCKET_IFNAME": "eth0", "NCCL_DEBUG": "WARN"}
)


@dataclass(frozen=True, slots=True)
class KubernetesConfig:
    """How pods are made and watched.

    - `namespace`: where Trainyard's pods, Services, Events and its Lease live (nodes and
      other workloads' pods are watched cluster-wide, for capacity).
    - `node_lost_grace`: seconds a node may be NotReady before its workers count FAILED.
    - `start_grace`: seconds a container may wait on an image pull or a missing secret
      before the worker counts FAILED (errors that can never heal fail at once).
    - `termination_grace`: the pods' terminationGracePeriodSeconds (the kubelet's limit
      for a delete without an explicit grace).
    - `checkpoint_storage_class`: the ReadWriteMany storage class of per-job checkpoint
      claims; with it, `checkpoint.storage: auto` means a claim per job (see `storage`).
    - `checkpoint_node_path`: without a claim, a directory on every node (writable by
      `run_as_user`) mounted as the output root (a hostPath): worker 0's checkpoints
      stay on its node, and a restart puts worker 0 back there when it can (see
      trainyard.scheduler.pinning). Unset: an emptyDir, lost with the pod.
    - `output_claim`: a PersistentVolumeClaim mounted at /output so checkpoints survive
      a retry or preemption; without it /output is an emptyDir (lost with the pod).
    """

    namespace: str = "default"
    default_image: str = DEFAULT_WORKER_IMAGE
    cluster_domain: str = "cluster.local"
    node_lost_grace: float = 60.0
    start_grace: float = 300.0
    termination_grace: int = 30
    nccl_env: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_NCCL_ENV))
    output_claim: str | None = None
    checkpoint_storage_class: str | None = None
    checkpoint_node_path: str | None = None
    output_root: str = "/output"
    run_as_user: int = 10001
    resync_seconds: float = 300.0
    watch_timeout_seconds: int = 240
    launch_concurrency: int = 16
    request_timeout: float = 30.0
