"""The "Cluster & queues" dashboard: capacity and allocation per GPU model, what waits
where and for how long, admissions and preemptions, why jobs are pending, GPU-hours."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from trainyard.observability.dashboards.common import (
    Query,
    bar_panel,
    label_variable,
    new_dashboard,
    stat_panel,
    thresholds,
    timeseries_panel,
)

Q = 'queue=~"$queue"'
WAIT_LIMITS = thresholds((None, "green"), (600, "yellow"), (3600, "red"))


def build() -> dash.Dashboard:
    return (
        new_dashboard(
            "trainyard-cluster",
            "Trainyard / Cluster & queues",
            "Capacity vs allocation by accelerator model, pending work per queue, waits, "
            "admission and preemption rates, unschedulable reasons and GPU-hours.",
        )
        .with_variable(
            label_variable("queue", "Queue", "label_values(trainyard_queue_pending_jobs, queue)")
        )
        .with_row(dash.Row("Capacity"))
        .with_panel(
            timeseries_panel(
                "GPUs: capacity vs allocated, by model",
                "Allocatable GPUs per model and those held by admitted/running jobs.",
                [
                    Query(
                        'sum by (model) (trainyard_cluster_capacity{resource="gpu"})',
                        "{{model}} capacity",
                    ),
                    Query(
                        f'sum by (model) (trainyard_cluster_allocated{{resource="gpu", {Q}}})',
                        "{{model}} allocated",
                    ),
                ],
                unit="none",
            )
        )
        .with_panel(
            timeseries_panel(
                "CPU cores: capacity vs allocated",
                "Allocatable CPU cores and those held by admitted/running jobs, per queue.",
                [
                    Query('sum(trainyard_cluster_capacity{resource="cpu"})', "capacity"),
                    Query(
                        f'sum by (queue) (trainyard_cluster_allocated{{resource="cpu", {Q}}})',
                        "{{queue}} allocated",
                    ),
                ],
                unit="none",
            )
        )
        .with_row(dash.Row("Queues"))
        .with_panel(
            timeseries_panel(
                "Pending jobs per queue",
                "Jobs waiting to be admitted.",
                [Query(f"sum by (queue) (trainyard_queue_pending_jobs{{{Q}}})", "{{queue}}")],
                unit="short",
                width=8,
            )
        )
        .with_panel(
            timeseries_panel(
                "Running jobs per queue",
                "Jobs whose workers all run.",
                [Query(f"sum by (queue) (trainyard_jobs_running{{{Q}}})", "{{queue}}")],
                unit="short",
                width=8,
            )
        )
        .with_panel(
            stat_panel(
                "Oldest pending job",
                "How long the oldest pending job of each queue has waited so far.",
                [
                    Query(
                        f"max by (queue) (trainyard_queue_oldest_pending_seconds{{{Q}}})",
                        "{{queue}}",
                    )
                ],
                unit="s",
                limits=WAIT_LIMITS,
                width=8,
                height=8,
            )
        )
        .with_panel(
            timeseries_panel(
                "Wait time p50 / p95 (submit to running)",
                "Quantiles of the time from submission to first RUNNING, over the interval.",
                [
                    Query(
                        "histogram_quantile(0.5, sum by (le, queue) "
                        f"(rate(trainyard_job_wait_seconds_bucket{{{Q}}}[$__rate_interval])))",
                        "{{queue}} p50",
                    ),
                    Query(
                        "histogram_quantile(0.95, sum by (le, queue) "
                        f"(rate(trainyard_job_wait_seconds_bucket{{{Q}}}[$__rate_interval])))",
                        "{{queue}} p95",
                    ),
                ],
                unit="s",
                limits=WAIT_LIMITS,
            )
        )
        .with_panel(
            timeseries_panel(
                "Admissions and preemptions",
                "Jobs admitted and jobs preempted per second.",
                [
                    Query(
                        "sum by (queue) "
                        f"(rate(trainyard_admissions_total{{{Q}}}[$__rate_interval]))",
                        "{{queue}} admitted",
                    ),
                    Query(
                        "sum by (queue) "
                        f"(rate(trainyard_preemptions_total{{{Q}}}[$__rate_interval]))",
                        "{{queue}} preempted",
                    ),
                ],
                unit="ops",
            )
        )
        .with_panel(
            bar_panel(
                "Pending jobs by reason",
                "Why pending jobs did not start, as the last scheduling cycle saw it.",
                [Query(f"sum by (reason) (trainyard_unschedulable_jobs{{{Q}}})", "{{reason}}")],
                unit="short",
                limits=thresholds((None, "green"), (1, "orange")),
            )
        )
        .with_panel(
            timeseries_panel(
                "Finished jobs by outcome",
                "Jobs reaching SUCCEEDED, FAILED or CANCELLED per second.",
                [
                    Query(
                        "sum by (outcome) "
                        f"(rate(trainyard_job_finished_total{{{Q}}}[$__rate_interval]))",
                        "{{outcome}}",
                    )
                ],
                unit="ops",
            )
        )
        .with_row(dash.Row("Usage"))
        .with_panel(
            bar_panel(
                "GPU-hours by queue (time range)",
                "GPU-hours used by each queue's attempts over the dashboard's time range.",
                [
                    Query(
                        f"sum by (queue) (increase(trainyard_gpu_hours_total{{{Q}}}[$__range]))",
                        "{{queue}}",
                    )
                ],
                unit="h",
            )
        )
        .with_panel(
            bar_panel(
                "CPU-core-hours by queue (time range)",
                "CPU-core-hours held by each queue's attempts over the dashboard's time range.",
                [
                    Query(
                        "sum by (queue) "
                        f"(increase(trainyard_cpu_core_hours_total{{{Q}}}[$__range]))",
                        "{{queue}}",
                    )
                ],
                unit="h",
            )
        )
    )
