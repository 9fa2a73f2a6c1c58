"""Shared building blocks of the dashboards: the datasource and queue/job variables, and
panel helpers that set a unit, thresholds and the datasource on every panel.

Every panel queries `${datasource}`, a datasource variable, so the dashboards work with
whatever the Prometheus datasource is called in a given Grafana.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from grafana_foundation_sdk.builders import bargauge, stat, timeseries
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders.common import ReduceDataOptions
from grafana_foundation_sdk.models import dashboard as model

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
# The value "All" stands for in the variables below: a regex, so `label=~"$var"` works.
ALL = ".*"


@dataclass(frozen=True, slots=True)
class Query:
    """One PromQL expression of a panel and its legend."""

    expr: str
    legend: str = ""


def datasource_variable() -> dash.DatasourceVariable:
    return dash.DatasourceVariable("datasource").label("Data source").type("prometheus")


def label_variable(name: str, label: str, query: str) -> dash.QueryVariable:
    """A multi-select variable over a label's values, with "All" meaning any value."""
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query({"query": query, "refId": f"{name}-values"})
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(ALL)
        .current(model.VariableOption(selected=True, text="All", value="$__all"))
    )


def thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    """Absolute thresholds; the first step's value is None (minus infinity)."""
    return (
        dash.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in steps])
    )


GREEN_ONLY = thresholds((None, "green"))


def _targets(queries: Sequence[Query]) -> list[prom.Dataquery]:
    return [
        prom.Dataquery().expr(q.expr).legend_format(q.legend or "__auto").ref_id(chr(65 + i))
        for i, q in enumerate(queries)
    ]


PanelT = TypeVar("PanelT", timeseries.Panel, stat.Panel, bargauge.Panel)


def _described(
    panel: PanelT,
    title: str,
    description: str,
    queries: Sequence[Query],
    unit: str,
    limits: dash.ThresholdsConfig,
    size: tuple[int, int],
) -> PanelT:
    """What every panel sets, whatever its kind: title, description, the datasource
    variable, the queries, unit, thresholds and size."""
    return (
        panel.title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets(queries))
        .unit(unit)
        .thresholds(limits)
        .span(size[0])
        .height(size[1])
    )


def _last_value() -> ReduceDataOptions:
    """Single-value panels show each series' last non-null value, not every value."""
    return ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def timeseries_panel(
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    unit: str,
    limits: dash.ThresholdsConfig = GREEN_ONLY,
    minimum: float | None = 0,
    width: int = 12,
    height: int = 8,
) -> timeseries.Panel:
    panel = _described(
        timeseries.Panel(), title, description, queries, unit, limits, (width, height)
    ).fill_opacity(10)
    if minimum is not None:
        panel = panel.min(minimum)
    return panel


def stat_panel(
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    unit: str,
    limits: dash.ThresholdsConfig = GREEN_ONLY,
    width: int = 6,
    height: int = 5,
) -> stat.Panel:
    return _described(
        stat.Panel(), title, description, queries, unit, limits, (width, height)
    ).reduce_options(_last_value())


def bar_panel(
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    unit: str,
    limits: dash.ThresholdsConfig = GREEN_ONLY,
    width: int = 12,
    height: int = 8,
) -> bargauge.Panel:
    return (
        _described(bargauge.Panel(), title, description, queries, unit, limits, (width, height))
        .min(0)
        .reduce_options(_last_value())
    )


def new_dashboard(uid: str, title: str, description: str) -> dash.Dashboard:
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["trainyard"])
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .editable()
        .with_variable(datasource_variable())
    )
