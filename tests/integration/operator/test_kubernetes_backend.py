"""The Kubernetes backend against the real test control plane (apiserver, etcd,
controller-manager; kwok plays the kubelets, driven by the sim.trainyard.io annotations).

Every test runs in a namespace of its own; the fake nodes are shared with the rest of
the suite, so capacity checks compare before/after on one node instead of absolutes.
"""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.integration.cluster.simcluster import (
    KWOK_IMMEDIATE,
    MERGE_PATCH,
    SIM_DURATION,
    SIM_FAIL_AFTER,
    Cluster,
    make_node_not_ready,
    make_node_ready,
    node_ready_status,
    wait_until,
)
from tests.integration.operator.k8s_support import (
    job_workers,
    make_gang,
    phases,
    running_backend,
)
from trainyard.operator.backend import LaunchError, WorkerPhase
from trainyard.operator.kubernetes import KubernetesBackend
from trainyard.operator.kubernetes.manifests import pod_manifest, service_manifest
from trainyard.operator.kubernetes.names import pod_name, service_name

pytestmark = pytest.mark.cluster

H100 = ("gpu-h100-0", "gpu-h100-1")


def pods_of(core: client.CoreV1Api, namespace: str, job_id: str) -> list[client.V1Pod]:
    selector = f"trainyard.io/job-id={job_id}"
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    return sorted(pods, key=lambda p: p.metadata.name)


def all_in(backend: KubernetesBackend, job_id: str, phase: WorkerPhase, count: int) -> bool:
    seen = phases(backend, job_id)
    return len(seen) == count and all(p == phase for p in seen)


def test_gang_is_bound_to_the_chosen_nodes_runs_and_succeeds(
    kube_cluster: Cluster, namespace: str
) -> None:
    core = kube_cluster.core
    with running_backend(kube_cluster.kubeconfig, namespace) as backend:
        # Both pods start once bound (KWOK_IMMEDIATE): 5 s is long enough to overlap.
        gang = make_gang(backend, H100, annotations={SIM_DURATION: "5", **KWOK_IMMEDIATE})
        backend.launch(gang)

        pods = pods_of(core, namespace, gang.job_id)
        assert [p.metadata.name for p in pods] == [pod_name(gang.job_id, i) for i in (0, 1)]
        assert [p.spec.node_name for p in pods] == list(H100)
        master = f"{pod_name(gang.job_id, 0)}.{service_name(gang.job_id)}.{namespace}.svc"
        for index, pod in enumerate(pods):
            (container,) = pod.spec.containers
            argv = container.command
            assert argv[0] == "torchrun"
            flags = dict(zip(argv[1:12:2], argv[2:13:2], strict=True))
            assert flags["--nnodes"] == "2"
            assert flags["--node_rank"] == str(index)
            assert flags["--nproc_per_node"] == "8"
            assert flags["--master_addr"].startswith(master)
            assert argv[argv.index("-m") + 1 :][:2] == ["trainyard.worker", "train"]
            env = {e.name: e.value for e in container.env}
            assert env["TRAINYARD_WORKER_INDEX"] == str(index)
            assert env["MASTER_ADDR"].startswith(master)
            assert container.resources.limits["nvidia.com/gpu"] == "8"
            assert pod.spec.scheduler_name == "trainyard"
            assert pod.metadata.annotations[SIM_DURATION] == "5"
            assert pod.metadata.labels["trainyard.io/attempt"] == "1"
            assert pod.metadata.owner_references[0].kind == "Service"
        service = core.read_namespaced_service(service_name(gang.job_id), namespace)
        assert service.spec.cluster_ip == "None"

        uids = [p.metadata.uid for p in pods]
        backend.launch(gang)  # repeated (a crash after launching): nothing new is made
        assert [p.metadata.uid for p in pods_of(core, namespace, gang.job_id)] == uids

        wait_until("both workers to run", lambda: all_in(backend, gang.job_id, "RUNNING", 2))
        wait_until(
            "both workers to succeed",
            lambda: all_in(backend, gang.job_id, WorkerPhase.SUCCEEDED, 2),
        )
        assert {w.node for w in job_workers(backend, gang.job_id)} == set(H100)
        assert all(w.exit_code == 0 for w in job_workers(backend, gang.job_id))

        backend.events.flush()
        events = core.list_namespaced_event(namespace).items
        scheduled = {e.involved_object.name: e.message for e in events if e.reason == "Scheduled"}
        assert set(scheduled) == {p.metadata.name for p in pods}
        assert f"to {H100[0]}" in scheduled[pod_name(gang.job_id, 0)]

        backend.stop(gang.job_id, grace_seconds=5, reason="finished")
        wait_until("the pods to be gone", lambda: not job_workers(backend, gang.job_id))
        backend.stop(gang.job_id, grace_seconds=5, reason="finished")  # and its Service

        def service_gone() -> bool:
            try:
                core.read_namespaced_service(service_name(gang.job_id), namespace)
            except ApiException as exc:
                return exc.status == 404
            return False

        wait_until("the Service to be deleted", service_gone)


def test_worker_with_fail_after_is_failed_with_its_exit_code(
    kube_cluster: Cluster, namespace: str
) -> None:
    with running_backend(kube_cluster.kubeconfig, namespace) as backend:
        gang = make_gang(
            backend, ("gpu-a100-0",), annotations={SIM_FAIL_AFTER: "1", **KWOK_IMMEDIATE}
        )
        backend.launch(gang)
        (failed,) = wait_until(
            "the worker to fail",
            lambda: [w for w in job_workers(backend, gang.job_id) if w.phase == "FAILED"],
        )
        assert failed.exit_code == 1
        assert failed.message.startswith("exited 1")
        assert failed.node == "gpu-a100-0"


def test_pod_the_apiserver_refuses_is_a_permanent_error_and_leaves_no_pod(
    kube_cluster: Cluster, namespace: str
) -> None:
    core = kube_cluster.core
    with running_backend(kube_cluster.kubeconfig, namespace) as backend:
        gang = make_gang(backend, H100, annotations={"bad key!": "x"})
        with pytest.raises(LaunchError) as refused:
            backend.launch(gang)
        assert refused.value.permanent
        assert "metadata.annotations" in refused.value.reason  # the apiserver's own words
        assert pods_of(core, namespace, gang.job_id) == []


def test_a_half_created_gang_is_deleted_when_one_worker_is_refused(
    kube_cluster: Cluster, namespace: str
) -> None:
    """Worker 1 asks for a negative CPU amount (which the apiserver refuses); worker 0 was
    created, and must not be left behind unbound or bound."""
    from dataclasses import replace

    core = kube_cluster.core
    with running_backend(kube_cluster.kubeconfig, namespace, launch_concurrency=1) as backend:
        good = make_gang(backend, H100)
        bad_worker = replace(good.workers[1], cpu_millicores=-1000)
        gang = replace(good, workers=(good.workers[0], bad_worker))
        with pytest.raises(LaunchError) as refused:
            backend.launch(gang)
        assert refused.value.permanent
        assert "resources.requests[cpu]" in refused.value.reason
        wait_until("no pod of the gang left", lambda: pods_of(core, namespace, gang.job_id) == [])


def test_launch_finishes_a_gang_left_unbound_by_a_crash(
    kube_cluster: Cluster, namespace: str
) -> None:
    """What a crash between create and bind leaves: the Service and unbound pods. The
    next launch binds them; it creates nothing new."""
    core = kube_cluster.core
    with running_backend(kube_cluster.kubeconfig, namespace) as backend:
        gang = make_gang(backend, H100, annotations={SIM_DURATION: "60", **KWOK_IMMEDIATE})
        service = core.create_namespaced_service(namespace, service_manifest(gang))
        for worker in gang.workers:
            body = pod_manifest(
                gang,
                worker,
                config=backend.config,
                service_uid=service.metadata.uid,
                node_labels={},
            )
            core.create_namespaced_pod(namespace, body)
        before = [p.metadata.uid for p in pods_of(core, namespace, gang.job_id)]
        assert [p.spec.node_name for p in pods_of(core, namespace, gang.job_id)] == [None, None]

        backend.launch(gang)
        after = pods_of(core, namespace, gang.job_id)
        assert [p.metadata.uid for p in after] == before
        assert [p.spec.node_name for p in after] == list(H100)
        wait_until("both workers to run", lambda: all_in(backend, gang.job_id, "RUNNING", 2))


def test_pods_of_an_older_attempt_are_a_conflict_until_stopped(
    kube_cluster: Cluster, namespace: str
) -> None:
    core = kube_cluster.core
    with running_backend(kube_cluster.kubeconfig, namespace) as backend:
        first = make_gang(backend, H100, annotations={SIM_DURATION: "600", **KWOK_IMMEDIATE})
        backend.launch(first)
        second = make_gang(
            backend, H100, job_id=first.job_id, attempt=2, annotations=KWOK_IMMEDIATE
        )
        with pytest.raises(LaunchError) as conflict:
            backend.launch(second)
        assert not conflict.value.permanent
        assert "attempt 1 still exists" in conflict.value.reason
        attempts = {
            p.metadata.labels["trainyard.io/attempt"]
            for p in pods_of(core, namespace, first.job_id)
        }
        assert attempts == {"1"}  # the older attempt's pods were not touched

        backend.stop(first.job_id, grace_seconds=1, reason="preempted by job x")
        assert all(w.stopping for w in job_workers(backend, first.job_id))
        wait_until("attempt 1 to be gone", lambda: pods_of(core, namespace, first.job_id) == [])
        wait_until("the cache to see it", lambda: not job_workers(backend, first.job_id))
        backend.launch(second)
        wait_until("attempt 2 to run", lambda: all_in(backend, first.job_id, "RUNNING", 2))
        assert {w.attempt for w in job_workers(backend, first.job_id)} == {2}
        backend.events.flush()
        preempted = [
            e for e in core.list_namespaced_event(namespace).items if e.reason == "Preempted"
        ]
        assert {e.involved_object.name for e in preempted} == {
            pod_name(first.job_id, 0),
            pod_name(first.job_id, 1),
        }
        assert preempted[0].message == "preempted by job x"


def test_a_pod_deleted_by_someone_else_is_a_failed_worker(
    kube_cluster: Cluster, namespace: str
) -> None:
    core = kube_cluster.core
    with running_backend(kube_cluster.kubeconfig, namespace) as backend:
        gang = make_gang(backend, H100, annotations={SIM_DURATION: "600", **KWOK_IMMEDIATE})
        backend.launch(gang)
        wait_until("both workers to run", lambda: all_in(backend, gang.job_id, "RUNNING", 2))
        core.delete_namespaced_pod(pod_name(gang.job_id, 1), namespace, grace_period_seconds=0)
        lost = wait_until(
            "worker 1 to be reported failed",
            lambda: [w for w in job_workers(backend, gang.job_id) if w.phase == "FAILED"],
        )
        assert [w.index for w in lost] == [1]
        assert "deleted outside Trainyard" in lost[0].message
        backend.stop(gang.job_id, grace_seconds=0, reason="gang failed")
        wait_until("the gang to be gone", lambda: not job_workers(backend, gang.job_id))


def test_other_workloads_pods_take_gpus_from_the_node(
    kube_cluster: Cluster, namespace: str
) -> None:
    core, apps = kube_cluster.core, client.AppsV1Api(kube_cluster.api)
    node = "gpu-a100-1"
    with running_backend(kube_cluster.kubeconfig, namespace) as backend:

        def used() -> int:
            return next(n.used_gpus for n in backend.nodes() if n.name == node)

        before = used()
        labels = {"app": "inference"}
        apps.create_namespaced_deployment(
            namespace,
            client.V1Deployment(
                metadata=client.V1ObjectMeta(name="inference"),
                spec=client.V1DeploymentSpec(
                    replicas=1,
                    selector=client.V1LabelSelector(match_labels=labels),
                    template=client.V1PodTemplateSpec(
                        metadata=client.V1ObjectMeta(labels=labels),
                        # Its pod goes at once when it is deleted, not after up
                        # to 30 s of kwok's termination grace: the freed GPUs matter.
                        spec=client.V1PodSpec(
                            termination_grace_period_seconds=0,
                            containers=[
                                client.V1Container(
                                    name="serve",
                                    image="registry.invalid/serve:1",
                                    resources=client.V1ResourceRequirements(
                                        limits={"nvidia.com/gpu": "3"}
                                    ),
                                )
                            ],
                        ),
                    ),
                ),
            ),
        )
        (pod,) = wait_until(
            "the Deployment's pod",
            lambda: core.list_namespaced_pod(namespace, label_selector="app=inference").items,
        )
        core.create_namespaced_pod_binding(
            pod.metadata.name,
            namespace,
            client.V1Binding(
                metadata=client.V1ObjectMeta(name=pod.metadata.name),
                target=client.V1ObjectReference(api_version="v1", kind="Node", name=node),
            ),
            _preload_content=False,
        )
        wait_until("nodes() to count the Deployment's 3 GPUs", lambda: used() == before + 3)

        # Our own pods are not counted here: the loop counts them from its store.
        gang = make_gang(
            backend, (node,), gpus=4, annotations={SIM_DURATION: "600", **KWOK_IMMEDIATE}
        )
        backend.launch(gang)
        wait_until("our worker to run", lambda: all_in(backend, gang.job_id, "RUNNING", 1))
        assert used() == before + 3

        apps.delete_namespaced_deployment("inference", namespace)
        wait_until("the GPUs to come back", lambda: used() == before, 120)


def test_node_not_ready_past_the_grace_fails_its_workers(
    kube_cluster: Cluster, namespace: str
) -> None:
    core = kube_cluster.core
    node = "cpu-1"
    with running_backend(kube_cluster.kubeconfig, namespace, node_lost_grace=3) as backend:
        gang = make_gang(
            backend, (node,), gpus=0, annotations={SIM_DURATION: "600", **KWOK_IMMEDIATE}
        )
        backend.launch(gang)
        wait_until("the worker to run", lambda: all_in(backend, gang.job_id, "RUNNING", 1))
        make_node_not_ready(core, node)
        try:
            (failed,) = wait_until(
                "the worker to fail once the grace is over",
                lambda: [w for w in job_workers(backend, gang.job_id) if w.phase == "FAILED"],
                60,
            )
            assert failed.message.startswith(f"node {node} NotReady")
            assert not next(n for n in backend.nodes() if n.name == node).ready
        finally:
            make_node_ready(core, node)
            backend.stop(gang.job_id, grace_seconds=0, reason="node lost")
        wait_until("the node to be Ready again", lambda: node_ready_status(core, node) == "True")


def test_watch_recovers_from_410_without_losing_a_phase_change(
    kube_cluster: Cluster, namespace: str
) -> None:
    """The pod watch is cut off, a pod changes phase meanwhile, and the watch resumes
    from a resourceVersion etcd has long compacted: the apiserver answers 410 Gone, the
    cache lists again, and the change is there."""
    core = kube_cluster.core
    with running_backend(kube_cluster.kubeconfig, namespace) as backend:
        gang = make_gang(backend, ("gpu-h100-2",), annotations={SIM_DURATION: "2"})
        backend.launch(gang)
        wait_until("the worker to start", lambda: phases(backend, gang.job_id) != [])
        cache = backend.pod_cache
        cache.stop()
        gone_before, lists_before = cache.gone, cache.relists
        wait_until(
            "the pod to succeed (seen directly, not by the stopped watch)",
            lambda: pods_of(core, namespace, gang.job_id)[0].status.phase == "Succeeded",
        )
        assert phases(backend, gang.job_id) != [WorkerPhase.SUCCEEDED]
        cache.start(resume_from="1")
        wait_until("the cache to relist", lambda: cache.relists > lists_before)
        assert cache.gone == gone_before + 1
        assert phases(backend, gang.job_id) == [WorkerPhase.SUCCEEDED]


def test_a_cordoned_node_carries_the_unschedulable_taint(
    kube_cluster: Cluster, namespace: str
) -> None:
    core = kube_cluster.core
    node = "cpu-0"
    with running_backend(kube_cluster.kubeconfig, namespace) as backend:
        core.patch_node(node, {"spec": {"unschedulable": True}}, _content_type=MERGE_PATCH)
        try:
            wait_until(
                "nodes() to show the cordon",
                lambda: any(
                    t.key == "node.kubernetes.io/unschedulable"
                    for n in backend.nodes()
                    if n.name == node
                    for t in n.taints
                ),
            )
        finally:
            core.patch_node(node, {"spec": {"unschedulable": False}}, _content_type=MERGE_PATCH)


def test_events_name_the_node(kube_cluster: Cluster, namespace: str) -> None:
    """`kubectl describe pod` explains placement: a Scheduled event from trainyard."""
    core = kube_cluster.core
    with running_backend(kube_cluster.kubeconfig, namespace) as backend:
        gang = make_gang(backend, ("gpu-h100-3",))
        backend.launch(gang)
        backend.events.flush()
        (event,) = [
            e for e in core.list_namespaced_event(namespace).items if e.reason == "Scheduled"
        ]
        assert event.source.component == "trainyard"
        assert json.dumps(event.message).count("gpu-h100-3") == 1


def test_launches_and_stops_reuse_the_clients_connections(
    kube_cluster: Cluster, namespace: str
) -> None:
    """Every raw reply is read, so its connection goes back to the pool: an unread Binding
    or Event reply once made the next request open a new TLS connection (a client
    certificate handshake on both sides), which was most of the client's CPU per pod."""
    with running_backend(kube_cluster.kubeconfig, namespace, launch_concurrency=1) as backend:
        gangs = [
            make_gang(backend, ("gpu-h100-0",), gpus=1, annotations={SIM_DURATION: "60"})
            for _ in range(6)
        ]
        for gang in gangs:
            backend.launch(gang)
        backend.events.flush()
        for gang in gangs:
            backend.stop(gang.job_id, grace_seconds=0, reason="test")
        pools = backend._core.api_client.rest_client.pool_manager.pools
        (pool,) = [pools[key] for key in list(pools.keys())]
        # 6 creates, 6 bindings, 6 events, 6 deletes (at least), on the connections of
        # the two watches, one launch thread, the events thread and the caller.
        assert pool.num_requests >= 24
        assert pool.num_connections <= 6, (pool.num_connections, pool.num_requests)
