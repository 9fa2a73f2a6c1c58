"""Fixtures for the chart's tests: the shared test cluster, and the Prometheus CRDs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.cluster.fixtures import (  # noqa: F401  (fixtures used by name)
    kube_cluster,
    namespace,
)
from tests.integration.cluster.simcluster import wait_until
from tests.integration.helm.charttool import PROMETHEUS_CRDS_SCRIPT, kubectl, run

MONITORING_CRDS = ("servicemonitors", "podmonitors", "prometheusrules")


@pytest.fixture(scope="session")
def prometheus_crds(request: pytest.FixtureRequest) -> list[str]:
    """Install the Prometheus Operator's ServiceMonitor, PodMonitor and PrometheusRule CRDs.

    Generated from the operator's Go API types by hack/helm/prometheus-crds.sh (cached
    after the first run). They are applied server-side, which is idempotent, and left
    installed: CRDs are cluster-wide, and removing them under another test that uses
    them would break it; re-applying identical definitions changes nothing.
    """
    request.getfixturevalue("kube_cluster")  # the cluster must be up (or started) first
    crd_dir = Path(run([str(PROMETHEUS_CRDS_SCRIPT)], timeout=1200).stdout.strip())
    names = []
    for plural in MONITORING_CRDS:
        path = crd_dir / f"monitoring.coreos.com_{plural}.yaml"
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
        names.append(f"{plural}.monitoring.coreos.com")
    for name in names:
        wait_until(
            f"CRD {name} to be Established",
            lambda name=name: (
                kubectl(
                    "get",
                    "crd",
                    name,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type=='Established')].status}",
                ).stdout
                == "True"
            ),
            timeout=60,
        )
    return names
