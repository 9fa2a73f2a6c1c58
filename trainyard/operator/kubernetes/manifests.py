"""The Service and Pods of one gang, as plain JSON documents (pure functions, no I/O).

One headless Service per job gives every worker a stable DNS name
(`<pod>.<service>.<namespace>.svc.<domain>`), so worker 0 is the torchrun master under
a name known before any pod exists; `publishNotReadyAddresses` makes the names resolve
while the workers are still starting (they rendezvous before they are Ready).

Each worker pod names `schedulerName: trainyard` (kube-scheduler leaves it alone) and
is bound by us; its accelerators have requests = limits (extended resources need it),
its node selector and tolerations match the node the core chose (the kubelet
re-checks them on admission), /dev/shm is a memory emptyDir (NCCL and data loaders
need more than the runtime's 64 MiB), and it runs as the image's unprivileged user.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from trainyard.operator.backend import GangLaunch, WorkerLaunch
from trainyard.operator.kubernetes.config import KubernetesConfig
from trainyard.operator.kubernetes.names import (
    ATTEMPT_LABEL,
    CONTAINER_NAME,
    JOB_ID_LABEL,
    JOB_NAME_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    METRICS_PORT,
    METRICS_PORT_NAME,
    OWNER_ANNOTATION,
    QUEUE_ANNOTATION,
    QUEUE_LABEL,
    RENDEZVOUS_PORT,
    REVISION_LABEL,
    SCHEDULER_NAME,
    SCRAPE_ANNOTATIONS,
    TARGET_NODE_ANNOTATION,
    WORKER_INDEX_LABEL,
    is_label_value,
    pod_name,
    service_name,
    worker_hostname,
)
from trainyard.operator.kubernetes.storage import (
    checkpoint_claim_name,
    keeps_node_checkpoints,
    model_volume,
    node_output_volume,
    user_volumes,
)
from trainyard.scheduler.types import (
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    TPU_ACCELERATOR_LABEL,
    TPU_RESOURCE,
    TPU_TOPOLOGY_LABEL,
)
from trainyard.service_revisions import revision_of

_RESERVED_PREFIX = "trainyard.io/"
TERMINATION_LOG = "/dev/termination-log"
TERMINATION_ENV = "TRAINYARD_TERMINATION_LOG"  # trainyard.worker.termination.ENV


def job_labels(gang: GangLaunch) -> dict[str, str]:
    """Labels every object of the job carries (selectors find the job by these)."""
    labels = {
        MANAGED_BY_LABEL: MANAGED_BY,
        JOB_ID_LABEL: gang.job_id,
    }
    if is_label_value(gang.name):
        labels[JOB_NAME_LABEL] = gang.name
    if is_label_value(gang.queue):
        labels[QUEUE_LABEL] = gang.queue
    return labels


def is_model_service(gang: GangLaunch) -> bool:
    """A model service (kind inference, mode service): its Service load-balances."""
    return gang.spec.get("kind") == "inference" and gang.spec.get("mode") == "service"


def service_port(spec: Mapping[str, Any]) -> int:
    return int(spec.get("port", 8000))


def needs_service(gang: GangLaunch) -> bool:
    """Only a gang of several workers needs DNS names for its peers.

    A single worker resolves its own name (`<pod>.<service>.<ns>.svc.<domain>`, the
    master address) without one: the kubelet writes the pod's hostname and subdomain
    into its /etc/hosts. Skipping the Service saves two API writes per job (create and
    delete) and the EndpointSlice controller's writes, the larger share of a one-pod
    job's cost to the apiserver (bench/k8s).
    """
    return len(gang.workers) > 1 or is_model_service(gang)


def service_manifest(gang: GangLaunch) -> dict[str, Any]:
    """The job's headless Service: DNS names for its workers, nothing load-balanced.

    A model service's instead is a ClusterIP Service on the job's port selecting its
    pods: only Ready ones (readiness = the replica's /healthz) receive traffic."""
    labels = job_labels(gang)
    if is_model_service(gang):
        port = service_port(gang.spec)
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": service_name(gang.job_id), "labels": labels},
            "spec": {
                "type": "ClusterIP",
                "publishNotReadyAddresses": False,
                "selector": {MANAGED_BY_LABEL: MANAGED_BY, JOB_ID_LABEL: gang.job_id},
                "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
            },
        }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service_name(gang.job_id), "labels": labels},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {MANAGED_BY_LABEL: MANAGED_BY, JOB_ID_LABEL: gang.job_id},
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "protocol": "TCP"}],
        },
    }


def tpu_environment(gang: GangLaunch, worker: WorkerLaunch, config: KubernetesConfig) -> dict:
    """The PJRT/XLA multi-host environment of a TPU worker (hostnames in index order)."""
    hosts = ",".join(
        worker_hostname(gang.job_id, w.index, config.namespace, config.cluster_domain)
        for w in sorted(gang.workers, key=lambda w: w.index)
    )
    return {"PJRT_DEVICE": "TPU", "TPU_WORKER_ID": str(worker.index), "TPU_WORKER_HOSTNAMES": hosts}


def _secret_env(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`env_from_secret: {ENV: {secret, key}}` as secretKeyRef entries (never the value)."""
    refs = spec.get("env_from_secret") or {}
    entries = []
    for env_name, ref in sorted(refs.items()):
        if not isinstance(ref, Mapping):
            continue
        entries.append(
            {
                "name": str(env_name),
                "valueFrom": {
                    "secretKeyRef": {"name": str(ref.get("secret")), "key": str(ref.get("key"))}
                },
            }
        )
    return entries


def _tolerations(worker: WorkerLaunch, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    tolerations: list[dict[str, Any]] = []
    # What the ExtendedResourceToleration admission plugin would add: GPU and TPU node
    # pools are usually tainted with their resource name.
    if worker.gpus:
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    if worker.tpu_chips:
        tolerations.append({"key": TPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    for toleration in spec.get("tolerations") or ():
        if isinstance(toleration, Mapping):
            tolerations.append({k: v for k, v in toleration.items() if v is not None})
    return tolerations


def _node_selector(worker: WorkerLaunch, node_labels: Mapping[str, str]) -> dict[str, str]:
    """The accelerator labels of the chosen node that the worker depends on."""
    keys: Sequence[str] = ()
    if worker.gpus:
        keys = (GPU_PRODUCT_LABEL,)
    elif worker.tpu_chips:
        keys = (TPU_ACCELERATOR_LABEL, TPU_TOPOLOGY_LABEL)
    return {key: node_labels[key] for key in keys if key in node_labels}


def _resources(worker: WorkerLaunch) -> dict[str, dict[str, str]]:
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if worker.cpu_millicores:
        requests["cpu"] = f"{worker.cpu_millicores}m"
    if worker.memory_bytes:
        requests["memory"] = str(worker.memory_bytes)
    for resource, amount in ((GPU_RESOURCE, worker.gpus), (TPU_RESOURCE, worker.tpu_chips)):
        if amount:
            requests[resource] = limits[resource] = str(amount)
    out: dict[str, dict[str, str]] = {"requests": requests}
    if limits:
        out["limits"] = limits
    return out


def pod_manifest(
    gang: GangLaunch,
    worker: WorkerLaunch,
    *,
    config: KubernetesConfig,
    service_uid: str | None,
    node_labels: Mapping[str, str],
    claim_uid: str | None = None,
) -> dict[str, Any]:
    """Worker `worker.index` of `gang` as a Pod, unbound (we bind it to `worker.node`).

    `service_uid` is the job's headless Service, the pod's owner; None for a
    single-worker gang, which has no Service (see `needs_service`). `claim_uid` is the
    job's own checkpoint claim (see `storage`), mounted as the output root and the
    pods' second owner; None when the job has none.
    """
    labels = {k: v for k, v in gang.labels.items() if not k.startswith(_RESERVED_PREFIX)}
    labels.update(job_labels(gang))
    labels[ATTEMPT_LABEL] = str(gang.attempt)
    labels[WORKER_INDEX_LABEL] = str(worker.index)
    if is_model_service(gang):
        labels[REVISION_LABEL] = str(revision_of(gang.spec))
    annotations = {k: v for k, v in gang.annotations.items() if not k.startswith(_RESERVED_PREFIX)}
    annotations[QUEUE_ANNOTATION] = gang.queue
    annotations[OWNER_ANNOTATION] = gang.owner
    annotations[TARGET_NODE_ANNOTATION] = worker.node
    serves_metrics = _serves_metrics(gang)
    metrics_ports = _metrics_ports(gang, worker) if serves_metrics else []
    if serves_metrics:
        annotations.update(
            zip(SCRAPE_ANNOTATIONS, ("true", str(METRICS_PORT), "/metrics"), strict=True)
        )

    env: dict[str, str] = {**config.nccl_env, **worker.env}
    if serves_metrics:
        # The ports the pod declares are where the runtime serves, whatever the job's env.
        env.update(TRAINYARD_METRICS_PORT=str(METRICS_PORT), TRAINYARD_METRICS_ADDR="0.0.0.0")
    # Worker 0 reports its checkpoints there (trainyard.worker.termination).
    env[TERMINATION_ENV] = TERMINATION_LOG
    if worker.tpu_chips:
        env.update(tpu_environment(gang, worker, config))
    secret_env = _secret_env(gang.spec)
    secret_names = {entry["name"] for entry in secret_env}
    env_list: list[dict[str, Any]] = [
        {"name": name, "value": value}
        for name, value in sorted(env.items())
        if name not in secret_names
    ]
    env_list += secret_env

    claim = checkpoint_claim_name(gang.job_id) if claim_uid else config.output_claim
    output_volume: dict[str, Any] = (
        {"name": "output", "persistentVolumeClaim": {"claimName": claim}}
        if claim
        else {"name": "output", "emptyDir": {}}
    )
    node_path = config.checkpoint_node_path
    rwx = config.checkpoint_storage_class
    if not claim and node_path and keeps_node_checkpoints(gang.spec, rwx, node_path, None):
        output_volume = node_output_volume(node_path)
    extra_volumes, extra_mounts = user_volumes(gang.spec)
    model_volumes, model_mounts = model_volume(gang.spec)
    extra_volumes += model_volumes
    extra_mounts += model_mounts
    owners: list[dict[str, Any]] = []
    if service_uid:
        owners.append(_owner("Service", service_name(gang.job_id), service_uid))
    if claim_uid:
        owners.append(
            _owner("PersistentVolumeClaim", checkpoint_claim_name(gang.job_id), claim_uid)
        )
    name = pod_name(gang.job_id, worker.index)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": owners,
        },
        "spec": {
            "schedulerName": SCHEDULER_NAME,
            "restartPolicy": "Never",
            "hostname": name,
            "subdomain": service_name(gang.job_id),
            "enableServiceLinks": False,
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": config.termination_grace,
            "nodeSelector": _node_selector(worker, node_labels),
            "tolerations": _tolerations(worker, gang.spec),
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": config.run_as_user,
                "runAsGroup": config.run_as_user,
                "fsGroup": config.run_as_user,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": CONTAINER_NAME,
                    "image": gang.image or config.default_image,
                    "command": list(worker.argv),
                    # The kubelet copies the last log lines into the terminated state on
                    # a failure: the reason gets them without a pods/log permission. A
                    # worker that wrote the file (its checkpoint report, then its last
                    # words on a failure) has its contents copied instead.
                    "terminationMessagePath": TERMINATION_LOG,
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "env": env_list,
                    "ports": _container_ports(gang) + metrics_ports,
                    **_probes(gang),
                    "resources": _resources(worker),
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [
                        {"name": "dshm", "mountPath": "/dev/shm"},
                        {"name": "output", "mountPath": config.output_root},
                        *extra_mounts,
                    ],
                }
            ],
            "volumes": [
                {"name": "dshm", "emptyDir": {"medium": "Memory"}},
                output_volume,
                *extra_volumes,
            ],
        },
    }


def _owner(kind: str, name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": kind,
        "name": name,
        "uid": uid,
        "blockOwnerDeletion": False,
        "controller": False,
    }


def _container_ports(gang: GangLaunch) -> list[dict[str, Any]]:
    if is_model_service(gang):
        return [{"name": "http", "containerPort": service_port(gang.spec)}]
    return [{"name": "rendezvous", "containerPort": RENDEZVOUS_PORT}]


def _serves_metrics(gang: GangLaunch) -> bool:
    """Whether the worker runtime runs (and serves `trainyard_worker_*` on METRICS_PORT
    + local rank): a builtin workload, not a `command` one."""
    workload = gang.spec.get("workload")
    return isinstance(workload, Mapping) and bool(workload.get("builtin"))


def _metrics_ports(gang: GangLaunch, worker: WorkerLaunch) -> list[dict[str, Any]]:
    """The runtime's metrics ports, one per local rank (`metrics-0`, ...), so the chart's
    PodMonitor finds every rank; the prometheus.io/port annotation names the first
    (annotation-based scrape configs take one port per pod: rank 0).

    A training worker runs one process per GPU, an inference worker one. A service whose
    own port is the metrics port serves /metrics there, already declared as `http`.
    """
    if is_model_service(gang) and service_port(gang.spec) == METRICS_PORT:
        return []
    ranks = 1 if gang.spec.get("kind") == "inference" else max(1, worker.gpus)
    return [
        {"name": METRICS_PORT_NAME.format(rank=rank), "containerPort": METRICS_PORT + rank}
        for rank in range(ranks)
    ]


def _probes(gang: GangLaunch) -> dict[str, Any]:
    """A model service replica: Ready once its model answers /healthz (loading takes a
    while, so liveness starts late and tolerates a few misses)."""
    if not is_model_service(gang):
        return {}
    check = {"httpGet": {"path": "/healthz", "port": "http"}}
    return {
        "readinessProbe": {**check, "periodSeconds": 2, "failureThreshold": 1},
        "livenessProbe": {
            **check,
            "initialDelaySeconds": 60,
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
    }


def binding(name: str, node: str) -> dict[str, Any]:
    """The Binding that assigns pod `name` to `node` (what kube-scheduler posts)."""
    return {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    }
