"""The dashboards in the chart are what the builders generate, and every query in them
is valid PromQL over metrics that exist in the catalog."""

from __future__ import annotations

from pathlib import Path

import promql_parser
import pytest

from trainyard.observability import catalog
from trainyard.observability.dashboards import (
    DASHBOARDS,
    expressions,
    load,
    render_all,
    substitute,
    variable_queries,
)
from trainyard.observability.dashboards.__main__ import DEFAULT_OUT, main

CHART = Path(__file__).resolve().parents[3] / "helm" / "trainyard" / "dashboards"
KNOWN = set(catalog.control_plane_names()) | set(catalog.WORKER) | {"up"}
RENDERED = render_all()


def _metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def _base(name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix) and name.removesuffix(suffix) in KNOWN:
            return name.removesuffix(suffix)
    return name


def test_committed_dashboards_are_what_the_builders_generate() -> None:
    assert DEFAULT_OUT == CHART
    assert sorted(p.name for p in CHART.glob("*.json")) == sorted(DASHBOARDS)
    for name, text in RENDERED.items():
        assert (CHART / name).read_text(encoding="utf-8") == text, (
            f"{name} is stale: run python -m trainyard.observability.dashboards"
        )
    assert main(["--check"]) == 0


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    (tmp_path / "control-plane.json").write_text("{}", encoding="utf-8")
    assert main(["--out", str(tmp_path), "--check"]) == 1


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_every_query_parses_and_names_known_metrics(name: str) -> None:
    document = load(RENDERED[name])
    found = list(expressions(document))
    assert found, "a dashboard without queries"
    for title, expr in found:
        names = _metric_names(substitute(expr))
        assert names, f"{title}: {expr} selects no metric"
        unknown = {_base(n) for n in names} - KNOWN
        assert not unknown, f"{title}: unknown metrics {unknown}"
    for variable, query in variable_queries(document):
        inner = query.removeprefix("label_values(").rsplit(",", 1)[0]
        assert _metric_names(substitute(inner)), f"variable {variable}: {query}"


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_panels_have_datasource_unit_and_thresholds(name: str) -> None:
    document = load(RENDERED[name])
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [p["id"] for p in document["panels"]]
    assert len(ids) == len(set(ids))
    for panel in document["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults.get("unit"), panel["title"]
        assert defaults["thresholds"]["steps"][0]["value"] is None, panel["title"]


def test_variables_for_queue_and_job() -> None:
    names = {
        file: {v["name"] for v in load(text)["templating"]["list"]}
        for file, text in RENDERED.items()
    }
    assert {"datasource", "queue"} <= names["cluster-and-queues.json"]
    assert {"datasource", "queue", "job"} <= names["jobs-and-workers.json"]


def test_the_issue_s_panels_are_there() -> None:
    titles = {
        file: " | ".join(title for title, _ in expressions(load(text)))
        for file, text in RENDERED.items()
    }
    for needle in (
        "capacity vs allocated",
        "Pending",
        "p50 / p95",
        "Oldest",
        "preemptions",
        "reason",
        "GPU-hours",
    ):
        assert needle in titles["cluster-and-queues.json"], needle
    for needle in ("Samples", "Tokens", "Loss", "GPU utilisation", "MFU", "Step time", "Data wait"):
        assert needle in titles["jobs-and-workers.json"], needle
    for needle in ("Requests", "Latency", "errors", "Cycle time", "lag"):
        assert needle in titles["control-plane.json"], needle
