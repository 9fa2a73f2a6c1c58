"""The Kubernetes API calls Trainyard's code makes, read from the code itself.

permissions.py is a list someone keeps; this finds the calls. Every attribute in the
`trainyard` package named like a method of the kubernetes client's API classes
(`create_namespaced_pod`, `list_node`, ...) is a call of that method, and the client's
own generated code says which HTTP method and path it sends, hence which RBAC verb on
which resource it needs. A list method passed along uncalled (`list_call=core.list_node`)
feeds a watch cache (trainyard.operator.kubernetes.informer), so it needs `watch` too.
The leader election's Lease calls are made inside the client library's LeaseLock, which
trainyard.operator.kubernetes.leadership subclasses, so that module is read as well.
"""

from __future__ import annotations

import ast
import inspect
import re
from dataclasses import dataclass
from pathlib import Path

import kubernetes.client
from kubernetes.leaderelection.resourcelock import leaselock

PACKAGE = Path(__file__).resolve().parents[3] / "trainyard"
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


@dataclass(frozen=True, slots=True)
class Call:
    """One API call: `verb` on `resource` ("pods/binding" for a subresource) of `group`,
    in one namespace (`namespaced`) or across all of them / on a cluster-scoped object."""

    group: str
    resource: str
    verb: str
    namespaced: bool


def _api_methods(names: set[str]) -> dict[str, list[tuple[str, str]]]:
    """Client method name -> [(HTTP method, path)], for those of `names` that are methods
    of one or more of the client's generated API classes."""
    found: dict[str, list[tuple[str, str]]] = {}
    for name in dir(kubernetes.client):
        cls = getattr(kubernetes.client, name)
        if not (inspect.isclass(cls) and name.endswith("Api") and name != "ApiClient"):
            continue
        for attr in names:
            serialize = getattr(cls, f"_{attr}_serialize", None)
            if attr.startswith("_") or serialize is None:
                continue
            source = inspect.getsource(serialize)
            method = re.search(r"method='([A-Z]+)'", source)
            path = re.search(r"resource_path='([^']+)'", source)
            assert method and path, f"{name}.{attr}: no method or path in its serializer"
            found.setdefault(attr, []).append((method[1], path[1]))
    return found


def _calls_of(http_method: str, path: str) -> Call:
    parts = path.strip("/").split("/")
    if parts[0] == "api":  # /api/v1/...: the core group
        group, rest = "", parts[2:]
    else:  # /apis/GROUP/VERSION/...
        group, rest = parts[1], parts[3:]
    namespaced = len(rest) > 2 and rest[0] == "namespaces" and rest[1] == "{namespace}"
    if namespaced:
        rest = rest[2:]
    resource, named = rest[0], len(rest) > 1 and rest[1] == "{name}"
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    if http_method in _VERBS:
        verb = _VERBS[http_method]
    elif http_method == "GET":
        verb = "get" if named else "list"
    elif http_method == "DELETE":
        verb = "delete" if named else "deletecollection"
    else:
        raise AssertionError(f"{http_method} {path}: no RBAC verb for it")
    return Call(group, resource, verb, namespaced)


def _sources() -> list[tuple[str, str]]:
    sources = [(str(p.relative_to(PACKAGE.parent)), p.read_text()) for p in PACKAGE.rglob("*.py")]
    leadership = (PACKAGE / "operator" / "kubernetes" / "leadership.py").read_text()
    assert "import LeaseLock" in leadership, "leadership.py no longer uses the library's lock"
    sources.append((leaselock.__name__, inspect.getsource(leaselock)))
    return sources


def code_calls() -> dict[frozenset[Call], str]:
    """Every API call in the code -> the first file making it.

    A call is a set of alternatives: a method name several API classes share
    (`create_namespaced_event`: core and events.k8s.io) is any one of them, and a
    grant of one satisfies it.
    """
    trees = [(where, ast.parse(text)) for where, text in _sources()]
    names = {n.attr for _, tree in trees for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    methods = _api_methods(names)
    calls: dict[frozenset[Call], str] = {}
    for where, tree in trees:
        called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or node.attr not in methods:
                continue
            options = [_calls_of(http_method, path) for http_method, path in methods[node.attr]]
            calls.setdefault(frozenset(options), where)
            if id(node) not in called and all(c.verb == "list" for c in options):
                watch = frozenset(Call(c.group, c.resource, "watch", c.namespaced) for c in options)
                calls.setdefault(watch, where)
    return calls
