"""The "Control plane" dashboard: API traffic, latency and errors, the scheduling loop's
cycle time, decisions and lag, and whether the server is up."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from trainyard.observability.dashboards.common import (
    Query,
    new_dashboard,
    stat_panel,
    thresholds,
    timeseries_panel,
)

RATE = "[$__rate_interval]"
# The scrape job of the control plane (hack/prometheus and the chart both use this name).
CONTROL_PLANE_JOB = "trainyard"


def build() -> dash.Dashboard:
    return (
        new_dashboard(
            "trainyard-control-plane",
            "Trainyard / Control plane",
            "API request rate, latency and errors; scheduling cycle time, decisions and lag.",
        )
        .with_row(dash.Row("API"))
        .with_panel(
            stat_panel(
                "Control plane up",
                "Scrape targets of the control plane that answer.",
                [Query(f'sum(up{{job="{CONTROL_PLANE_JOB}"}})', "up")],
                unit="short",
                limits=thresholds((None, "red"), (1, "green")),
            )
        )
        .with_panel(
            timeseries_panel(
                "Requests per second by route",
                "API requests by route template.",
                [
                    Query(
                        f"sum by (route) (rate(trainyard_api_requests_total{RATE}))",
                        "{{route}}",
                    )
                ],
                unit="reqps",
                width=18,
            )
        )
        .with_panel(
            timeseries_panel(
                "Latency p50 / p99",
                "API request latency over all routes.",
                [
                    Query(
                        "histogram_quantile(0.5, sum by (le) "
                        f"(rate(trainyard_api_request_duration_seconds_bucket{RATE})))",
                        "p50",
                    ),
                    Query(
                        "histogram_quantile(0.99, sum by (le) "
                        f"(rate(trainyard_api_request_duration_seconds_bucket{RATE})))",
                        "p99",
                    ),
                ],
                unit="s",
                limits=thresholds((None, "green"), (0.5, "orange"), (2, "red")),
            )
        )
        .with_panel(
            timeseries_panel(
                "Server errors (share of requests)",
                "Share of requests answered 5xx (0 when there were none).",
                [
                    Query(
                        "(sum(rate(trainyard_api_requests_total"
                        f'{{status=~"5.."}}{RATE})) or vector(0)) / '
                        f"sum(rate(trainyard_api_requests_total{RATE}))",
                        "5xx",
                    )
                ],
                unit="percentunit",
                limits=thresholds((None, "green"), (0.01, "orange"), (0.05, "red")),
            )
        )
        .with_row(dash.Row("Scheduling loop"))
        .with_panel(
            timeseries_panel(
                "Cycle time p50 / p99",
                "Duration of one scheduling cycle: store read, core, writes.",
                [
                    Query(
                        "histogram_quantile(0.5, sum by (le) "
                        f"(rate(trainyard_scheduling_cycle_seconds_bucket{RATE})))",
                        "p50",
                    ),
                    Query(
                        "histogram_quantile(0.99, sum by (le) "
                        f"(rate(trainyard_scheduling_cycle_seconds_bucket{RATE})))",
                        "p99",
                    ),
                ],
                unit="s",
                limits=thresholds((None, "green"), (0.25, "orange"), (1, "red")),
            )
        )
        .with_panel(
            timeseries_panel(
                "Decisions per second",
                "Scheduling decisions by result.",
                [
                    Query(
                        f"sum by (result) (rate(trainyard_scheduling_decisions_total{RATE}))",
                        "{{result}}",
                    )
                ],
                unit="ops",
            )
        )
        .with_panel(
            stat_panel(
                "Loop lag",
                "Seconds since the scheduling loop last finished a cycle.",
                [
                    Query(
                        "time() - max(trainyard_scheduling_last_cycle_timestamp_seconds)",
                        "lag",
                    )
                ],
                unit="s",
                limits=thresholds((None, "green"), (10, "orange"), (60, "red")),
                width=12,
                height=8,
            )
        )
    )
