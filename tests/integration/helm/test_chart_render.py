"""The chart as Helm renders it: lint, refusals, hardening, RBAC, settings, docs.

These run helm (the binary hack/cluster builds) but need no cluster; what the
apiserver thinks of the objects is in test_chart_cluster.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.cluster.simcluster import REPO_ROOT
from tests.integration.helm.backend_calls import Call, code_calls
from tests.integration.helm.backend_permissions import permission_set
from tests.integration.helm.charttool import (
    CHART_DIR,
    FIXTURES,
    CommandFailed,
    by_kind,
    chart_copy,
    helm,
    one,
    render,
)
from trainyard.config import Settings
from trainyard.operator.config import scheduler_config
from trainyard.scheduler.policies import live_policy_names

EVERYTHING = FIXTURES / "values-everything.yaml"

STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)


def write_values(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def refusal(tmp_path: Path, values: dict[str, Any]) -> str:
    """helm template's error output for `values`, which it must refuse."""
    with pytest.raises(CommandFailed) as failure:
        render(values=[write_values(tmp_path, values)])
    return failure.value.result.stderr


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (only,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return only


@pytest.fixture(scope="module")
def everything_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the chart with the test dashboard and rules file added."""
    return chart_copy(tmp_path_factory.mktemp("chart"), with_fixture_files=True)


def test_helm_lint_is_clean_with_defaults_and_with_everything_on(everything_chart: Path) -> None:
    for argv in (
        ["lint", "--strict", str(CHART_DIR)],
        ["lint", "--strict", str(everything_chart), "--values", str(EVERYTHING)],
    ):
        result = helm(*argv)
        assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout
        assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_defaults_are_one_hardened_replica_on_sqlite() -> None:
    objects = render()
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        ["ServiceAccount", "Secret", "ConfigMap", "PersistentVolumeClaim", "ClusterRole",
         "ClusterRoleBinding", "Role", "RoleBinding", "Service", "Deployment"]
    )  # fmt: skip
    for obj in objects:
        labels = obj["metadata"]["labels"]
        missing = [key for key in STANDARD_LABELS if key not in labels]
        assert not missing, f"{obj['kind']} lacks {missing}"
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    main = container(objects)
    hardening = main["securityContext"]
    assert hardening["allowPrivilegeEscalation"] is False
    assert hardening["readOnlyRootFilesystem"] is True
    assert hardening["capabilities"] == {"drop": ["ALL"]}
    assert hardening["seccompProfile"] == {"type": "RuntimeDefault"}
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["resources"]["requests"] == {"cpu": "250m", "memory": "256Mi"}
    assert main["resources"]["limits"] == {"memory": "1Gi"}
    plain_env = {e["name"]: e.get("value") for e in main["env"]}
    assert plain_env["TRAINYARD_ALLOW_HOST_PATH"] == "false", "host paths are off by default"
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = one(objects, "PersistentVolumeClaim")
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    # The ServiceAccount token reaches only the control plane's pods.
    assert one(objects, "ServiceAccount")["automountServiceAccountToken"] is False
    assert pod["automountServiceAccountToken"] is True


def test_everything_on_renders_every_optional_object(everything_chart: Path) -> None:
    objects = render(chart=everything_chart, values=[EVERYTHING])
    for obj in objects:
        missing = [key for key in STANDARD_LABELS if key not in obj["metadata"]["labels"]]
        assert not missing, f"{obj['kind']} {obj['metadata']['name']} lacks {missing}"
    for kind in (
        "PodDisruptionBudget",
        "Ingress",
        "ServiceMonitor",
        "PodMonitor",
        "PrometheusRule",
    ):
        one(objects, kind)
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "persistentVolumeClaim" not in str(deployment)
    assert not by_kind(objects, "PersistentVolumeClaim")
    env = {e["name"]: e for e in container(objects)["env"]}
    assert env["TRAINYARD_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "database-url"
    assert env["TRAINYARD_NAMESPACE"]["value"] == "trainyard-workers"
    assert env["TRAINYARD_WORKER_IMAGE"]["value"] == "registry.example/trainyard-worker:2"
    assert container(objects)["image"].endswith("@sha256:" + "0123456789abcdef" * 4)
    # A whole Affinity passes the schema and reaches the pod as given (the dry run in
    # test_chart_cluster.py has the apiserver check it).
    pod = deployment["spec"]["template"]["spec"]
    assert pod["affinity"] == yaml.safe_load(EVERYTHING.read_text())["affinity"]
    dashboards = [
        o for o in by_kind(objects, "ConfigMap") if "grafana_dashboard" in o["metadata"]["labels"]
    ]
    assert dashboards, "no dashboard ConfigMap"
    for board in dashboards:
        assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((key, text),) = board["data"].items()
        assert key.endswith(".json") and json.loads(text)["title"]
    rule_text = yaml.safe_dump(one(objects, "PrometheusRule")["spec"])
    # Rule files are data, not templates: Prometheus's own templating reaches it untouched.
    assert "{{ $labels.instance }}" in rule_text
    assert one(objects, "PodMonitor")["spec"]["namespaceSelector"] == {
        "matchNames": ["trainyard-workers"]
    }


def test_monitoring_objects_need_their_files_and_render_nothing_without(tmp_path: Path) -> None:
    bare = chart_copy(tmp_path, with_fixture_files=False)
    objects = render(chart=bare, values=[EVERYTHING])
    assert not by_kind(objects, "PrometheusRule")
    assert not [
        o for o in by_kind(objects, "ConfigMap") if "grafana_dashboard" in o["metadata"]["labels"]
    ]
    one(objects, "ServiceMonitor")  # these need no files
    one(objects, "PodMonitor")


def test_two_replicas_on_sqlite_are_refused(tmp_path: Path) -> None:
    stderr = refusal(tmp_path, {"replicaCount": 2})
    assert "replicaCount=2 with store.type=sqlite is refused" in stderr


def test_an_existing_service_account_must_be_named(tmp_path: Path) -> None:
    """Never the namespace's `default` ServiceAccount: the roles would go to every pod
    that runs without one of its own."""
    stderr = refusal(tmp_path, {"serviceAccount": {"create": False}})
    assert "serviceAccount.create=false needs serviceAccount.name" in stderr
    objects = render(sets=["serviceAccount.create=false", "serviceAccount.name=ops-trainyard"])
    assert not by_kind(objects, "ServiceAccount")
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ops-trainyard"
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        (subject,) = one(objects, kind)["subjects"]
        assert subject["name"] == "ops-trainyard"


def test_rbac_off_and_an_existing_claim_render_neither(tmp_path: Path) -> None:
    objects = render(sets=["rbac.create=false", "store.sqlite.existingClaim=old-store"])
    kinds = {o["kind"] for o in objects}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    assert "PersistentVolumeClaim" not in kinds
    volumes = one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    data = next(v for v in volumes if v["name"] == "data")
    assert data["persistentVolumeClaim"]["claimName"] == "old-store"


def test_a_budget_that_would_block_every_drain_is_refused(tmp_path: Path) -> None:
    """minAvailable equal to the replicas lets no pod be evicted: a node drain would hang."""
    store = {"type": "postgresql", "postgresql": {"url": "postgresql://db/t"}}
    values = {"replicaCount": 2, "podDisruptionBudget": {"minAvailable": 2}, "store": store}
    stderr = refusal(tmp_path, values)
    assert "podDisruptionBudget.minAvailable=2 with replicaCount=2" in stderr
    values["podDisruptionBudget"]["minAvailable"] = 1
    assert one(render(values=[write_values(tmp_path, values)]), "PodDisruptionBudget")


def test_postgresql_needs_a_url_or_an_existing_secret(tmp_path: Path) -> None:
    stderr = refusal(tmp_path, {"store": {"type": "postgresql"}})
    assert "store.type=postgresql needs store.postgresql.url" in stderr
    objects = render(
        values=[
            write_values(
                tmp_path, {"store": {"type": "postgresql"}, "secrets": {"existingSecret": "mine"}}
            )
        ]
    )
    assert not by_kind(objects, "Secret")
    env = {e["name"]: e for e in container(objects)["env"]}
    assert env["TRAINYARD_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "mine", "key": "database-url"
    }  # fmt: skip
    assert env["TRAINYARD_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "mine"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": "two"}, r"replicaCount.*(integer|number)"),
        ({"unknownKey": 1}, r"additional properties 'unknownKey' not allowed"),
        ({"image": {"repo": "x"}}, r"image.*additional properties 'repo' not allowed"),
        ({"store": {"type": "mysql"}}, r"store.*type.*(sqlite|postgresql)"),
        ({"scheduler": {"queues": [{"name": "q", "policy": "lottery"}]}}, r"policy"),
        ({"resources": {"requests": {"cpu": "lots"}}}, r"cpu.*does not match"),
        (
            {"tolerations": [{"key": "gpu", "operator": "Exists", "efect": "NoSchedule"}]},
            r"tolerations/0.*additional properties 'efect' not allowed",
        ),
        ({"affinity": {"nodeAfinity": {}}}, r"affinity.*additional properties 'nodeAfinity'"),
        (
            {
                "affinity": {
                    "podAntiAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {
                                "weight": 100,
                                "podAffinityTerm": {"topologykey": "kubernetes.io/hostname"},
                            }
                        ]
                    }
                }
            },
            r"podAffinityTerm.*additional properties 'topologykey' not allowed",
        ),
    ],
)
def test_schema_refuses_wrong_types_and_unknown_keys(
    tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    stderr = refusal(tmp_path, values)
    assert "values don't meet the specifications of the schema" in stderr, stderr
    assert re.search(message, stderr), stderr


def test_schema_types_every_value_and_closes_every_section() -> None:
    """Every value has a type, every object with named keys refuses others, every map
    types its values, every list its items, down to the leaves (through $refs too).
    Only `global` is open: Helm passes a parent chart's shared values there."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            assert set(node) == {"$ref"}, f"keywords beside a $ref are ignored: {node}"
            *_, name = node["$ref"].split("/")
            node = schema["definitions"][name]
        return node

    def walk(node: dict[str, Any], path: str) -> None:
        node = resolve(node)
        assert "type" in node, f"{path or '<root>'} has no type"
        if "properties" in node:
            assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"
            for key, sub in node["properties"].items():
                walk(sub, f"{path}.{key}" if path else key)
        elif node["type"] == "object" and path != "global":
            assert isinstance(node.get("additionalProperties"), dict), f"{path}: untyped map"
            walk(node["additionalProperties"], f"{path}.*")
        if node["type"] == "array":
            walk(node["items"], f"{path}[]")

    walk(schema, "")


def test_queue_policies_in_the_schema_are_the_schedulers() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    scheduler = schema["properties"]["scheduler"]["properties"]
    queue = scheduler["queues"]["items"]
    # The live policies: the simulator's oracles need the future and are refused live.
    assert sorted(queue["properties"]["policy"]["enum"]) == sorted(live_policy_names())
    assert sorted(scheduler["defaultPolicy"]["enum"]) == sorted(live_policy_names())


def granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(group, resource, verb) triples a Role or ClusterRole grants; no wildcards allowed."""
    triples = set()
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, f"unexpected fields in {rule}"
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        triples |= {
            (g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
        }
    return triples


@pytest.mark.parametrize("workers_namespace", ["", "jobs"])
def test_roles_grant_exactly_what_the_backend_calls(tmp_path: Path, workers_namespace: str) -> None:
    objects = render(sets=[f"workers.namespace={workers_namespace}"])
    for kind, scope in (("ClusterRole", "cluster"), ("Role", "namespace")):
        role = one(objects, kind)
        assert granted(role) - permission_set(scope) == set(), f"{kind}: granted, never called"
        assert permission_set(scope) - granted(role) == set(), f"{kind}: called, not granted"
    assert one(objects, "Role")["metadata"]["namespace"] == (workers_namespace or "trainyard")
    sa = one(objects, "ServiceAccount")["metadata"]
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = one(objects, kind)
        assert binding["roleRef"]["name"] == one(objects, role_kind)["metadata"]["name"]
        assert binding["roleRef"]["kind"] == role_kind
        (subject,) = binding["subjects"]
        assert (subject["kind"], subject["name"], subject["namespace"]) == (
            "ServiceAccount", sa["name"], sa["namespace"]
        )  # fmt: skip
    if workers_namespace:
        assert one(objects, "RoleBinding")["metadata"]["namespace"] == workers_namespace


def test_roles_grant_every_call_in_the_code_and_nothing_it_never_makes() -> None:
    """The chart against the code itself, not against permissions.py: each Kubernetes
    API call anywhere in `trainyard` (see backend_calls) is granted by the rendered
    roles, so a new call fails here until the chart grants it; and each grant is used."""
    objects = render()
    cluster, namespace = granted(one(objects, "ClusterRole")), granted(one(objects, "Role"))
    calls = code_calls()
    assert len(calls) >= 15, f"found too few calls to be reading the code: {calls}"

    def allowed(call: Call) -> bool:
        triple = (call.group, call.resource, call.verb)
        return triple in cluster or (call.namespaced and triple in namespace)

    refused = {where: sorted(options, key=str) for options, where in calls.items()
               if not any(allowed(call) for call in options)}  # fmt: skip
    assert not refused, f"the code makes calls the chart does not grant: {refused}"
    used = {(c.group, c.resource, c.verb, c.namespaced) for options in calls for c in options}
    unused_cluster = {g for g in cluster if (*g, False) not in used and (*g, True) not in used}
    unused_namespace = {g for g in namespace if (*g, True) not in used}
    assert not unused_cluster | unused_namespace, (
        f"granted, never called: {sorted(unused_cluster)} {sorted(unused_namespace)}"
    )


def test_every_environment_variable_names_a_setting(everything_chart: Path) -> None:
    names = {
        e["name"] for e in container(render(chart=everything_chart, values=[EVERYTHING]))["env"]
    }
    names |= set(one(render(), "ConfigMap")["data"])
    names.discard("TRAINYARD_EXAMPLE")  # the everything-on file's own extraEnv entry
    known = {f"TRAINYARD_{field.upper()}" for field in Settings.model_fields}
    unknown = names - known
    assert not unknown, f"the chart sets variables no setting reads: {sorted(unknown)}"


NOT_CHART_VALUES: dict[str, str] = {
    "kubeconfig": "in a pod the backend uses its ServiceAccount's in-cluster config",
    "loop": "every replica runs the loop; the leader Lease picks the one that acts",
    "local_cpus": "the local backend's node only",
    "local_memory_bytes": "the local backend's node only",
    "local_gpus": "the local backend's node only",
    "quota_file": "quotas (issue 12): a file to mount; server.extraEnv names it",
    "accelerator_prices": "accounting (issue 10): server.extraEnv, as JSON",
    "price_currency": "accounting (issue 10): server.extraEnv",
}
"""Settings the chart deliberately has no value of its own for, and why. A new setting
fails the test below until it is given a value or a reason here."""


def test_every_setting_is_a_chart_value_or_deliberately_left_out(everything_chart: Path) -> None:
    """With everything on (PostgreSQL, so the database URL too)."""
    names = {
        e["name"] for e in container(render(chart=everything_chart, values=[EVERYTHING]))["env"]
    }
    names |= set(one(render(), "ConfigMap")["data"])
    set_by_chart = {name.removeprefix("TRAINYARD_").lower() for name in names}
    assert not set_by_chart & set(NOT_CHART_VALUES), "set by the chart yet listed as left out"
    left = set(Settings.model_fields) - set_by_chart - set(NOT_CHART_VALUES)
    assert not left, f"settings the chart neither sets nor says why not: {sorted(left)}"


def test_configmap_and_env_parse_as_the_settings_they_configure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    objects = render(values=[EVERYTHING], chart=chart_copy(tmp_path, with_fixture_files=False))
    config = one(objects, "ConfigMap")["data"]
    plain_env = {e["name"]: e["value"] for e in container(objects)["env"] if "value" in e}
    for name, value in {**plain_env, **config}.items():
        if name != "TRAINYARD_EXAMPLE":
            monkeypatch.setenv(name, value)
    settings = Settings()
    assert [(q.name, q.policy) for q in settings.queues] == [
        ("default", "backfill"), ("research", "multifactor"), ("prod", "priority")
    ]  # fmt: skip
    assert settings.priority_classes == {"low": 100, "normal": 500, "high": 1000, "urgent": 5000}
    assert (settings.backend, settings.host, settings.port) == ("kubernetes", "0.0.0.0", 8080)
    assert settings.max_body_bytes == 1048576
    assert str(settings.home) == "/var/lib/trainyard"
    assert settings.default_policy == "priority"
    assert (settings.loop_period_seconds, settings.stop_grace_seconds) == (0.5, 120)
    assert (settings.retry_backoff_seconds, settings.retry_backoff_max_seconds) == (15, 600)
    assert settings.lease_ttl_seconds == 20
    assert settings.checkpoint_storage_class == "shared-rwx"
    assert settings.checkpoint_node_path == "/var/lib/trainyard-checkpoints"
    assert settings.checkpoint_retention_seconds == 86400
    assert (settings.retention_sweep_seconds, settings.allow_host_path) == (60, True)
    # What `trainyard serve` checks at start: every policy named exists.
    config = scheduler_config(settings)
    assert (
        config.default_policy == "priority" and config.queue_policies["research"] == "multifactor"
    )


def test_admin_token_is_generated_when_not_given() -> None:
    secret = one(render(), "Secret")
    import base64

    token = base64.b64decode(secret["data"]["admin-token"]).decode()
    assert len(token) == 48 and token.isalnum()
    assert "database-url" not in secret["data"]


def test_chart_readme_values_table_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "hack" / "helm" / "chart-readme.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_chart_readme_script_refuses_an_uncommented_value(tmp_path: Path) -> None:
    chart = chart_copy(tmp_path, with_fixture_files=False)
    values = chart / "values.yaml"
    values.write_text(values.read_text().replace("  # Service port of the API.\n", ""))
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "hack" / "helm" / "chart-readme.py"),
            "--chart",
            str(chart),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "values without a comment in values.yaml: service.port" in result.stderr


def test_readme_lists_exactly_the_roles_namespace_verbs() -> None:
    """The README's "Run on a GPU cluster" names the Role's grants; they are the backend's."""
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    section = readme.split("## Run on a GPU cluster", 1)[1].split(" ## ", 1)[0]
    match = re.search(r"a Role in the workers namespace \(([^)]*)\)", section)
    assert match, "the README's GPU-cluster section describes the Role"
    listed = set()
    for item in match.group(1).split(", "):
        resource, verbs = item.split(" ")
        listed |= {(resource, verb) for verb in verbs.split("/")}
    called = {(resource, verb) for _, resource, verb in permission_set("namespace")}
    assert listed == called, f"extra: {sorted(listed - called)}, missing: {sorted(called - listed)}"
