"""The test control plane is a real Kubernetes: validation, controllers, RBAC, watches.

Each test exercises behaviour a fake apiserver would not have: the apiserver's own
validation, the controller-manager's ReplicaSet/Deployment controllers, RBAC
decisions for a ServiceAccount token, and etcd compaction expiring a watch's
resourceVersion (410 Gone), from which a client must relist and watch again.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.integration.cluster.simcluster import HACK_DIR, Cluster, wait_until

pytestmark = pytest.mark.cluster

IMAGE = "registry.invalid/trainyard/sim:1"  # never pulled: kwok plays the kubelet


def container(**resources: dict[str, str]) -> client.V1Container:
    return client.V1Container(
        name="main", image=IMAGE, resources=client.V1ResourceRequirements(**resources)
    )


def pinned_k8s_version() -> str:
    text = (HACK_DIR / "versions.env").read_text()
    match = re.search(r"^K8S_VERSION=(\S+)$", text, re.MULTILINE)
    assert match, "versions.env names K8S_VERSION"
    return match.group(1)


def test_apiserver_reports_the_pinned_version(kube_cluster: Cluster) -> None:
    info = client.VersionApi(kube_cluster.api).get_code()
    assert info.git_version == pinned_k8s_version()


def test_pod_with_an_invalid_name_is_refused(kube_cluster: Cluster, namespace: str) -> None:
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="Bad_Name!"),
        spec=client.V1PodSpec(containers=[container()]),
    )
    with pytest.raises(ApiException) as refused:
        kube_cluster.core.create_namespaced_pod(namespace, pod)
    assert refused.value.status == 422
    causes = json.loads(refused.value.body)["details"]["causes"]
    assert any(cause["field"] == "metadata.name" for cause in causes), causes
    assert kube_cluster.core.list_namespaced_pod(namespace).items == []


@pytest.mark.parametrize(
    ("requests", "status", "says"),
    [
        # Not a quantity at all: the apiserver cannot even decode the Pod.
        ({"cpu": "lots"}, 400, "quantities must match the regular expression"),
        # A well-formed but negative quantity: refused by validation, naming the field.
        ({"memory": "-1Gi"}, 422, "spec.containers[0].resources.requests[memory]"),
    ],
)
def test_pod_with_an_invalid_quantity_is_refused(
    kube_cluster: Cluster, namespace: str, requests: dict[str, str], status: int, says: str
) -> None:
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="bad-quantity"),
        spec=client.V1PodSpec(containers=[container(requests=requests)]),
    )
    with pytest.raises(ApiException) as refused:
        kube_cluster.core.create_namespaced_pod(namespace, pod)
    assert refused.value.status == status
    assert says in refused.value.body
    assert kube_cluster.core.list_namespaced_pod(namespace).items == []


def bind(core: client.CoreV1Api, pod: client.V1Pod, node: str) -> None:
    """Bind `pod` to `node` through the Binding subresource, as Trainyard's operator does.

    The response body is not deserialised: the apiserver answers with a Status,
    which the generated client would try to read as a V1Binding.
    """
    core.create_namespaced_pod_binding(
        pod.metadata.name,
        pod.metadata.namespace,
        client.V1Binding(
            metadata=client.V1ObjectMeta(name=pod.metadata.name),
            target=client.V1ObjectReference(api_version="v1", kind="Node", name=node),
        ),
        _preload_content=False,
    )


def test_deployment_gets_its_pods_from_the_controller_manager(
    kube_cluster: Cluster, namespace: str
) -> None:
    """kube-scheduler is off by default, so the test binds the pods itself."""
    core, apps = kube_cluster.core, client.AppsV1Api(kube_cluster.api)
    labels = {"app": "web"}
    apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1DeploymentSpec(
                replicas=2,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(containers=[container()]),
                ),
            ),
        ),
    )

    def two_pods() -> list[client.V1Pod] | None:
        pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
        return pods if len(pods) == 2 else None

    pods = wait_until("the ReplicaSet controller to create 2 pods", two_pods)
    for pod in pods:
        assert [owner.kind for owner in pod.metadata.owner_references] == ["ReplicaSet"]
        try:
            bind(core, pod, "cpu-0")
        except ApiException as exc:
            # 409: already bound, which only happens when someone started kube-scheduler.
            if exc.status != 409:
                raise
    wait_until(
        "the Deployment to report 2 available replicas",
        lambda: (
            apps.read_namespaced_deployment_status("web", namespace).status.available_replicas == 2
        ),
    )


def service_account_client(admin: client.ApiClient, token: str) -> client.ApiClient:
    config = client.Configuration(host=admin.configuration.host)
    config.ssl_ca_cert = admin.configuration.ssl_ca_cert
    config.api_key = {"BearerToken": token}
    config.api_key_prefix = {"BearerToken": "Bearer"}
    return client.ApiClient(config)


def test_service_account_needs_a_role(kube_cluster: Cluster, namespace: str) -> None:
    core, rbac = kube_cluster.core, client.RbacAuthorizationV1Api(kube_cluster.api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    token = core.create_namespaced_service_account_token(
        "reader",
        namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
        ),
    ).status.token
    with service_account_client(kube_cluster.api, token) as reader_api:
        reader = client.CoreV1Api(reader_api)
        with pytest.raises(ApiException) as denied:
            reader.list_namespaced_pod(namespace)
        assert denied.value.status == 403
        assert f"system:serviceaccount:{namespace}:reader" in denied.value.body

        rbac.create_namespaced_role(
            namespace,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="pod-reader"),
                rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["list"])],
            ),
        )
        rbac.create_namespaced_role_binding(
            namespace,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="reader-reads-pods"),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name="pod-reader"
                ),
                subjects=[
                    client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)
                ],
            ),
        )

        def can_list() -> bool:
            try:
                reader.list_namespaced_pod(namespace)
            except ApiException as exc:
                if exc.status == 403:  # the authorizer has not seen the binding yet
                    return False
                raise
            return True

        wait_until("the RoleBinding to let the ServiceAccount list pods", can_list)
        # The Role grants list only: still no listing in another namespace.
        with pytest.raises(ApiException) as elsewhere:
            reader.list_namespaced_pod("default")
        assert elsewhere.value.status == 403


def pod_template(name: str) -> client.V1PodTemplate:
    return client.V1PodTemplate(
        metadata=client.V1ObjectMeta(name=name),
        template=client.V1PodTemplateSpec(spec=client.V1PodSpec(containers=[container()])),
    )


def watch_with_relist(
    core: client.CoreV1Api, namespace: str, resource_version: str, relists: list[str]
) -> Iterator[dict[str, Any]]:
    """Watch pod templates from `resource_version`, recovering from 410 Gone.

    The standard informer recovery: when the resourceVersion has been compacted
    away, list again (recording the new resourceVersion in `relists`), emit the
    listed objects as SYNC events, and watch on from the list's resourceVersion.
    """
    version = resource_version
    while True:
        try:
            for event in watch.Watch().stream(
                core.list_namespaced_pod_template,
                namespace,
                resource_version=version,
                timeout_seconds=5,
            ):
                version = event["object"].metadata.resource_version
                yield event
        except ApiException as exc:
            if exc.status != 410:
                raise
            listing = core.list_namespaced_pod_template(namespace)
            version = listing.metadata.resource_version
            relists.append(version)
            for item in listing.items:
                yield {"type": "SYNC", "object": item}


def test_watch_resumes_after_its_resource_version_expires(
    kube_cluster: Cluster, namespace: str
) -> None:
    """The apiserver compacts etcd every 10s and serves podtemplates without a watch
    cache (hack/cluster/up.sh), so an old resourceVersion expires within seconds."""
    core = kube_cluster.core
    core.create_namespaced_pod_template(namespace, pod_template("before"))
    stale = core.list_namespaced_pod_template(namespace).metadata.resource_version
    core.create_namespaced_pod_template(namespace, pod_template("meanwhile"))

    def stale_version_expired() -> bool:
        try:
            for _ in watch.Watch().stream(
                core.list_namespaced_pod_template,
                namespace,
                resource_version=stale,
                timeout_seconds=1,
            ):
                pass
        except ApiException as exc:
            return exc.status == 410
        return False

    wait_until("etcd compaction to expire the old resourceVersion", stale_version_expired, 180, 1)

    relists: list[str] = []
    events = watch_with_relist(core, namespace, stale, relists)
    synced = {next(events)["object"].metadata.name, next(events)["object"].metadata.name}
    assert synced == {"before", "meanwhile"}
    assert len(relists) == 1

    core.create_namespaced_pod_template(namespace, pod_template("after"))
    deadline = time.monotonic() + 120
    for event in events:
        if event["type"] == "ADDED" and event["object"].metadata.name == "after":
            break
        assert time.monotonic() < deadline, "no ADDED event for 'after' within 120s"
    assert len(relists) == 1, "the resumed watch delivered the new object without relisting"


def test_cluster_state_lives_under_dot_cluster(kube_cluster: Cluster) -> None:
    """kubectl and helm for scripts and tests sit next to the admin kubeconfig."""
    state = Path(__file__).resolve().parents[3] / ".cluster"
    for tool in ("kubectl", "helm"):
        assert (state / "bin" / tool).exists(), tool
