"""What the Kubernetes backend calls on the apiserver, as (API group, resource, verbs).

Kept in this one place for the chart's tests until the backend's own list
(trainyard/operator/kubernetes/permissions.py, issue 9) is on main; then this module
should re-export that list instead, so the chart is checked against the code itself.

Source: issue 9 item 5 ("pods (create, delete, get, list, watch), pods/binding (create),
services (create, delete, get, list), nodes (get, list, watch), leases, events (create,
patch)"). The issue gives no verbs for leases; these are the calls of the kubernetes
client's LeaseLock (kubernetes.leaderelection.resourcelock.leaselock: read_namespaced_lease,
create_namespaced_lease, replace_namespaced_lease), which the backend's leader election uses.
"""

from __future__ import annotations

BACKEND_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("", "pods", ("create", "delete", "get", "list", "watch")),
    ("", "pods/binding", ("create",)),
    ("", "services", ("create", "delete", "get", "list")),
    ("", "nodes", ("get", "list", "watch")),
    ("coordination.k8s.io", "leases", ("create", "get", "update")),
    ("", "events", ("create", "patch")),
)


def permission_set() -> set[tuple[str, str, str]]:
    """Every (group, resource, verb) the backend needs, one triple each."""
    return {(group, resource, verb) for group, resource, verbs in BACKEND_RULES for verb in verbs}
