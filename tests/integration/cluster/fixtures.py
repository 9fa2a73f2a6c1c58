"""Pytest fixtures for the Kubernetes test control plane (hack/cluster).

`make test` starts the cluster and exports KUBECONFIG; `kube_cluster` then just
uses it. Run alone (`pytest tests/integration/cluster`), it starts the cluster
itself and stops it at the end, unless it was already running. The tests skip only
when TRAINYARD_SKIP_CLUSTER=1 is set on purpose, and the run then says so loudly.

Other test packages use the same fixtures by importing them into their conftest.py:
``from tests.integration.cluster.fixtures import kube_cluster, namespace  # noqa: F401``
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.integration.cluster.simcluster import (
    DEFAULT_KUBECONFIG,
    Cluster,
    api_client,
    cluster_down,
    cluster_up,
    create_namespace,
    is_ready,
    wait_until,
)

SKIP_ENV = "TRAINYARD_SKIP_CLUSTER"
SKIP_MESSAGE = (
    f"!!! {SKIP_ENV}=1: the Kubernetes integration tests (hack/cluster) were SKIPPED on "
    "purpose; nothing about the operator against a real apiserver was tested !!!"
)


def skip_requested() -> bool:
    return os.environ.get(SKIP_ENV) == "1"


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[Cluster]:
    """The running test cluster: from $KUBECONFIG if set, else started here."""
    if skip_requested():
        print(f"\n{SKIP_MESSAGE}", file=sys.stderr)
        pytest.skip(SKIP_MESSAGE)
    kubeconfig_env = os.environ.get("KUBECONFIG")
    if kubeconfig_env:
        api = config.new_client_from_config()
        wait_until("the apiserver named by $KUBECONFIG to answer", lambda: is_ready(api), 60)
        yield Cluster(Path(kubeconfig_env), api, started_here=False)
        api.close()
        return
    already_up = DEFAULT_KUBECONFIG.exists() and is_ready(api_client(DEFAULT_KUBECONFIG))
    kubeconfig = cluster_up()
    api = api_client(kubeconfig)
    try:
        yield Cluster(kubeconfig, api, started_here=not already_up)
    finally:
        api.close()
        if not already_up:
            cluster_down()


@pytest.fixture
def namespace(kube_cluster: Cluster) -> Iterator[str]:
    """A fresh namespace per test (pods can be created in it at once); deleted after."""
    core = kube_cluster.core
    name = create_namespace(core)
    yield name
    core.delete_namespace(name, body=client.V1DeleteOptions(propagation_policy="Background"))
