"""A job's volumes and its checkpoint claim as Kubernetes documents (pure functions).

Checkpoint storage (the job document's `checkpoint`): with `storage: pvc`, or `auto`
when the deployment names a ReadWriteMany storage class, each job gets one
PersistentVolumeClaim of its own, `ty-<job>-ckpt`, mounted as the output root of every
worker of every attempt. A restarted or preempted gang lands on any nodes and still
finds rank 0's checkpoints. The claim outlives the job's attempts (a gang's Service goes
with its pods, the claim does not); it is the owner of the job's pods, so deleting it
(the retention sweep, after the job finished) collects whatever is left of the job.
Without a claim, the output root is the deployment's node checkpoint directory
(`checkpoint_node_path`, a hostPath) where one is configured: worker 0's checkpoints
outlive its pod on that node, and a restart puts worker 0 back there when it can (the
job's events say whether it could). Otherwise an emptyDir: worker-local, lost with the pod.

A model service naming a training job (`checkpoint_job`) mounts that job's claim
read-only at /model and serves `/model/<job>`; it waits PENDING while the claim does
not exist (the training job kept its checkpoints node-local, or retention deleted
them), and the retention sweep keeps a claim while a live service reads it.

User volumes are named `v-<name>` in the pod, so they can never collide with the
volumes Trainyard adds (`dshm`, `output`, `model`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CLAIM_SUFFIX = "-ckpt"
READ_WRITE_MANY = "ReadWriteMany"


@dataclass(frozen=True, slots=True)
class ClaimPlan:
    """The checkpoint claim a job gets: its size and storage class (None: the cluster's
    default class)."""

    size: str
    storage_class: str | None


def checkpoint_claim_name(job_id: str) -> str:
    return f"ty-{job_id}{CLAIM_SUFFIX}"


def job_of_claim(name: str) -> str | None:
    """The job id of one of our checkpoint claims, else None."""
    if name.startswith("ty-") and name.endswith(CLAIM_SUFFIX):
        return name[3 : -len(CLAIM_SUFFIX)] or None
    return None


def checkpoint_plan(spec: Mapping[str, Any], rwx_class: str | None) -> ClaimPlan | None:
    """The claim `spec` gets with the deployment's RWX class `rwx_class`, or None for
    worker-local storage."""
    checkpoint = spec.get("checkpoint") or {}
    storage = checkpoint.get("storage", "auto")
    size = str(checkpoint.get("size") or "10Gi")
    chosen = checkpoint.get("storage_class") or rwx_class
    if storage == "pvc" or (storage == "auto" and chosen):
        return ClaimPlan(size=size, storage_class=chosen)
    return None


def local_storage_note(
    spec: Mapping[str, Any], rwx_class: str | None, node_path: str | None = None
) -> str | None:
    """The job event saying checkpoints stay worker-local, when `auto` found no class."""
    checkpoint = spec.get("checkpoint") or {}
    if checkpoint.get("storage", "auto") != "auto" or checkpoint_plan(spec, rwx_class):
        return None
    if node_path and keeps_node_checkpoints(spec, rwx_class, node_path, None):
        return (
            "checkpoints: no ReadWriteMany storage class is configured "
            f"(TRAINYARD_CHECKPOINT_STORAGE_CLASS), so they stay in {node_path} on worker "
            "0's node; a restart puts worker 0 back on that node when it has room, and "
            "starts from step 0 when it cannot"
        )
    return (
        "checkpoints: no ReadWriteMany storage class is configured "
        "(TRAINYARD_CHECKPOINT_STORAGE_CLASS), so they stay on worker 0's pod-local "
        "storage and a restart on other nodes starts from scratch"
    )


def keeps_node_checkpoints(
    spec: Mapping[str, Any],
    rwx_class: str | None,
    node_path: str | None,
    output_claim: str | None,
) -> bool:
    """Whether the job's checkpoints live on worker 0's node (a hostPath at `node_path`):
    a training job with checkpoint storage, no claim of its own and no deployment-wide
    output claim. Its restarts prefer worker 0's previous node."""
    if not node_path or output_claim or spec.get("kind", "training") != "training":
        return False
    if (spec.get("checkpoint") or {}).get("storage", "auto") == "none":
        return False
    return checkpoint_plan(spec, rwx_class) is None


def node_output_volume(node_path: str) -> dict[str, Any]:
    """The output root as the node's checkpoint directory (prepared by the deployment,
    writable by the workers' user: `Directory`, never created by the kubelet as root)."""
    return {"name": "output", "hostPath": {"path": node_path, "type": "Directory"}}


def claim_manifest(job_id: str, labels: Mapping[str, str], plan: ClaimPlan) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": [READ_WRITE_MANY],
        "resources": {"requests": {"storage": plan.size}},
    }
    if plan.storage_class:
        spec["storageClassName"] = plan.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": checkpoint_claim_name(job_id), "labels": dict(labels)},
        "spec": spec,
    }


def claim_names(spec: Mapping[str, Any]) -> list[str]:
    """The existing claims the job's volumes name, and the checkpoint claim of the
    training job a service serves (they must exist before it starts)."""
    names = [str(v["pvc"]) for v in spec.get("volumes") or () if v.get("pvc")]
    model = model_claim(spec)
    return [*names, model] if model else names


MODEL_ROOT = "/model"
"""Where a service's pods mount the checkpoint claim of the training job they serve."""


def model_claim(spec: Mapping[str, Any]) -> str | None:
    """The checkpoint claim a model service (`checkpoint_job`) reads its model from."""
    source = spec.get("checkpoint_job")
    if spec.get("kind") == "inference" and spec.get("mode") == "service" and source:
        return checkpoint_claim_name(str(source))
    return None


def model_dir(training_job_id: str) -> str:
    """The training job's checkpoint directory as its services' pods see it: its claim
    holds `<job>/checkpoint-*.pt` (the claim is mounted at the output root there)."""
    return f"{MODEL_ROOT}/{training_job_id}"


def model_volume(spec: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts) giving a model service its training job's checkpoint claim
    READ-ONLY: a service can never damage the checkpoints it serves."""
    claim = model_claim(spec)
    if claim is None:
        return [], []
    volume = {"name": "model", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
    return [volume], [{"name": "model", "mountPath": MODEL_ROOT, "readOnly": True}]


def _source(volume: Mapping[str, Any]) -> dict[str, Any]:
    if volume.get("pvc"):
        return {"persistentVolumeClaim": {"claimName": volume["pvc"]}}
    if volume.get("config_map"):
        return {"configMap": {"name": volume["config_map"]}}
    if volume.get("secret"):
        return {"secret": {"secretName": volume["secret"]}}
    if volume.get("host_path"):
        return {"hostPath": {"path": volume["host_path"], "type": "Directory"}}
    empty = volume.get("empty_dir") or {}
    source: dict[str, Any] = {}
    if empty.get("medium"):
        source["medium"] = empty["medium"]
    if empty.get("size"):
        source["sizeLimit"] = str(empty["size"])
    return {"emptyDir": source}


def user_volumes(spec: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pod volumes, container volumeMounts) of the job document's volumes and mounts."""
    volumes = [{"name": f"v-{v['name']}", **_source(v)} for v in spec.get("volumes") or ()]
    mounts = []
    for mount in spec.get("mounts") or ():
        entry: dict[str, Any] = {"name": f"v-{mount['volume']}", "mountPath": mount["path"]}
        if mount.get("read_only"):
            entry["readOnly"] = True
        mounts.append(entry)
    return volumes, mounts
