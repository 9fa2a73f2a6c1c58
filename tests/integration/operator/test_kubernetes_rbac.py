"""permissions.py is enough: the backend and its leader election work under a
ServiceAccount bound to exactly those rules, and fail without one of them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.integration.cluster.simcluster import KWOK_IMMEDIATE, SIM_DURATION, Cluster, wait_until
from tests.integration.operator.k8s_support import job_workers, make_gang, phases
from trainyard.operator.backend import LaunchError, WorkerPhase
from trainyard.operator.kubernetes import KubernetesBackend, KubernetesConfig, LeaseLeadership
from trainyard.operator.kubernetes.permissions import PERMISSIONS, Permission, policy_rules

pytestmark = pytest.mark.cluster


@contextmanager
def service_account(
    kube_cluster: Cluster, namespace: str, permissions: tuple[Permission, ...]
) -> Iterator[client.ApiClient]:
    """An ApiClient authenticated as a fresh ServiceAccount granted `permissions`."""
    core, rbac = kube_cluster.core, client.RbacAuthorizationV1Api(kube_cluster.api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="trainyard"))
    )
    subject = [client.RbacV1Subject(kind="ServiceAccount", name="trainyard", namespace=namespace)]
    cluster_name = f"trainyard-test-{namespace}"

    def rules(scope: str) -> list[dict]:
        chosen = [p for p in permissions if p.scope == scope]
        return [
            {"apiGroups": [p.api_group], "resources": [p.resource], "verbs": list(p.verbs)}
            for p in chosen
        ]

    rbac.create_cluster_role({"metadata": {"name": cluster_name}, "rules": rules("cluster")})
    rbac.create_cluster_role_binding(
        client.V1ClusterRoleBinding(
            metadata=client.V1ObjectMeta(name=cluster_name),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=cluster_name
            ),
            subjects=subject,
        )
    )
    rbac.create_namespaced_role(
        namespace, {"metadata": {"name": "trainyard"}, "rules": rules("namespace")}
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="trainyard"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="trainyard"
            ),
            subjects=subject,
        ),
    )
    token = core.create_namespaced_service_account_token(
        "trainyard",
        namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
        ),
    ).status.token
    configuration = client.Configuration(host=kube_cluster.api.configuration.host)
    configuration.ssl_ca_cert = kube_cluster.api.configuration.ssl_ca_cert
    configuration.api_key = {"BearerToken": token}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    api = client.ApiClient(configuration)

    def can_list_nodes() -> bool:
        try:
            client.CoreV1Api(api).list_node(limit=1)
        except ApiException as exc:
            if exc.status == 403:
                return False
            raise
        return True

    try:
        wait_until("the RBAC bindings to take effect", can_list_nodes)
        yield api
    finally:
        api.close()
        rbac.delete_cluster_role_binding(cluster_name)
        rbac.delete_cluster_role(cluster_name)


def test_the_listed_permissions_are_enough_for_launch_stop_and_leadership(
    kube_cluster: Cluster, namespace: str
) -> None:
    assert policy_rules("cluster") and policy_rules("namespace")
    with service_account(kube_cluster, namespace, PERMISSIONS) as api:
        backend = KubernetesBackend(api, KubernetesConfig(namespace=namespace))
        backend.start(lambda: None)
        try:
            backend.wait_synced(60)
            assert any(node.gpus for node in backend.nodes())
            gang = make_gang(
                backend,
                ("gpu-h100-0", "gpu-h100-1"),
                annotations={SIM_DURATION: "2", **KWOK_IMMEDIATE},
            )
            backend.launch(gang)
            wait_until(
                "the gang to succeed",
                lambda: phases(backend, gang.job_id) == [WorkerPhase.SUCCEEDED] * 2,
            )
            backend.events.flush()
            assert backend.events.posted >= 2 and backend.events.dropped == 0
            backend.stop(gang.job_id, grace_seconds=0, reason="done")
            wait_until("the pods to go", lambda: not job_workers(backend, gang.job_id))
            backend.stop(gang.job_id, grace_seconds=0, reason="done")  # deletes the Service
            assert backend.sweep_services(min_age=0) == []  # list is allowed, nothing left
        finally:
            backend.close()

        leadership = LeaseLeadership(
            api, namespace=namespace, lease_duration=4, renew_deadline=3, retry_period=1
        )
        leadership.start()
        try:
            wait_until("the ServiceAccount to lead", leadership.is_leader)
        finally:
            leadership.stop()


def test_without_the_binding_permission_launch_fails_and_leaves_nothing(
    kube_cluster: Cluster, namespace: str
) -> None:
    fewer = tuple(p for p in PERMISSIONS if p.resource != "pods/binding")
    with service_account(kube_cluster, namespace, fewer) as api:
        backend = KubernetesBackend(api, KubernetesConfig(namespace=namespace))
        backend.start(lambda: None)
        try:
            backend.wait_synced(60)
            gang = make_gang(backend, ("gpu-h100-0",))
            with pytest.raises(LaunchError) as refused:
                backend.launch(gang)
            assert "forbidden" in refused.value.reason
            assert not refused.value.permanent
            selector = f"trainyard.io/job-id={gang.job_id}"
            wait_until(
                "the unbound pod to be deleted",
                lambda: (
                    not kube_cluster.core.list_namespaced_pod(
                        namespace, label_selector=selector
                    ).items
                ),
            )
        finally:
            backend.close()
