"""Grafana dashboards as code (grafana-foundation-sdk builders), generated into the chart.

`python -m trainyard.observability.dashboards` writes helm/trainyard/dashboards/*.json;
`--check` fails when the committed files differ from what the builders produce. Needs
the `dev` extra (grafana-foundation-sdk); nothing at run time imports this package.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from trainyard.observability.dashboards import cluster, control_plane, jobs

# File name -> builder; the file names are what the chart ships.
DASHBOARDS: dict[str, Callable[[], dash.Dashboard]] = {
    "cluster-and-queues.json": cluster.build,
    "jobs-and-workers.json": jobs.build,
    "control-plane.json": control_plane.build,
}


def render(build: Callable[[], dash.Dashboard]) -> str:
    """One dashboard as stable JSON text (sorted keys, trailing newline).

    Panels (rows included) are numbered 1, 2, ... in layout order: Grafana needs unique
    ids for links and "view panel", and fixed ones keep the generated files stable.
    """
    model = build().build()
    for number, panel in enumerate(model.panels or [], start=1):
        panel.id_val = number
    return JSONEncoder(sort_keys=True, indent=2).encode(model) + "\n"


def render_all() -> dict[str, str]:
    return {name: render(build) for name, build in DASHBOARDS.items()}


def expressions(document: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every query of every panel, rows included."""
    for panel in document.get("panels") or []:
        for inner in [panel, *(panel.get("panels") or [])]:
            for target in inner.get("targets") or []:
                if target.get("expr"):
                    yield inner.get("title", ""), target["expr"]


def variable_queries(document: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(variable name, label_values query) of every query variable."""
    for variable in (document.get("templating") or {}).get("list") or []:
        query = variable.get("query")
        if variable.get("type") == "query" and isinstance(query, dict):
            yield variable["name"], str(query.get("query", ""))
        elif variable.get("type") == "query" and isinstance(query, str):
            yield variable["name"], query


def load(text: str) -> dict[str, Any]:
    return json.loads(text)


# What Grafana would put in for its built-in variables and for "All", when a query is
# sent to Prometheus outside Grafana (tests, promtool).
DEFAULT_SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "30s",
    "$__range": "1h",
    "$queue": ".*",
    "$job": ".*",
}


def substitute(expr: str, values: dict[str, str] | None = None) -> str:
    """`expr` with dashboard variables replaced (longest names first: $__range_s...)."""
    values = {**DEFAULT_SUBSTITUTIONS, **(values or {})}
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(name, values[name])
    return expr
