"""What the watches saw, reduced to what scheduling needs (pure functions, no I/O).

A watched Pod or Node (the apiserver's JSON) becomes a small frozen record as soon as
it arrives, so the caches hold a few fields per object instead of whole documents,
and the per-cycle work (`scheduler_nodes`, `worker_status`) is plain arithmetic.

Capacity follows kube-scheduler: a node offers its allocatable minus the requests of
every pod bound to it that has not terminated (Succeeded/Failed), including pods being
deleted; a pod's request is the larger of its containers' sum and its largest init
container, plus its overhead. Our own pods are left out of `used_*`: the loop counts
them from the placements in its store.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from trainyard.checkpoint_index import parse_report
from trainyard.operator.backend import WorkerPhase, WorkerStatus
from trainyard.operator.kubernetes.names import (
    ATTEMPT_LABEL,
    JOB_ID_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    TARGET_NODE_ANNOTATION,
    WORKER_INDEX_LABEL,
)
from trainyard.scheduler.quantity import QuantityError, cpu_millicores, memory_bytes
from trainyard.scheduler.types import (
    GPU_RESOURCE,
    TPU_RESOURCE,
    Node,
    Taint,
    TaintEffect,
)

UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
WORKER_METRICS_PORT = 9400  # trainyard.worker.config's default metrics port
# Waiting reasons that can never heal by waiting: fail the worker at once.
FATAL_WAITING = frozenset({"InvalidImageName", "ErrImageNeverPull"})
# Waiting reasons that may heal (a registry hiccup, a secret created late): fail after
# the start grace.
STUCK_WAITING = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError", "CreateContainerError"}
)


@dataclass(frozen=True, slots=True)
class Usage:
    cpu_millicores: int = 0
    memory_bytes: int = 0
    gpus: int = 0
    tpu_chips: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.cpu_millicores + other.cpu_millicores,
            self.memory_bytes + other.memory_bytes,
            self.gpus + other.gpus,
            self.tpu_chips + other.tpu_chips,
        )


# (step, written at in unix seconds, size in bytes, attempt that wrote it), newest first.
Checkpoints = tuple[tuple[int, float, int, int | None], ...]


@dataclass(frozen=True, slots=True)
class WorkerKey:
    job_id: str
    attempt: int
    index: int


@dataclass(frozen=True, slots=True)
class PodRecord:
    """One pod as the caches keep it."""

    namespace: str
    name: str
    uid: str
    node: str  # spec.nodeName, "" while unbound
    phase: str  # Pending / Running / Succeeded / Failed / Unknown
    deleting: bool
    usage: Usage
    worker: WorkerKey | None = None  # set for our pods only
    target_node: str = ""
    exit_code: int | None = None
    message: str = ""
    waiting_reason: str = ""
    running: bool = False
    log_tail: str = ""  # the container's termination message (last log lines on error)
    # What worker 0 reported its output directory holds when its container ended
    # (trainyard.checkpoint_index); None when it reported nothing.
    checkpoints: Checkpoints | None = None
    ready: bool = False  # the Ready condition is True (the kubelet's readiness probe)
    ip: str = ""  # status.podIP, "" until the pod has one
    serve_port: int | None = None  # the container port named "http" (a model service)
    metrics_port: int | None = None  # where its worker runtime serves /metrics

    @property
    def terminated(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One node as the caches keep it."""

    name: str
    allocatable: Usage
    labels: Mapping[str, str]
    taints: tuple[Taint, ...]
    unschedulable: bool
    ready: str  # the Ready condition's status: "True", "False", "Unknown" or ""
    ready_reason: str = ""
    ready_since: float | None = None  # wall-clock seconds of its last transition


def _quantity(values: Mapping[str, Any], key: str, parse: Any) -> int:
    value = values.get(key)
    if value is None:
        return 0
    try:
        return int(parse(str(value)))
    except (QuantityError, ValueError):
        return 0


def _count(text: str) -> int:
    return int(memory_bytes(text))  # a plain integer quantity ("8"); same grammar


def resource_usage(values: Mapping[str, Any] | None) -> Usage:
    """cpu, memory, GPUs and TPU chips of a resource list ({"cpu": "500m", ...})."""
    if not values:
        return Usage()
    return Usage(
        _quantity(values, "cpu", cpu_millicores),
        _quantity(values, "memory", memory_bytes),
        _quantity(values, GPU_RESOURCE, _count),
        _quantity(values, TPU_RESOURCE, _count),
    )


def _container_request(container: Mapping[str, Any]) -> Usage:
    resources = container.get("resources") or {}
    # Requests default to limits (the apiserver fills them in; be safe when it did not).
    merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    return resource_usage(merged)


def _max(a: Usage, b: Usage) -> Usage:
    return Usage(
        max(a.cpu_millicores, b.cpu_millicores),
        max(a.memory_bytes, b.memory_bytes),
        max(a.gpus, b.gpus),
        max(a.tpu_chips, b.tpu_chips),
    )


def pod_request(spec: Mapping[str, Any]) -> Usage:
    """What a pod takes from its node, computed as kube-scheduler does."""
    total = Usage()
    for container in spec.get("containers") or ():
        total = total + _container_request(container)
    for container in spec.get("initContainers") or ():
        total = _max(total, _container_request(container))
    return total + resource_usage(spec.get("overhead"))


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _pod_ready(status: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )


def _serve_port(spec: Mapping[str, Any]) -> int | None:
    for container in spec.get("containers") or ():
        for port in container.get("ports") or ():
            if port.get("name") == "http" and port.get("containerPort"):
                return int(port["containerPort"])
    return None


def _metrics_port(spec: Mapping[str, Any]) -> int:
    """The worker runtime's metrics port in the pod: its TRAINYARD_METRICS_PORT, else the
    runtime's default (trainyard.worker.config)."""
    for container in spec.get("containers") or ():
        for variable in container.get("env") or ():
            if variable.get("name") == "TRAINYARD_METRICS_PORT":
                with contextlib.suppress(TypeError, ValueError):
                    return int(variable.get("value"))
    return WORKER_METRICS_PORT


def _worker_key(labels: Mapping[str, str]) -> WorkerKey | None:
    try:
        return WorkerKey(
            labels[JOB_ID_LABEL], int(labels[ATTEMPT_LABEL]), int(labels[WORKER_INDEX_LABEL])
        )
    except (KeyError, ValueError):
        return None


def _termination(
    status: Mapping[str, Any],
) -> tuple[int | None, str, str, bool, str, Checkpoints | None]:
    """(exit code, message, waiting reason, running, termination message, reported
    checkpoints) from the pod's container statuses."""
    exit_code: int | None = None
    message = ""
    waiting = ""
    running = False
    tail = ""
    reported: Checkpoints | None = None
    for container in status.get("containerStatuses") or ():
        state = container.get("state") or {}
        if "terminated" in state:
            terminated = state["terminated"] or {}
            code = terminated.get("exitCode")
            found, text = parse_report(terminated.get("message") or "")
            if found is not None:
                reported = tuple(
                    (c["step"], c["written_at"], c["size_bytes"], c["attempt"]) for c in found
                )
            if code is not None and (exit_code is None or code != 0):
                exit_code = int(code)
                reason = terminated.get("reason") or ""
                message = f"exited {code}" + (f" ({reason})" if reason else "")
                tail = text.strip()
                if tail:
                    message += f": {tail.splitlines()[-1][:300]}"
        elif "waiting" in state:
            info = state["waiting"] or {}
            waiting = info.get("reason") or ""
            if waiting in FATAL_WAITING or waiting in STUCK_WAITING:
                message = f"{waiting}: {(info.get('message') or '').strip()[:300]}".rstrip(": ")
        elif "running" in state:
            running = True
    return exit_code, message, waiting, running, tail, reported


def pod_record(obj: Mapping[str, Any], our_namespace: str) -> PodRecord:
    """Reduce a Pod document to a record; `worker` is set only for Trainyard's own pods."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    labels = meta.get("labels") or {}
    namespace = meta.get("namespace") or ""
    ours = namespace == our_namespace and labels.get(MANAGED_BY_LABEL) == MANAGED_BY
    worker = _worker_key(labels) if ours else None
    phase = status.get("phase") or "Pending"
    exit_code, message, waiting, running, tail, reported = (
        _termination(status) if worker else (None, "", "", False, "", None)
    )
    if worker and not message and status.get("reason"):
        # Pod-level failures: Evicted, NodeLost, OutOfgpu (kubelet admission), ...
        message = f"{status.get('reason')}: {(status.get('message') or '').strip()[:300]}"
    return PodRecord(
        namespace=namespace,
        name=meta.get("name") or "",
        uid=meta.get("uid") or "",
        node=spec.get("nodeName") or "",
        phase=phase,
        deleting=bool(meta.get("deletionTimestamp")),
        usage=pod_request(spec),
        worker=worker,
        target_node=(meta.get("annotations") or {}).get(TARGET_NODE_ANNOTATION, ""),
        exit_code=exit_code,
        message=message,
        waiting_reason=waiting,
        running=running,
        log_tail=tail,
        checkpoints=reported,
        ready=_pod_ready(status) if worker else False,
        ip=str(status.get("podIP") or "") if worker else "",
        serve_port=_serve_port(spec) if worker else None,
        metrics_port=_metrics_port(spec) if worker else None,
    )


def _taint(raw: Mapping[str, Any]) -> Taint | None:
    try:
        effect = TaintEffect(raw.get("effect"))
    except ValueError:
        return None
    return Taint(key=str(raw.get("key") or ""), value=str(raw.get("value") or ""), effect=effect)


def node_record(obj: Mapping[str, Any]) -> NodeRecord:
    """Reduce a Node document to a record."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    taints = tuple(t for t in (_taint(raw) for raw in spec.get("taints") or ()) if t)
    ready, reason, since = "", "", None
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Ready":
            ready = str(condition.get("status") or "")
            reason = str(condition.get("reason") or "")
            since = parse_time(condition.get("lastTransitionTime"))
    return NodeRecord(
        name=meta.get("name") or "",
        allocatable=resource_usage(status.get("allocatable")),
        labels=dict(meta.get("labels") or {}),
        taints=taints,
        unschedulable=bool(spec.get("unschedulable")),
        ready=ready,
        ready_reason=reason,
        ready_since=since,
    )


def foreign_usage(pods: Iterable[PodRecord]) -> dict[str, Usage]:
    """Per node, the requests of bound, non-terminated pods that are not ours."""
    used: dict[str, Usage] = {}
    for pod in pods:
        if pod.worker is not None or not pod.node or pod.terminated:
            continue
        used[pod.node] = used.get(pod.node, Usage()) + pod.usage
    return used


def scheduler_node(node: NodeRecord, used: Usage) -> Node:
    """A node as the scheduling core sees it.

    Cordoned nodes carry the unschedulable taint (kube-scheduler's NodeUnschedulable:
    only pods tolerating it may land); a node whose Ready condition is not True is not
    ready, whatever its taints say.
    """
    taints = node.taints
    if node.unschedulable and not any(t.key == UNSCHEDULABLE_TAINT for t in taints):
        taints = (*taints, Taint(UNSCHEDULABLE_TAINT, "", TaintEffect.NO_SCHEDULE))
    return Node(
        name=node.name,
        cpu_millicores=node.allocatable.cpu_millicores,
        memory_bytes=node.allocatable.memory_bytes,
        gpus=node.allocatable.gpus,
        tpu_chips=node.allocatable.tpu_chips,
        labels=node.labels,
        taints=taints,
        ready=node.ready == "True",
        used_cpu_millicores=used.cpu_millicores,
        used_memory_bytes=used.memory_bytes,
        used_gpus=used.gpus,
        used_tpu_chips=used.tpu_chips,
    )


def node_loss(
    pod: PodRecord, nodes: Mapping[str, NodeRecord], *, now: float, grace: float
) -> str | None:
    """Why the node under `pod` counts as lost, or None while it is fine (or in grace)."""
    if not pod.node:
        return None
    node = nodes.get(pod.node)
    if node is None:
        return f"node {pod.node} was deleted"
    if node.ready == "True":
        return None
    since = node.ready_since if node.ready_since is not None else now
    down_for = now - since
    if down_for < grace:
        return None
    condition = "NotReady" if node.ready == "False" else f"Ready={node.ready or 'missing'}"
    reason = f" ({node.ready_reason})" if node.ready_reason else ""
    return f"node {pod.node} {condition}{reason} for {down_for:.0f}s"


def worker_status(
    pod: PodRecord,
    nodes: Mapping[str, NodeRecord],
    *,
    now: float,
    node_lost_grace: float,
    waiting_since: float | None,
    start_grace: float,
    stopping: bool,
) -> WorkerStatus:
    """One of our pods as a WorkerStatus, with node loss and stuck starts turned into
    FAILED (their messages name the node and condition, or the container's reason).

    A model service replica's pod (one with an "http" port) also says where it serves
    (pod IP and that port: /predict and /healthz; pod IP and the runtime's metrics
    port: /metrics, which the autoscaler scrapes by pod IP) and whether it is ready:
    its Ready condition, set by the kubelet from the readiness probe on /healthz, the
    same verdict the Service routes by."""
    assert pod.worker is not None
    key = pod.worker
    replica = pod.serve_port is not None
    node = pod.node or pod.target_node
    phase, message, exit_code = WorkerPhase.STARTING, "", pod.exit_code
    if pod.phase == "Succeeded":
        phase, message = WorkerPhase.SUCCEEDED, pod.message or "exited 0"
        exit_code = 0 if exit_code is None else exit_code
    elif pod.phase == "Failed":
        phase = WorkerPhase.FAILED
        message = pod.message or "failed"
        if not pod.message and exit_code is None:
            message = "pod failed without a container exit code"
    else:
        lost = node_loss(pod, nodes, now=now, grace=node_lost_grace)
        if lost is not None:
            phase, message = WorkerPhase.FAILED, lost
        elif pod.waiting_reason in FATAL_WAITING:
            phase, message = WorkerPhase.FAILED, pod.message
        elif (
            pod.waiting_reason in STUCK_WAITING
            and waiting_since is not None
            and now - waiting_since >= start_grace
        ):
            phase, message = WorkerPhase.FAILED, f"{pod.message} (for {now - waiting_since:.0f}s)"
        elif pod.phase == "Running" and pod.running:
            phase = WorkerPhase.RUNNING
        elif pod.phase == "Unknown":
            message = "pod phase Unknown (node unreachable)"
        elif not pod.node:
            message = "created, not bound yet"
    return WorkerStatus(
        job_id=key.job_id,
        attempt=key.attempt,
        index=key.index,
        node=node,
        phase=phase,
        exit_code=exit_code,
        message=message,
        stopping=stopping or pod.deleting,
        metrics_address=f"{pod.ip}:{pod.metrics_port}" if replica and pod.ip else None,
        serve_address=f"{pod.ip}:{pod.serve_port}" if replica and pod.ip else None,
        ready=(phase is WorkerPhase.RUNNING and pod.ready) if replica else None,
    )
