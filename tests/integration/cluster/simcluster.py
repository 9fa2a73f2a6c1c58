"""Helpers for tests that run against the hack/cluster Kubernetes test control plane.

The cluster is real (etcd, kube-apiserver, kube-controller-manager built from their
Go modules); only the nodes and their kubelets are simulated, by kwok. These helpers
are what a test needs on top of the `kubernetes` client: start/stop the cluster,
wait on a condition with a deadline (never a bare sleep), create a throw-away
namespace, and break fake nodes on purpose for failure tests.

Import from other test packages as ``tests.integration.cluster.simcluster``.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

REPO_ROOT = Path(__file__).resolve().parents[3]
HACK_DIR = REPO_ROOT / "hack" / "cluster"
STATE_DIR = REPO_ROOT / ".cluster"
DEFAULT_KUBECONFIG = STATE_DIR / "kubeconfig"

# Pod annotations read by the kwok Stages in hack/cluster/kwok/stages.yaml.
SIM_DURATION = "sim.trainyard.io/duration"
"""Seconds after the pod starts running at which it turns Succeeded."""
SIM_FAIL_AFTER = "sim.trainyard.io/fail-after"
"""Seconds after the pod starts running at which it turns Failed (exit code 1)."""

KWOK_IMMEDIATE = {
    f"{stage}.stage.kwok.x-k8s.io/{knob}": "0s"
    for stage in ("pod-create", "pod-ready")
    for knob in ("delay", "jitter-delay")
} | {"pod-delete.stage.kwok.x-k8s.io/delay": "0s"}
"""Pod annotations that make the fake kubelet start a bound pod at once, instead of after
kwok's simulated container start (pod-create, then pod-ready: 1-5 s each, at random),
and delete a terminating one without the extra second (within its grace period still).
For tests in which start-up latency is not what is tested: it only waits. They also
make a gang's workers start together, so a short SIM_DURATION sees them all running."""

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_VALUE = "fake"
NODE_PROFILE_LABEL = "trainyard.io/node-profile"
RACK_LABEL = "trainyard.io/rack"
ZONE_LABEL = "topology.kubernetes.io/zone"

# kubernetes 37's patch_* methods default to JSON Patch (a list of operations);
# a dict body must name its patch type explicitly.
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"

T = TypeVar("T")


class ConditionTimeout(AssertionError):
    """A waited-for condition did not hold before its deadline."""


def wait_until(
    what: str,
    probe: Callable[[], T | None],
    timeout: float = 120.0,
    interval: float = 0.25,
) -> T:
    """Poll `probe` until it returns something truthy, and return that.

    Tests synchronise on conditions, not sleeps: the deadline is generous (the
    machine is a loaded 2-core box) and the failure names what was awaited and the
    last value seen, so a timeout is diagnosable from the test report alone.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise ConditionTimeout(
                f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}"
            )
        time.sleep(interval)


def run_script(name: str, env: dict[str, str] | None = None) -> None:
    """Run hack/cluster/<name> (an argument list, no shell), failing loudly."""
    subprocess.run([str(HACK_DIR / name)], check=True, cwd=REPO_ROOT, env=env)


def cluster_up(profile: str = "default") -> Path:
    """Start the test cluster (idempotent) and return its admin kubeconfig."""
    run_script("up.sh", env={**os.environ, "TRAINYARD_NODE_PROFILE": profile})
    return DEFAULT_KUBECONFIG


def cluster_down() -> None:
    """Stop every process of the test cluster."""
    run_script("down.sh")


def api_client(kubeconfig: Path | str) -> client.ApiClient:
    """An ApiClient for `kubeconfig`, independent of the process-wide default."""
    return config.new_client_from_config(config_file=str(kubeconfig))


def is_ready(api: client.ApiClient) -> bool:
    """True when the apiserver serves requests (GET /version succeeds)."""
    try:
        client.VersionApi(api).get_code()
    except (ApiException, urllib3.exceptions.HTTPError, OSError):
        return False
    return True


@dataclass(frozen=True)
class Cluster:
    """A running test cluster as the tests see it."""

    kubeconfig: Path
    api: client.ApiClient
    started_here: bool
    """True when this process started it (and so stops it at the end)."""

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)


def create_namespace(core: client.CoreV1Api, prefix: str = "t") -> str:
    """Create a uniquely named namespace and wait until pods can be created in it.

    The ServiceAccount admission plugin refuses pods until the namespace's
    `default` ServiceAccount exists, which the controller-manager creates shortly
    after the namespace; waiting for it here keeps that race out of every test.
    """
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))

    def default_sa() -> bool:
        try:
            core.read_namespaced_service_account("default", name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    wait_until(f"ServiceAccount default in namespace {name}", default_sa)
    return name


def node_ready_status(core: client.CoreV1Api, name: str) -> str | None:
    """The status ("True", "False", "Unknown") of node `name`'s Ready condition."""
    node = core.read_node(name)
    for condition in node.status.conditions or []:
        if condition.type == "Ready":
            return condition.status
    return None


def make_node_not_ready(core: client.CoreV1Api, name: str) -> None:
    """Make fake node `name` NotReady, as if its kubelet had died.

    Two steps, both needed: removing kwok's annotation makes kwok stop managing the
    node (no more heartbeats or lease renewals, so it cannot flip back), and
    writing Ready=False to the node status makes the failure visible at once
    instead of after the node-monitor grace period. The controller-manager's node
    lifecycle controller then reacts as in a real cluster (not-ready taints).
    """
    core.patch_node(
        name,
        {"metadata": {"annotations": {KWOK_NODE_ANNOTATION: None}}},
        _content_type=MERGE_PATCH,
    )
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    core.patch_node_status(
        name,
        {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "KubeletNotReady",
                        "message": "simulated by trainyard tests (make_node_not_ready)",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ]
            }
        },
        _content_type=STRATEGIC_MERGE_PATCH,
    )


def make_node_ready(core: client.CoreV1Api, name: str) -> None:
    """Hand node `name` back to kwok, which marks it Ready again."""
    core.patch_node(
        name,
        {"metadata": {"annotations": {KWOK_NODE_ANNOTATION: KWOK_NODE_VALUE}}},
        _content_type=MERGE_PATCH,
    )


def delete_node(core: client.CoreV1Api, name: str) -> client.V1Node:
    """Delete node `name`, as when a machine leaves the cluster; return what it was.

    Pods bound to it are left to the controller-manager's pod garbage collector,
    exactly as in a real cluster. Pass the returned Node to `recreate_node` to put
    the machine back.
    """
    node = core.read_node(name)
    core.delete_node(name)
    return node


def recreate_node(core: client.CoreV1Api, node: client.V1Node) -> None:
    """Create `node` again (same name, labels, capacity); kwok then marks it Ready."""
    core.create_node(
        client.V1Node(
            metadata=client.V1ObjectMeta(
                name=node.metadata.name,
                labels=node.metadata.labels,
                annotations={KWOK_NODE_ANNOTATION: KWOK_NODE_VALUE},
            ),
            spec=client.V1NodeSpec(taints=None),
            status=client.V1NodeStatus(
                capacity=node.status.capacity, allocatable=node.status.allocatable
            ),
        )
    )
