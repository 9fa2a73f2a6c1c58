"""The Kubernetes backend's pure parts: pod/Service documents and what watches report.

No apiserver here (these are pure functions on JSON); the backend itself is tested
against the real test cluster in tests/integration/operator/test_kubernetes_backend.py.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from trainyard.operator.backend import GangLaunch, WorkerLaunch, WorkerPhase
from trainyard.operator.kubernetes.config import KubernetesConfig
from trainyard.operator.kubernetes.manifests import pod_manifest, service_manifest
from trainyard.operator.kubernetes.names import pod_name, service_name
from trainyard.operator.kubernetes.observe import (
    Usage,
    foreign_usage,
    node_record,
    pod_record,
    pod_request,
    scheduler_node,
    worker_status,
)
from trainyard.operator.kubernetes.permissions import PERMISSIONS, policy_rules, verbs
from trainyard.scheduler.types import TaintEffect

JOB = "0123456789abcdef0123456789abcdef"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def gang(gpus: int = 8, tpus: int = 0, workers: int = 2, **extra: Any) -> GangLaunch:
    return GangLaunch(
        job_id=JOB,
        attempt=3,
        name="llm",
        queue="research",
        owner="alice",
        workers=tuple(
            WorkerLaunch(
                index=i,
                node=f"node-{i}",
                argv=("torchrun", "--node_rank", str(i)),
                env={"MASTER_PORT": "29500", "NCCL_DEBUG": "INFO"},
                gpus=gpus,
                tpu_chips=tpus,
                cpu_millicores=4000,
                memory_bytes=16 * 2**30,
            )
            for i in range(workers)
        ),
        annotations={"sim.trainyard.io/duration": "5", "trainyard.io/node": "forged"},
        labels={"team": "nlp", "trainyard.io/job-id": "forged"},
        **extra,
    )


def test_names_are_valid_dns_labels_for_the_longest_index() -> None:
    assert DNS_LABEL.match(pod_name(JOB, 1023))
    assert DNS_1035.match(service_name(JOB))  # a Service name must start with a letter


def test_gpu_pod_has_requests_equal_limits_selector_tolerations_and_identity() -> None:
    labels = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "other": "x"}
    pod = pod_manifest(
        gang(), gang().workers[1], config=KubernetesConfig(), service_uid="u1", node_labels=labels
    )
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["name"] == f"{JOB}-worker-1"
    assert meta["labels"]["trainyard.io/job-id"] == JOB  # ours win over the job's labels
    assert meta["labels"]["trainyard.io/attempt"] == "3"
    assert meta["labels"]["trainyard.io/worker-index"] == "1"
    assert meta["labels"]["trainyard.io/queue"] == "research"
    assert meta["labels"]["team"] == "nlp"
    assert meta["annotations"]["sim.trainyard.io/duration"] == "5"
    assert meta["annotations"]["trainyard.io/node"] == "node-1"  # not the forged value
    assert meta["ownerReferences"][0]["kind"] == "Service"
    assert meta["ownerReferences"][0]["uid"] == "u1"
    assert spec["schedulerName"] == "trainyard"
    assert spec["subdomain"] == service_name(JOB)
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert spec["securityContext"]["runAsNonRoot"] is True
    (container,) = spec["containers"]
    assert container["command"] == ["torchrun", "--node_rank", "1"]
    resources = container["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "8"
    assert resources["requests"]["cpu"] == "4000m"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NCCL_DEBUG"] == "INFO"  # the job's env wins over the NCCL defaults
    assert env["NCCL_SOCKET_IFNAME"] == "eth0"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/dev/shm" in mounts
    shm = next(v for v in spec["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"


def test_tpu_workers_get_the_pjrt_environment() -> None:
    job = gang(gpus=0, tpus=4, workers=2)
    pod = pod_manifest(
        job,
        job.workers[1],
        config=KubernetesConfig(namespace="ml"),
        service_uid="u",
        node_labels={},
    )
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["TPU_WORKER_ID"] == "1"
    hosts = env["TPU_WORKER_HOSTNAMES"].split(",")
    assert hosts == [f"{JOB}-worker-{i}.ty-{JOB}.ml.svc.cluster.local" for i in range(2)]


def test_env_from_secret_becomes_a_secret_key_ref() -> None:
    job = gang(spec={"env_from_secret": {"HF_TOKEN": {"secret": "hf", "key": "token"}}})
    pod = pod_manifest(
        job, job.workers[0], config=KubernetesConfig(), service_uid="u", node_labels={}
    )
    env = pod["spec"]["containers"][0]["env"]
    (entry,) = [e for e in env if e["name"] == "HF_TOKEN"]
    assert entry == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}},
    }


def test_service_is_headless_and_publishes_unready_workers() -> None:
    service = service_manifest(gang())
    assert service["metadata"]["name"] == service_name(JOB)
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True


def raw_pod(
    name: str,
    node: str,
    phase: str,
    requests: dict[str, str],
    namespace: str = "other",
    **meta: Any,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": name, **meta},
        "spec": {
            "nodeName": node,
            "containers": [{"resources": {"requests": requests}}],
            "initContainers": [{"resources": {"requests": {"cpu": "8"}}}],
        },
        "status": {"phase": phase},
    }


def test_pod_request_is_the_larger_of_containers_and_init_containers() -> None:
    usage = pod_request(raw_pod("a", "n", "Running", {"cpu": "2", "nvidia.com/gpu": "1"})["spec"])
    assert usage.cpu_millicores == 8000  # the init container's 8 CPUs
    assert usage.gpus == 1


def test_foreign_usage_counts_bound_live_pods_of_others_only() -> None:
    ours = raw_pod(
        "ours",
        "n1",
        "Running",
        {"nvidia.com/gpu": "8"},
        namespace="ty",
        labels={
            "app.kubernetes.io/managed-by": "trainyard",
            "trainyard.io/job-id": JOB,
            "trainyard.io/attempt": "1",
            "trainyard.io/worker-index": "0",
        },
    )
    pods = [
        pod_record(raw_pod("web", "n1", "Running", {"nvidia.com/gpu": "2"}), "ty"),
        pod_record(raw_pod("done", "n1", "Succeeded", {"nvidia.com/gpu": "4"}), "ty"),
        pod_record(raw_pod("unbound", "", "Pending", {"nvidia.com/gpu": "4"}), "ty"),
        pod_record(ours, "ty"),
    ]
    used = foreign_usage(pods)
    assert used["n1"].gpus == 2


def raw_node(ready: str = "True", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "gpu-0", "labels": {"nvidia.com/gpu.product": "H100"}},
        "spec": spec,
        "status": {
            "allocatable": {"cpu": "207500m", "memory": "1800Gi", "nvidia.com/gpu": "8"},
            "conditions": [
                {
                    "type": "Ready",
                    "status": ready,
                    "reason": "KubeletNotReady",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        },
    }


def test_cordoned_node_gets_the_unschedulable_taint_and_not_ready_is_not_ready() -> None:
    node = scheduler_node(node_record(raw_node(unschedulable=True)), Usage(gpus=3))
    assert node.gpus == 8 and node.cpu_millicores == 207500 and node.used_gpus == 3
    assert [(t.key, t.effect) for t in node.taints] == [
        ("node.kubernetes.io/unschedulable", TaintEffect.NO_SCHEDULE)
    ]
    assert node.ready
    assert not scheduler_node(node_record(raw_node(ready="False")), Usage()).ready


def our_pod(phase: str, node: str = "gpu-0", **status: Any) -> dict[str, Any]:
    pod = raw_pod(
        f"{JOB}-worker-0",
        node,
        phase,
        {},
        namespace="ty",
        labels={
            "app.kubernetes.io/managed-by": "trainyard",
            "trainyard.io/job-id": JOB,
            "trainyard.io/attempt": "2",
            "trainyard.io/worker-index": "0",
        },
    )
    pod["status"].update(status)
    return pod


@pytest.mark.parametrize(
    ("ready", "now", "phase", "says"),
    [
        ("True", 10_000_000_000.0, WorkerPhase.STARTING, ""),
        ("False", 1767225600.0 + 30, WorkerPhase.STARTING, ""),  # within the 60 s grace
        ("False", 1767225600.0 + 61, WorkerPhase.FAILED, "node gpu-0 NotReady (KubeletNotReady)"),
    ],
)
def test_node_not_ready_past_its_grace_fails_the_worker(
    ready: str, now: float, phase: WorkerPhase, says: str
) -> None:
    nodes = {"gpu-0": node_record(raw_node(ready=ready))}
    status = worker_status(
        pod_record(our_pod("Pending"), "ty"),
        nodes,
        now=now,
        node_lost_grace=60,
        waiting_since=None,
        start_grace=300,
        stopping=False,
    )
    assert status.phase == phase
    assert says in status.message
    assert (status.job_id, status.attempt, status.index) == (JOB, 2, 0)


def test_worker_on_a_deleted_node_fails_naming_it() -> None:
    status = worker_status(
        pod_record(our_pod("Running"), "ty"),
        {},
        now=0,
        node_lost_grace=60,
        waiting_since=None,
        start_grace=300,
        stopping=False,
    )
    assert status.phase == WorkerPhase.FAILED
    assert status.message == "node gpu-0 was deleted"


def test_failed_pod_reports_exit_code_and_last_log_line() -> None:
    terminated = {"exitCode": 3, "reason": "Error", "message": "step 1\nCUDA error: out of memory"}
    raw = our_pod("Failed", containerStatuses=[{"state": {"terminated": terminated}}])
    record = pod_record(raw, "ty")
    status = worker_status(
        record,
        {"gpu-0": node_record(raw_node())},
        now=0,
        node_lost_grace=60,
        waiting_since=None,
        start_grace=300,
        stopping=False,
    )
    assert status.phase == WorkerPhase.FAILED
    assert status.exit_code == 3
    assert status.message == "exited 3 (Error): CUDA error: out of memory"
    assert record.log_tail.endswith("out of memory")


def test_invalid_image_fails_at_once_a_pull_backoff_after_the_start_grace() -> None:
    nodes = {"gpu-0": node_record(raw_node())}
    bad = our_pod(
        "Pending",
        containerStatuses=[
            {"state": {"waiting": {"reason": "InvalidImageName", "message": "bad ref"}}}
        ],
    )
    status = worker_status(
        pod_record(bad, "ty"),
        nodes,
        now=0,
        node_lost_grace=60,
        waiting_since=None,
        start_grace=300,
        stopping=False,
    )
    assert status.phase == WorkerPhase.FAILED and "InvalidImageName" in status.message
    pulling = our_pod(
        "Pending",
        containerStatuses=[
            {"state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}
        ],
    )
    record = pod_record(pulling, "ty")
    early = worker_status(
        record, nodes, now=100, node_lost_grace=60, waiting_since=0, start_grace=300, stopping=False
    )
    late = worker_status(
        record, nodes, now=301, node_lost_grace=60, waiting_since=0, start_grace=300, stopping=False
    )
    assert early.phase == WorkerPhase.STARTING
    assert late.phase == WorkerPhase.FAILED and "ImagePullBackOff" in late.message


def test_permissions_are_split_by_scope_and_name_each_verb_once() -> None:
    assert ("", "pods/binding", "create") in verbs("namespace")
    assert ("", "pods", "watch") in verbs("cluster")
    assert ("", "nodes", "get") not in verbs()  # the node cache lists and watches only
    triples = [(p.api_group, p.resource, v) for p in PERMISSIONS for v in p.verbs]
    assert len(triples) == len(set(triples))
    assert all(rule["verbs"] for rule in policy_rules("namespace") + policy_rules("cluster"))


def test_only_gangs_of_several_workers_get_a_service_and_an_owner() -> None:
    from trainyard.operator.kubernetes.manifests import needs_service

    single = gang(workers=1)
    assert not needs_service(single) and needs_service(gang(workers=2))
    pod = pod_manifest(
        single, single.workers[0], config=KubernetesConfig(), service_uid=None, node_labels={}
    )
    assert pod["metadata"]["ownerReferences"] == []
    assert pod["spec"]["subdomain"] == service_name(JOB)  # its own FQDN via /etc/hosts


def _service_gang(revision: int | None = None) -> GangLaunch:
    spec: dict[str, Any] = {"kind": "inference", "mode": "service", "port": 8080}
    if revision is not None:
        spec["revision"] = revision
    return gang(gpus=0, workers=1, spec=spec)


def test_a_service_replica_pod_carries_its_revision() -> None:
    service = _service_gang(revision=3)
    pod = pod_manifest(
        service, service.workers[0], config=KubernetesConfig(), service_uid="u", node_labels={}
    )
    assert pod["metadata"]["labels"]["trainyard.io/revision"] == "3"
    training = gang(workers=1)
    plain = pod_manifest(
        training, training.workers[0], config=KubernetesConfig(), service_uid=None, node_labels={}
    )
    assert "trainyard.io/revision" not in plain["metadata"]["labels"]


def _replica_pod(ready: str, ip: str | None, env: list[Any] | None = None) -> dict[str, Any]:
    pod = our_pod(
        "Running",
        containerStatuses=[{"state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}],
        conditions=[{"type": "Ready", "status": ready}],
    )
    if ip:
        pod["status"]["podIP"] = ip
    pod["spec"]["containers"] = [
        {"name": "worker", "ports": [{"name": "http", "containerPort": 8080}], "env": env or []}
    ]
    return pod


@pytest.mark.parametrize(
    ("ready", "ip", "env", "expected", "serves", "metrics"),
    [
        ("True", "10.0.0.7", [], True, "10.0.0.7:8080", "10.0.0.7:9400"),  # runtime default
        ("False", "10.0.0.7", [], False, "10.0.0.7:8080", "10.0.0.7:9400"),
        ("True", None, [], True, None, None),
        (
            "True",
            "10.0.0.7",
            [{"name": "TRAINYARD_METRICS_PORT", "value": "8080"}],  # one shared port
            True,
            "10.0.0.7:8080",
            "10.0.0.7:8080",
        ),
    ],
)
def test_a_replica_pod_reports_its_ready_condition_and_pod_ip_addresses(
    ready: str,
    ip: str | None,
    env: list[Any],
    expected: bool,
    serves: str | None,
    metrics: str | None,
) -> None:
    status = worker_status(
        pod_record(_replica_pod(ready, ip, env), "ty"),
        {"gpu-0": node_record(raw_node())},
        now=0,
        node_lost_grace=60,
        waiting_since=None,
        start_grace=300,
        stopping=False,
    )
    assert status.phase is WorkerPhase.RUNNING and status.ready is expected
    assert (status.serve_address, status.metrics_address) == (serves, metrics)


def test_a_training_pod_leaves_readiness_to_nobody() -> None:
    """No "http" port: not a replica, so no readiness verdict and no address."""
    status = worker_status(
        pod_record(our_pod("Running", podIP="10.0.0.7"), "ty"),
        {"gpu-0": node_record(raw_node())},
        now=0,
        node_lost_grace=60,
        waiting_since=None,
        start_grace=300,
        stopping=False,
    )
    assert status.ready is None and status.metrics_address is None
