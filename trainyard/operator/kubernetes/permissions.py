"""Exactly the Kubernetes API access the Kubernetes backend and its leader election use.

This is data, not documentation: the helm chart's RBAC is tested against it, and the
backend's integration tests run the backend under a ServiceAccount bound to these rules
and nothing else. Change a call in this package, change this list in the same commit.

Scope: `cluster` rules belong in a ClusterRole (nodes, and pods of every namespace,
because other workloads' pods take capacity on the nodes we bind to); `namespace`
rules in a Role of the namespace Trainyard runs its jobs in.

Where each verb is used:
- pods list, watch (cluster): the pod watch cache (list_pod_for_all_namespaces).
- pods create, get, delete: launch (create; get on a 409 to check the attempt and after
  a 409 from a bind), stop and abandoning a half-made gang (delete).
- pods/binding create: binding each worker to the node the core chose.
- services create, get, delete, list: the job's headless Service (create; get on 409),
  deleted once its pods are gone; list for the sweep of Services left by a crash.
- persistentvolumeclaims create, get, delete, list: the job's checkpoint claim (create;
  get on a 409 for its uid, and to see whether a claim a job's volumes name exists
  before admitting it), deleted by the retention sweep, which lists ours.
- nodes list, watch (cluster): the node watch cache.
- events create: "Scheduled" / "Preempted" / "Stopping" Events on our pods.
- leases get, create, update: leader election (kubernetes.leaderelection's LeaseLock
  reads, creates and replaces the Lease; releasing it on shutdown is an update too).
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
    Permission("", "persistentvolumeclaims", ("create", "get", "delete", "list"), "namespace"),
    Permission("", "events", ("create",), "namespace"),
    Permission("coordination.k8s.io", "leases", ("get", "create", "update"), "namespace"),
)


def policy_rules(scope: Scope) -> list[dict[str, list[str]]]:
    """The rules of one scope as RBAC PolicyRule documents (for a Role or ClusterRole)."""
    return [
        {"apiGroups": [p.api_group], "resources": [p.resource], "verbs": list(p.verbs)}
        for p in PERMISSIONS
        if p.scope == scope
    ]


def verbs(scope: Scope | None = None) -> set[tuple[str, str, str]]:
    """(api group, resource, verb) triples, of one scope or all."""
    return {
        (p.api_group, p.resource, verb)
        for p in PERMISSIONS
        if scope is None or p.scope == scope
        for verb in p.verbs
    }
