"""The alert rules pass promtool's checks, and every alert has a promtool unit test that
fires and one that stays quiet."""

from __future__ import annotations

import subprocess
from pathlib import Path

import promql_parser
import yaml

from tests.support.prometheus import promtool
from trainyard.observability import catalog

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "helm" / "trainyard" / "rules" / "trainyard-alerts.yaml"
RULE_TESTS = Path(__file__).parent / "rules" / "trainyard-alerts-test.yaml"
KNOWN = set(catalog.control_plane_names()) | set(catalog.WORKER) | {"up"}


def _alerts() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_check_rules() -> None:
    result = _run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout


def test_promtool_test_rules() -> None:
    result = _run("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    firing, quiet = set(), set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in _alerts()}
    assert names == firing, f"alerts without a firing case: {names - firing}"
    assert names == quiet, f"alerts without a quiet case: {names - quiet}"


def test_the_issue_s_alerts_with_runbooks_over_catalog_metrics() -> None:
    alerts = {rule["alert"]: rule for rule in _alerts()}
    assert {
        "TrainyardQueueStalled",
        "TrainyardGPUsIdle",
        "TrainyardJobFailureRateHigh",
        "TrainyardSchedulingCycleSlow",
        "TrainyardControlPlaneDown",
        "TrainyardOldestPendingJobTooOld",
    } <= set(alerts)
    for name, rule in alerts.items():
        assert rule["annotations"].get("runbook"), name
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), name
        used: set[str] = set()

        def visit(node: object, used: set[str] = used) -> None:
            if isinstance(node, promql_parser.VectorSelector) and node.name:
                used.add(node.name)

        promql_parser.walk(promql_parser.parse(rule["expr"]), visit)
        bases = {n.removesuffix("_bucket") for n in used}
        assert bases <= KNOWN, f"{name}: unknown metrics {bases - KNOWN}"
