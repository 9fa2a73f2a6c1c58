"""The chart against the real test cluster: dry run, install, RBAC, upgrade, uninstall.

The apiserver, controller-manager and their admission and RBAC are real; kwok plays the
kubelets, so a control-plane pod "Running" on a kwok node is as far as a pod gets (no
container starts). kube-scheduler is not part of the test cluster by default (Trainyard
binds its own pods), so the install test binds the chart's pod to a free CPU node
through the Binding API, as kube-scheduler would, unless a scheduler got there first.
The test cluster has no storage provisioner either; a PersistentVolume pre-bound to the
chart's claim stands in for one, and the real PV controller binds the two.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client, watch
from kubernetes import config as kube_config
from kubernetes.client.rest import ApiException

from tests.integration.cluster.simcluster import (
    KWOK_IMMEDIATE,
    KWOK_NODE_ANNOTATION,
    MERGE_PATCH,
    REPO_ROOT,
    SIM_DURATION,
    Cluster,
    create_namespace,
    wait_until,
)
from tests.integration.helm.backend_permissions import PERMISSIONS
from tests.integration.helm.charttool import (
    CHART_DIR,
    FIXTURES,
    CommandFailed,
    chart_copy,
    helm,
    kubectl,
    random_free_port,
    render_text,
    served,
    tool,
)
from trainyard.api.schemas import JobCreate
from trainyard.operator.kubernetes.names import service_name
from trainyard.operator.kubernetes.storage import checkpoint_claim_name

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ALL_NAMESPACES = "*"
RELEASE = "ty"
FULLNAME = f"{RELEASE}-trainyard"
EVERYTHING = FIXTURES / "values-everything.yaml"
INSTALL_SETS = ("store.sqlite.keepOnUninstall=false", "terminationGracePeriodSeconds=1")
"""The test's changes to the defaults: uninstall must leave nothing behind, and a pod
being replaced (upgrade) or removed (uninstall) is gone within a second instead of at
a random point of the 30 s grace (kwok deletes a terminating pod anywhere within it)."""
INSTALL_JSON = (f"podAnnotations={json.dumps(KWOK_IMMEDIATE)}",)
"""And its pods start as soon as they are bound (see KWOK_IMMEDIATE), as the tests here
are not about start-up latency."""


def install_flags() -> list[str]:
    """The `helm install`/`upgrade` flags for INSTALL_SETS and INSTALL_JSON."""
    flags = []
    for item in INSTALL_SETS:
        flags += ["--set", item]
    for item in INSTALL_JSON:
        flags += ["--set-json", item]
    return flags


def objects_of(manifest: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def restrict_pods(core: client.CoreV1Api, namespace: str) -> None:
    """Have the apiserver's PodSecurity admission enforce "restricted" in `namespace`.

    Then a pod that is not hardened (non-root, no privilege escalation, all capabilities
    dropped, seccomp RuntimeDefault, only safe volume types) is refused, and a Deployment
    whose template is not draws a warning, which the tests assert is absent.
    """
    labels = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn")}
    core.patch_namespace(namespace, {"metadata": {"labels": labels}}, _content_type=MERGE_PATCH)


def test_server_side_dry_run_accepts_every_object(
    prometheus_crds: list[str], kube_cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    chart = chart_copy(tmp_path, with_fixture_files=True)
    restrict_pods(kube_cluster.core, namespace)
    # The everything-on file runs the workers in a namespace of their own: a real one here.
    workers = create_namespace(kube_cluster.core, prefix="helm-workers")
    try:
        for values, sets in (((), ()), ((EVERYTHING,), (f"workers.namespace={workers}",))):
            manifest = render_text(chart=chart, values=values, sets=sets, namespace=namespace)
            objects = objects_of(manifest)
            result = kubectl("apply", "--dry-run=server", "-f", "-", stdin=manifest)
            accepted = result.stdout.strip().splitlines()
            assert len(accepted) == len(objects), result.stdout
            assert all(line.endswith("(server dry run)") for line in accepted), result.stdout
            assert "PodSecurity" not in result.stderr, result.stderr
            kinds = {o["kind"] for o in objects}
            if values:
                assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "Ingress",
                        "PodDisruptionBudget", "Role"} <= kinds  # fmt: skip
    finally:
        kube_cluster.core.delete_namespace(workers)


def test_server_side_dry_run_rejects_what_the_apiserver_would(
    prometheus_crds: list[str], namespace: str, tmp_path: Path
) -> None:
    """The dry run is a real check: a ServiceMonitor the CRD's schema forbids is refused."""
    chart = chart_copy(tmp_path, with_fixture_files=False)
    manifest = render_text(chart=chart, values=(EVERYTHING,), namespace=namespace)
    broken = [o for o in objects_of(manifest) if o["kind"] == "ServiceMonitor"]
    broken[0]["spec"]["endpoints"][0]["interval"] = "every minute"
    result = kubectl(
        "apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(broken[0]), check=False
    )
    assert result.returncode != 0
    assert "spec.endpoints[0].interval" in result.stderr, result.stderr


@dataclass
class Release:
    namespace: str
    service_account: str
    core: client.CoreV1Api


def control_plane_pods(core: client.CoreV1Api, namespace: str) -> list[client.V1Pod]:
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=control-plane"
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def free_cpu_node(core: client.CoreV1Api) -> str:
    """A Ready kwok node without taints or accelerators, for the control plane."""
    for node in core.list_node().items:
        allocatable = node.status.allocatable or {}
        ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
        if (
            ready
            and (node.metadata.annotations or {}).get(KWOK_NODE_ANNOTATION) == "fake"
            and not node.spec.taints
            and not node.spec.unschedulable
            and "nvidia.com/gpu" not in allocatable
            and "google.com/tpu" not in allocatable
        ):
            return node.metadata.name
    raise AssertionError("no untainted CPU-only kwok node")


def schedule(core: client.CoreV1Api, pod: client.V1Pod) -> None:
    """Bind `pod` to a free CPU node, as kube-scheduler would (it may have done so)."""
    if pod.spec.node_name:
        return
    body = client.V1Binding(
        metadata=client.V1ObjectMeta(name=pod.metadata.name),
        target=client.V1ObjectReference(kind="Node", name=free_cpu_node(core)),
    )
    try:
        # Raw response: the client cannot deserialise the Binding reply
        # (kubernetes-client/python #547).
        core.create_namespaced_pod_binding(
            pod.metadata.name, pod.metadata.namespace, body, _preload_content=False
        )
    except ApiException as exc:
        if exc.status != 409:  # 409: a scheduler bound it first
            raise


def running_pod(release: Release, *, not_uid: str | None = None) -> client.V1Pod:
    """Wait for the release's (new) control-plane pod, bind it, and wait until it runs."""
    core, ns = release.core, release.namespace

    def created() -> client.V1Pod | None:
        pods = [p for p in control_plane_pods(core, ns) if p.metadata.uid != not_uid]
        return pods[0] if len(pods) == 1 else None

    pod = wait_until("the control-plane pod to be created", created, timeout=120)
    schedule(core, pod)

    def running() -> client.V1Pod | None:
        current = core.read_namespaced_pod(pod.metadata.name, ns)
        return current if current.status.phase == "Running" else None

    return wait_until(f"pod {pod.metadata.name} to be Running", running, timeout=120)


@pytest.fixture(scope="module")
def release(kube_cluster: Cluster) -> Iterator[Release]:
    """The chart installed with its defaults into a fresh namespace; all removed after."""
    core = kube_cluster.core
    ns = create_namespace(core, prefix="helm")
    restrict_pods(core, ns)
    volume = f"{ns}-sqlite"
    core.create_persistent_volume(
        client.V1PersistentVolume(
            metadata=client.V1ObjectMeta(name=volume, labels={"trainyard.io/test": "helm"}),
            spec=client.V1PersistentVolumeSpec(
                capacity={"storage": "10Gi"},
                access_modes=["ReadWriteOnce"],
                persistent_volume_reclaim_policy="Retain",
                host_path=client.V1HostPathVolumeSource(path=f"/nonexistent/{volume}"),
                claim_ref=client.V1ObjectReference(namespace=ns, name=f"{FULLNAME}-data"),
            ),
        )
    )
    try:
        installed = helm("install", RELEASE, str(CHART_DIR), "--namespace", ns, *install_flags())
        assert "PodSecurity" not in installed.stderr, installed.stderr
        yield Release(namespace=ns, service_account=FULLNAME, core=core)
    finally:
        helm("uninstall", RELEASE, "--namespace", ns, "--wait", check=False)
        core.delete_namespace(ns, body=client.V1DeleteOptions(propagation_policy="Background"))
        core.delete_persistent_volume(volume)


def test_install_runs_the_control_plane_pod_on_a_kwok_node(release: Release) -> None:
    pod = running_pod(release)
    node = release.core.read_node(pod.spec.node_name)
    assert (node.metadata.annotations or {}).get(KWOK_NODE_ANNOTATION) == "fake"
    claim = release.core.read_namespaced_persistent_volume_claim(
        f"{FULLNAME}-data", release.namespace
    )
    assert claim.status.phase == "Bound"
    apps = client.AppsV1Api(release.core.api_client)
    wait_until(
        "the Deployment to report its replica available",
        lambda: (
            (
                apps.read_namespaced_deployment(
                    FULLNAME, release.namespace
                ).status.available_replicas
                or 0
            )
            == 1
        ),
        timeout=120,
    )
    assert pod.spec.service_account_name == release.service_account
    notes = helm("status", RELEASE, "--namespace", release.namespace).stdout
    assert f"get secret {FULLNAME} -o jsonpath='{{.data.admin-token}}'" in notes


def test_notes_first_job_is_a_valid_job_document(release: Release, tmp_path: Path) -> None:
    """The NOTES' first-job command, run as printed, writes a job the API accepts."""
    notes = helm("status", RELEASE, "--namespace", release.namespace).stdout
    lines = notes.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("printf "))
    command = "\n".join(lines[start : start + 2])
    subprocess.run(["bash", "-c", command], cwd=tmp_path, check=True)
    document = yaml.safe_load((tmp_path / "first-job.yaml").read_text())
    job = JobCreate.model_validate(document)
    assert job.queue == "default" and job.workers == 1


def test_notes_token_command_fetches_the_admin_token(release: Release) -> None:
    """The NOTES' `export TRAINYARD_TOKEN=...` line, run as printed (kubectl and base64
    on the PATH), yields the token the release's Secret holds."""
    notes = helm("status", RELEASE, "--namespace", release.namespace).stdout
    (line,) = [line.strip() for line in notes.splitlines() if "TRAINYARD_TOKEN=" in line]
    env = {**os.environ, "PATH": f"{tool('kubectl').parent}:{os.environ['PATH']}"}
    fetched = subprocess.run(
        ["bash", "-c", f'set -euo pipefail; {line}; printf %s "$TRAINYARD_TOKEN"'],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    secret = release.core.read_namespaced_secret(FULLNAME, release.namespace)
    assert fetched == base64.b64decode(secret.data["admin-token"]).decode()
    assert len(fetched) == 48


def test_notes_user_token_command_creates_an_expiring_token(
    release: Release, tmp_path: Path
) -> None:
    """The NOTES' per-user token command, run as the pod would run it, makes a token that
    expires (the safe default: a leaked user token stops working by itself)."""
    notes = helm("status", RELEASE, "--namespace", release.namespace).stdout
    (line,) = [line for line in notes.splitlines() if "trainyard token create" in line]
    exec_prefix = f"kubectl -n {release.namespace} exec deploy/{FULLNAME} -- "
    assert line.strip().startswith(exec_prefix), line
    argv = line.strip().removeprefix(exec_prefix).split()
    assert argv[0] == "trainyard"
    env = {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "PYTHONPATH")},
        "TRAINYARD_HOME": str(tmp_path / "home"),
    }
    cli = [sys.executable, "-c", "from trainyard.cli import main; main()"]
    created = subprocess.run(
        [*cli, *argv[1:]], env=env, capture_output=True, text=True, check=True
    )  # fmt: skip
    assert len(created.stdout.strip()) >= 32
    listed = subprocess.run(
        [*cli, "token", "list", "-o", "json"], env=env, capture_output=True, text=True, check=True
    )  # fmt: skip
    (token,) = json.loads(listed.stdout)
    assert token["user"] == "alice" and not token["admin"]
    assert token["expires_at"], "the NOTES' user token never expires"


def can_i(release: Release, verb: str, resource: str, namespace: str | None) -> str:
    """`kubectl auth can-i` as the chart's ServiceAccount: "yes" or "no"."""
    name, _, sub = resource.partition("/")
    argv = ["auth", "can-i", verb, name, f"--as=system:serviceaccount:{release.namespace}:"
            f"{release.service_account}"]  # fmt: skip
    if sub:
        argv.append(f"--subresource={sub}")
    if namespace == ALL_NAMESPACES:
        argv.append("--all-namespaces")
    elif namespace:
        argv += ["--namespace", namespace]
    return kubectl(*argv, check=False).stdout.strip()


def test_service_account_may_make_every_call_the_backend_makes(release: Release) -> None:
    refused = []
    for permission in PERMISSIONS:
        name, _, sub = permission.resource.partition("/")
        target = f"{name}.{permission.api_group}" if permission.api_group else name
        target += f"/{sub}" if sub else ""
        if permission.scope == "cluster":
            # nodes are cluster-scoped; pods are read in every namespace.
            places = [None] if name == "nodes" else [ALL_NAMESPACES, "default"]
        else:
            places = [release.namespace]  # the workers namespace (the release's by default)
        for verb in permission.verbs:
            for place in places:
                if can_i(release, verb, target, place) != "yes":
                    refused.append((verb, target, place))
    assert not refused, f"the chart's ServiceAccount may not: {refused}"


@pytest.mark.parametrize(
    ("verb", "resource", "where"),
    [
        ("get", "secrets", "release"),
        ("create", "pods", "default"),
        ("delete", "pods", "default"),
        ("create", "pods/binding", "default"),
        ("create", "services", "default"),
        ("create", "leases.coordination.k8s.io", "default"),
        ("get", "nodes", None),
        ("get", "secrets", "default"),
        ("list", "secrets", "kube-system"),
        ("update", "pods", "release"),
        ("patch", "pods", "release"),
        ("create", "pods/exec", "release"),
        ("update", "pods/status", "release"),
        ("get", "configmaps", "release"),
        ("create", "deployments.apps", "release"),
        ("create", "serviceaccounts/token", "release"),
        ("delete", "nodes", None),
        ("patch", "nodes", None),
        ("delete", "leases.coordination.k8s.io", "release"),
        ("bind", "clusterroles.rbac.authorization.k8s.io", None),
        ("impersonate", "serviceaccounts", "release"),
    ],
)
def test_service_account_may_do_nothing_else(
    release: Release, verb: str, resource: str, where: str | None
) -> None:
    namespace = release.namespace if where == "release" else where
    assert can_i(release, verb, resource, namespace) == "no"


def service_account_kubeconfig(release: Release, cluster: Cluster, path: Path) -> Path:
    """A kubeconfig that authenticates with a token of the chart's ServiceAccount only."""
    token = kubectl(
        "create", "token", release.service_account, "--namespace", release.namespace,
        "--duration=10m",
    ).stdout.strip()  # fmt: skip
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    (entry,) = admin["clusters"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [entry],
        "users": [{"name": "trainyard", "user": {"token": token}}],
        "contexts": [
            {"name": "trainyard", "context": {"cluster": entry["name"], "user": "trainyard"}}
        ],
        "current-context": "trainyard",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_control_plane_with_the_service_account_token_runs_a_job_end_to_end(
    release: Release, kube_cluster: Cluster, tmp_path: Path
) -> None:
    """The Kubernetes backend's smoke test, run with nothing but the chart's ServiceAccount.

    `trainyard serve --backend kubernetes`, out of cluster, with a kubeconfig holding only
    a token of the release's ServiceAccount and the release namespace as its workers
    namespace (where the chart's Role is): it must watch nodes and pods, take the leader
    Lease, create the job's checkpoint claim, headless Service and pods, bind them, post
    Events, see the job succeed, delete the Service, and have the retention sweep list
    and delete the claim. Every one of those calls is the backend's own code, so a call
    the chart does not grant fails this test (and is logged as forbidden).
    """
    core, ns = release.core, release.namespace
    kubeconfig = service_account_kubeconfig(release, kube_cluster, tmp_path / "sa-kubeconfig")
    sa_api = kube_config.new_client_from_config(config_file=str(kubeconfig))
    with pytest.raises(ApiException) as denied:
        client.CoreV1Api(sa_api).list_namespaced_secret(ns)
    assert denied.value.status == 403
    port = random_free_port()
    token = "helm-test-admin-token-0123456789abcdef"
    env = {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "PYTHONPATH")},
        "TRAINYARD_HOME": str(tmp_path / "home"),
        "TRAINYARD_ADMIN_TOKEN": token,
        "TRAINYARD_NAMESPACE": ns,
        "TRAINYARD_LOOP_PERIOD_SECONDS": "0.5",
        "TRAINYARD_STOP_GRACE_SECONDS": "2",
        "TRAINYARD_LEASE_TTL_SECONDS": "4",
        # Claims of finished jobs are deleted at the next sweep, a second later.
        "TRAINYARD_CHECKPOINT_RETENTION_SECONDS": "0",
        "TRAINYARD_RETENTION_SWEEP_SECONDS": "1",
    }
    argv = [sys.executable, "-c", "from trainyard.cli import main; main()", "serve",
            "--backend", "kubernetes", "--kubeconfig", str(kubeconfig),
            "--port", str(port)]  # fmt: skip
    log = tmp_path / "serve.log"

    def refused_calls() -> None:
        """Fail at once, with the log, when the apiserver refused one of our calls."""
        text = log.read_text()
        assert "forbidden" not in text.lower(), text[-3000:]

    job = {
        "name": "helm-smoke",
        "workers": 2,
        "resources": {"cpu": "1", "memory": "1Gi", "gpu": 1},
        "workload": {"builtin": "gpt", "args": {"steps": 10}},
        "checkpoint": {"storage": "pvc", "size": "1Gi", "storage_class": "nfs-rwx"},
        "annotations": {**KWOK_IMMEDIATE, SIM_DURATION: "3"},
    }
    with (
        served(argv, env, port, log) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as api,
    ):
        # Our admin token is accepted, so this is our server answering.
        nodes = api.get("/v1/cluster")
        assert nodes.status_code == 200, nodes.text
        assert free_cpu_node(core) in {n["name"] for n in nodes.json()["nodes"]}
        created = api.post("/v1/jobs", json=job)
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        selector = f"trainyard.io/job-id={job_id}"

        def job_state() -> dict[str, Any]:
            reply = api.get(f"/v1/jobs/{job_id}")
            assert reply.status_code == 200, reply.text
            return reply.json()

        def bound_pods() -> list[client.V1Pod] | None:
            refused_calls()
            found = core.list_namespaced_pod(ns, label_selector=selector).items
            bound = [p for p in found if p.spec.node_name]
            return bound if len(bound) == 2 else None

        pods = wait_until(f"job {job_id}'s two pods to be bound", bound_pods, timeout=180)
        assert {p.spec.scheduler_name for p in pods} == {"trainyard"}
        assert core.read_namespaced_service(service_name(job_id), ns).spec.cluster_ip == "None"
        claim = core.read_namespaced_persistent_volume_claim(checkpoint_claim_name(job_id), ns)
        assert claim.spec.storage_class_name == "nfs-rwx"
        lease = client.CoordinationV1Api(kube_cluster.api).read_namespaced_lease(
            "trainyard-scheduler", ns
        )
        assert lease.spec.holder_identity, "the control plane holds no leader Lease"

        def finished() -> dict[str, Any] | None:
            refused_calls()
            current = job_state()
            if current["state"] in ("FAILED", "CANCELLED"):
                raise AssertionError(f"job ended {current['state']}: {current.get('reason')}")
            return current if current["state"] == "SUCCEEDED" else None

        done = wait_until(f"job {job_id} to succeed", finished, timeout=180)
        assert done["reason"] == "all workers exited 0"
        transitions = [
            e["to_state"]
            for e in api.get(f"/v1/jobs/{job_id}/events").json()["data"]
            if e["from_state"] != e["to_state"]
        ]
        assert transitions == ["PENDING", "ADMITTED", "RUNNING", "SUCCEEDED"]
        scheduled = [
            e
            for e in core.list_namespaced_event(ns).items
            if e.reason == "Scheduled" and e.involved_object.name.startswith(job_id)
        ]
        assert len(scheduled) == 2

        def gone(read: Any, name: str) -> bool:
            try:
                found = read(name, ns)
            except ApiException as exc:
                if exc.status == 404:
                    return True
                raise
            return found.metadata.deletion_timestamp is not None

        wait_until(
            "the job's pods, Service and checkpoint claim to be deleted",
            lambda: (
                refused_calls() is None
                and not core.list_namespaced_pod(ns, label_selector=selector).items
                and gone(core.read_namespaced_service, service_name(job_id))
                and gone(
                    core.read_namespaced_persistent_volume_claim, checkpoint_claim_name(job_id)
                )
            ),
            timeout=120,
        )
        refused_calls()


def test_service_account_token_makes_each_call_of_the_backend(
    release: Release, kube_cluster: Cluster, tmp_path: Path
) -> None:
    """Every kind of call the backend makes, made with the ServiceAccount's own token.

    can-i asks the authorizer; this makes the requests themselves: the watches, a
    worker pod with schedulerName trainyard and its Binding, the headless Service, an
    Event and the leader Lease, in the workers namespace, and then shows that one more
    verb (patching the pod) is refused.
    """
    kubeconfig = service_account_kubeconfig(release, kube_cluster, tmp_path / "sa-kubeconfig")
    api = kube_config.new_client_from_config(config_file=str(kubeconfig))
    core, leases, ns = client.CoreV1Api(api), client.CoordinationV1Api(api), release.namespace
    for lister in (core.list_node, core.list_pod_for_all_namespaces):
        listed = lister(limit=1)
        # One watch request from the list's resourceVersion, ended by the apiserver.
        for _ in watch.Watch().stream(
            lister, resource_version=listed.metadata.resource_version, timeout_seconds=1
        ):
            break
    labels = {"app.kubernetes.io/managed-by": "trainyard", "trainyard.io/job-id": "helm-rbac"}
    core.create_namespaced_service(
        ns,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="ty-helm-rbac", labels=labels),
            spec=client.V1ServiceSpec(cluster_ip="None", selector=labels),
        ),
    )
    core.read_namespaced_service("ty-helm-rbac", ns)
    assert core.list_namespaced_service(ns, label_selector="trainyard.io/job-id=helm-rbac").items
    pod = core.create_namespaced_pod(ns, worker_pod("helm-rbac-worker-0", labels))
    core.read_namespaced_pod(pod.metadata.name, ns)
    core.create_namespaced_pod_binding(
        pod.metadata.name,
        ns,
        client.V1Binding(
            metadata=client.V1ObjectMeta(name=pod.metadata.name),
            target=client.V1ObjectReference(kind="Node", name=free_cpu_node(release.core)),
        ),
        _preload_content=False,  # kubernetes-client/python #547
    )
    assert core.read_namespaced_pod(pod.metadata.name, ns).spec.node_name
    core.create_namespaced_event(
        ns,
        client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{pod.metadata.name}."),
            involved_object=client.V1ObjectReference(
                kind="Pod", name=pod.metadata.name, namespace=ns, uid=pod.metadata.uid
            ),
            reason="Scheduled",
            message="helm chart RBAC test",
            type="Normal",
            source=client.V1EventSource(component="trainyard"),
        ),
    )
    lease = leases.create_namespaced_lease(
        ns,
        client.V1Lease(
            metadata=client.V1ObjectMeta(name="trainyard-helm-rbac"),
            spec=client.V1LeaseSpec(holder_identity="test", lease_duration_seconds=15),
        ),
    )
    lease = leases.read_namespaced_lease(lease.metadata.name, ns)
    lease.spec.holder_identity = "test-2"
    leases.replace_namespaced_lease(lease.metadata.name, ns, lease)
    with pytest.raises(ApiException) as denied:
        core.patch_namespaced_pod(
            pod.metadata.name, ns, {"metadata": {"labels": {"x": "y"}}}, _content_type=MERGE_PATCH
        )
    assert denied.value.status == 403
    core.delete_namespaced_pod(pod.metadata.name, ns, grace_period_seconds=0)
    core.delete_namespaced_service("ty-helm-rbac", ns)


def worker_pod(name: str, labels: dict[str, str]) -> client.V1Pod:
    """A worker pod as the backend makes one: our scheduler, non-root, hardened."""
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1PodSpec(
            scheduler_name="trainyard",
            restart_policy="Never",
            security_context=client.V1PodSecurityContext(
                run_as_non_root=True,
                run_as_user=10001,
                seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
            ),
            containers=[
                client.V1Container(
                    name="worker",
                    image="registry.invalid/trainyard/worker:1",  # never pulled: kwok
                    security_context=client.V1SecurityContext(
                        allow_privilege_escalation=False,
                        capabilities=client.V1Capabilities(drop=["ALL"]),
                    ),
                )
            ],
        ),
    )


def test_upgrade_applies_changed_values_and_keeps_the_admin_token(release: Release) -> None:
    core, ns = release.core, release.namespace
    before_token = core.read_namespaced_secret(FULLNAME, ns).data["admin-token"]
    before_pod = running_pod(release)
    queues = [{"name": "default", "policy": "backfill"}, {"name": "research", "policy": "fifo"}]
    args = ["upgrade", RELEASE, str(CHART_DIR), "--namespace", ns,
            "--set-json", f"scheduler.queues={json.dumps(queues)}"]  # fmt: skip
    helm(*args, *install_flags())
    config = core.read_namespaced_config_map(FULLNAME, ns).data
    assert json.loads(config["TRAINYARD_QUEUES"]) == queues
    assert core.read_namespaced_secret(FULLNAME, ns).data["admin-token"] == before_token
    assert len(base64.b64decode(before_token)) == 48
    # The config checksum rolls the pod: a new one replaces the old (Recreate, SQLite).
    after_pod = running_pod(release, not_uid=before_pod.metadata.uid)
    before_sum = before_pod.metadata.annotations["checksum/config"]
    assert after_pod.metadata.annotations["checksum/config"] != before_sum
    history = json.loads(helm("history", RELEASE, "--namespace", ns, "-o", "json").stdout)
    assert [h["status"] for h in history] == ["superseded", "deployed"]


def chart_without_allow_host_path(destination: Path) -> Path:
    """A copy of the chart as it was before `workers.allowHostPath` existed: an older
    chart version, for upgrading from to this one."""
    chart = chart_copy(destination, with_fixture_files=False)
    values = chart / "values.yaml"
    lines = values.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.strip() == "allowHostPath: false")
    assert lines[at - 1].strip().startswith("#")
    values.write_text("".join(lines[: at - 1] + lines[at + 1 :]))
    schema_path = chart / "values.schema.json"
    schema = json.loads(schema_path.read_text())
    workers = schema["properties"]["workers"]
    del workers["properties"]["allowHostPath"]
    workers["required"].remove("allowHostPath")
    schema_path.write_text(json.dumps(schema))
    deployment = chart / "templates" / "deployment.yaml"
    text = deployment.read_text()
    entry = (
        "            - name: TRAINYARD_ALLOW_HOST_PATH\n"
        "              value: {{ .Values.workers.allowHostPath | toString | quote }}\n"
    )
    assert entry in text
    deployment.write_text(text.replace(entry, ""))
    return chart


def readme_upgrade_flags() -> list[str]:
    """The flags of the README's upgrade command other than the --set it shows."""
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    upgrade = readme.split("**Upgrade.** `", 1)[1].split("`", 1)[0].split()
    assert upgrade[:5] == ["helm", "upgrade", "trainyard", "helm/trainyard", "-n"], upgrade
    flags = [arg for arg in upgrade[6:] if arg.startswith("--") and arg != "--set"]
    assert flags, upgrade
    return flags


def test_readme_upgrade_keeps_the_users_values_and_applies_new_defaults(
    kube_cluster: Cluster, tmp_path: Path
) -> None:
    """The README's upgrade command, from a chart version without a value this one adds:
    the values given at install stay, and the new value gets its default (plain
    --reuse-values would carry the old chart's values over and miss it)."""
    core = kube_cluster.core
    ns = create_namespace(core, prefix="helm-upgrade")
    old_chart = chart_without_allow_host_path(tmp_path / "old")
    try:
        helm("install", RELEASE, str(old_chart), "--namespace", ns, *install_flags(),
             "--set", "scheduler.loopPeriodSeconds=2")  # fmt: skip
        helm("upgrade", RELEASE, str(CHART_DIR), "--namespace", ns, *readme_upgrade_flags(),
             "--set", "image.tag=0.2.0")  # fmt: skip
        config = core.read_namespaced_config_map(FULLNAME, ns).data
        assert config["TRAINYARD_LOOP_PERIOD_SECONDS"] == "2", "the install's value was lost"
        apps = client.AppsV1Api(core.api_client)
        (main,) = apps.read_namespaced_deployment(FULLNAME, ns).spec.template.spec.containers
        assert main.image.endswith(":0.2.0")
        env = {e.name: e.value for e in main.env}
        assert env["TRAINYARD_ALLOW_HOST_PATH"] == "false"
    finally:
        helm("uninstall", RELEASE, "--namespace", ns, "--wait", check=False)
        core.delete_namespace(ns, body=client.V1DeleteOptions(propagation_policy="Background"))


def test_two_replicas_on_sqlite_are_refused_at_install(release: Release) -> None:
    with pytest.raises(CommandFailed) as failure:
        helm("install", "refused", str(CHART_DIR), "--namespace", release.namespace,
             "--set", "replicaCount=2")  # fmt: skip
    assert "replicaCount=2 with store.type=sqlite is refused" in failure.value.result.stderr
    assert helm("status", "refused", "--namespace", release.namespace, check=False).returncode != 0


def test_uninstall_leaves_nothing_behind(release: Release) -> None:
    """Runs last in this module: it removes the release the others used."""
    ns = release.namespace
    kinds = "all,configmaps,secrets,persistentvolumeclaims,serviceaccounts,poddisruptionbudgets,ingresses,roles,rolebindings"  # noqa: E501

    def leftovers() -> set[str]:
        selector = f"app.kubernetes.io/instance={RELEASE}"
        found = kubectl("get", kinds, "--namespace", ns, "-l", selector, "-o", "name").stdout
        return set(found.split())

    def ours_cluster_wide() -> set[str]:
        found = kubectl(
            "get", "clusterroles,clusterrolebindings", "-o", "name",
            "-l", f"app.kubernetes.io/instance={RELEASE}",
        ).stdout.split()  # fmt: skip
        return {name for name in found if name.endswith(f"/{ns}-{FULLNAME}")}

    # The same queries see every object the release made, so "none left" means something.
    installed = leftovers()
    for kind in ("deployment.apps", "service", "configmap", "secret", "serviceaccount",
                 "persistentvolumeclaim", "role.rbac.authorization.k8s.io",
                 "rolebinding.rbac.authorization.k8s.io"):  # fmt: skip
        assert any(name.startswith(f"{kind}/") for name in installed), (kind, installed)
    assert len(ours_cluster_wide()) == 2, ours_cluster_wide()
    helm("uninstall", RELEASE, "--namespace", ns, "--wait")
    wait_until("nothing of the release left in its namespace", lambda: not leftovers() or None, 120)
    assert not control_plane_pods(release.core, ns)
    assert not ours_cluster_wide()
    assert helm("status", RELEASE, "--namespace", ns, check=False).returncode != 0
