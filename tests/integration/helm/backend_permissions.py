"""What the Kubernetes backend calls on the apiserver: the list the chart is checked against.

The code's own list (trainyard/operator/kubernetes/permissions.py), so a change of a call
in the backend that is not granted by the chart fails the chart's tests.
"""

from __future__ import annotations

from trainyard.operator.kubernetes.permissions import PERMISSIONS, Permission, Scope, verbs

__all__ = ["PERMISSIONS", "Permission", "Scope", "permission_set"]


def permission_set(scope: Scope) -> set[tuple[str, str, str]]:
    """Every (group, resource, verb) the backend needs in `scope`, one triple each."""
    return verbs(scope)
