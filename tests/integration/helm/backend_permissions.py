"""What the Kubernetes backend calls on the apiserver: the list the chart is checked against.

A copy, kept in this one place, of PERMISSIONS in trainyard/operator/kubernetes/permissions.py
as the Kubernetes backend (issue 9) commits it on its branch (k8s, 8c72cce). When that
module is on main, this module should become
``from trainyard.operator.kubernetes.permissions import PERMISSIONS, Permission`` so the
chart is checked against the code itself.

The list differs from the draft in issue 9 item 5 where the code is more precise: no
`get` on nodes and no `patch` on events (the backend never makes those calls), and
`scope` says which rules need a ClusterRole (nodes, and every namespace's pods, because
other workloads' pods take capacity on the nodes Trainyard binds to) and which a Role in
the namespace the jobs run in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Scope = Literal["cluster", "namespace"]


@dataclass(frozen=True, slots=True)
class Permission:
    """One RBAC rule: `verbs` on `resource` of `api_group` ("" is the core group)."""

    api_group: str
    resource: str
    verbs: tuple[str, ...]
    scope: Scope


PERMISSIONS: tuple[Permission, ...] = (
    Permission("", "pods", ("list", "watch"), "cluster"),
    Permission("", "nodes", ("list", "watch"), "cluster"),
    Permission("", "pods", ("create", "get", "delete"), "namespace"),
    Permission("", "pods/binding", ("create",), "namespace"),
    Permission("", "services", ("create", "get", "delete", "list"), "namespace"),
    Permission("", "events", ("create",), "namespace"),
    Permission("coordination.k8s.io", "leases", ("get", "create", "update"), "namespace"),
)


def permission_set(scope: Scope) -> set[tuple[str, str, str]]:
    """Every (group, resource, verb) the backend needs in `scope`, one triple each."""
    return {
        (p.api_group, p.resource, verb) for p in PERMISSIONS if p.scope == scope for verb in p.verbs
    }
