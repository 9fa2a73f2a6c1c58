"""The "Jobs & workers" dashboard: per job, what its workers report (throughput, loss,
GPU utilisation, MFU, step time, data wait, memory), from `trainyard_worker_*`."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from trainyard.observability.dashboards.common import (
    Query,
    label_variable,
    new_dashboard,
    thresholds,
    timeseries_panel,
)

SEL = 'queue=~"$queue", job=~"$job"'
RATE = "[$__rate_interval]"


def build() -> dash.Dashboard:
    return (
        new_dashboard(
            "trainyard-jobs",
            "Trainyard / Jobs & workers",
            "What each job's workers report: throughput, loss, GPU utilisation, MFU, "
            "step time and time spent waiting for data.",
        )
        .with_variable(
            label_variable("queue", "Queue", "label_values(trainyard_worker_step, queue)")
        )
        .with_variable(
            label_variable(
                "job", "Job", 'label_values(trainyard_worker_step{queue=~"$queue"}, job)'
            )
        )
        .with_row(dash.Row("Throughput"))
        .with_panel(
            timeseries_panel(
                "Samples per second",
                "Global samples per second of each job (every rank reports the global rate).",
                [Query(f"max by (job) (trainyard_worker_samples_per_second{{{SEL}}})", "{{job}}")],
                unit="short",
            )
        )
        .with_panel(
            timeseries_panel(
                "Tokens per second",
                "Global tokens per second of each language-model job.",
                [Query(f"max by (job) (trainyard_worker_tokens_per_second{{{SEL}}})", "{{job}}")],
                unit="short",
            )
        )
        .with_panel(
            timeseries_panel(
                "Loss",
                "Loss of the last step, averaged over ranks.",
                [Query(f"max by (job) (trainyard_worker_loss{{{SEL}}})", "{{job}}")],
                unit="none",
                minimum=None,
            )
        )
        .with_panel(
            timeseries_panel(
                "Progress (optimizer steps)",
                "Optimizer steps completed.",
                [Query(f"max by (job) (trainyard_worker_step{{{SEL}}})", "{{job}}")],
                unit="short",
            )
        )
        .with_row(dash.Row("Efficiency"))
        .with_panel(
            timeseries_panel(
                "GPU utilisation",
                "NVML utilisation averaged over each job's GPUs (absent on CPU-only jobs).",
                [
                    Query(
                        f"avg by (job) (trainyard_worker_gpu_utilization_ratio{{{SEL}}})",
                        "{{job}}",
                    )
                ],
                unit="percentunit",
                limits=thresholds((None, "red"), (0.1, "orange"), (0.5, "green")),
            )
        )
        .with_panel(
            timeseries_panel(
                "MFU",
                "Model FLOPs utilisation estimate (language models on known GPUs).",
                [Query(f"max by (job) (trainyard_worker_mfu_ratio{{{SEL}}})", "{{job}}")],
                unit="percentunit",
                limits=thresholds((None, "orange"), (0.3, "green")),
            )
        )
        .with_panel(
            timeseries_panel(
                "Step time p50 / p95",
                "Wall time of one optimizer step.",
                [
                    Query(
                        "histogram_quantile(0.5, sum by (le, job) "
                        f"(rate(trainyard_worker_step_duration_seconds_bucket{{{SEL}}}{RATE})))",
                        "{{job}} p50",
                    ),
                    Query(
                        "histogram_quantile(0.95, sum by (le, job) "
                        f"(rate(trainyard_worker_step_duration_seconds_bucket{{{SEL}}}{RATE})))",
                        "{{job}} p95",
                    ),
                ],
                unit="s",
            )
        )
        .with_panel(
            timeseries_panel(
                "Data wait (share of step time)",
                "Fraction of step time spent waiting for the next batch: high means the "
                "input pipeline, not the accelerator, limits the job.",
                [
                    Query(
                        "sum by (job) "
                        f"(rate(trainyard_worker_data_wait_seconds_sum{{{SEL}}}{RATE})) / "
                        "sum by (job) "
                        f"(rate(trainyard_worker_step_duration_seconds_sum{{{SEL}}}{RATE}))",
                        "{{job}}",
                    )
                ],
                unit="percentunit",
                limits=thresholds((None, "green"), (0.1, "orange"), (0.3, "red")),
            )
        )
        .with_panel(
            timeseries_panel(
                "Peak memory per rank",
                "Peak GPU allocator memory, or peak resident memory on CPU.",
                [
                    Query(
                        f"max by (job, rank) (trainyard_worker_peak_memory_bytes{{{SEL}}})",
                        "{{job}} rank {{rank}}",
                    )
                ],
                unit="bytes",
            )
        )
    )
