"""Fixtures of the operator's integration tests: the Kubernetes test cluster's."""

from __future__ import annotations

from tests.integration.cluster.fixtures import (  # noqa: F401  (fixtures used by name)
    kube_cluster,
    namespace,
)
