"""The control plane's metric catalog: every name, its type, labels and buckets, once.

The /metrics collector, the dashboards and the alert rules are all checked against this
list, so a renamed metric cannot silently leave a panel or an alert without data. Label
values are bounded: queues, priority classes and outcomes come from configuration or the
state machine, models from the node inventory, owners from the users; never a job id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetricType = Literal["gauge", "counter", "histogram"]

WAIT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0)
DURATION_BUCKETS = (10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)
CYCLE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Results the loop reports per cycle (`CycleRecorder.record_cycle`); listed so that each
# exists at zero before the first cycle. The loop may report others (bounded names).
DECISION_RESULTS = ("admitted", "backfilled", "preempted", "no_fit", "blocked", "launch_failed")
# Resources of trainyard_cluster_capacity/allocated, in their base units.
RESOURCES = ("cpu", "memory", "gpu", "tpu")
# Outcomes of trainyard_job_finished_total / trainyard_job_duration_seconds.
OUTCOMES = ("SUCCEEDED", "FAILED", "CANCELLED")


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    type: MetricType
    help: str
    labels: tuple[str, ...] = ()


CONTROL_PLANE: tuple[MetricSpec, ...] = (
    MetricSpec(
        "trainyard_queue_pending_jobs",
        "gauge",
        "Jobs waiting in a queue",
        ("queue", "priority", "kind"),
    ),
    MetricSpec(
        "trainyard_queue_oldest_pending_seconds",
        "gauge",
        "Wait so far of the queue's oldest pending job (0 when none is pending)",
        ("queue",),
    ),
    MetricSpec(
        "trainyard_job_wait_seconds",
        "histogram",
        "Submit to first RUNNING, per job that has started",
        ("queue",),
    ),
    MetricSpec("trainyard_jobs_running", "gauge", "Jobs in state RUNNING", ("queue",)),
    MetricSpec("trainyard_jobs_admitted", "gauge", "Jobs admitted, not yet running", ("queue",)),
    MetricSpec("trainyard_admissions_total", "counter", "Admissions (every attempt)", ("queue",)),
    MetricSpec(
        "trainyard_preemptions_total", "counter", "Jobs preempted by the scheduler", ("queue",)
    ),
    MetricSpec(
        "trainyard_job_finished_total",
        "counter",
        "Jobs that reached a final state",
        ("queue", "outcome"),
    ),
    MetricSpec(
        "trainyard_job_duration_seconds",
        "histogram",
        "First RUNNING to final state, per finished job that ran",
        ("outcome",),
    ),
    MetricSpec(
        "trainyard_job_retries_total",
        "counter",
        "Attempts that failed and went back to the queue for a retry",
        ("queue",),
    ),
    MetricSpec(
        "trainyard_scheduling_cycle_seconds",
        "histogram",
        "Duration of one scheduling cycle (store read, core, writes)",
    ),
    MetricSpec(
        "trainyard_scheduling_decisions_total",
        "counter",
        "Scheduling decisions by result",
        ("result",),
    ),
    MetricSpec(
        "trainyard_scheduling_last_cycle_timestamp_seconds",
        "gauge",
        "When the loop last finished a cycle (Unix time; 0 before the first)",
    ),
    MetricSpec(
        "trainyard_cluster_capacity",
        "gauge",
        "Allocatable capacity (cpu in cores, memory in bytes, gpu/tpu in devices)",
        ("resource", "model"),
    ),
    MetricSpec(
        "trainyard_cluster_allocated",
        "gauge",
        "Capacity held by admitted and running jobs",
        ("resource", "model", "queue"),
    ),
    MetricSpec(
        "trainyard_unschedulable_jobs",
        "gauge",
        "Pending jobs by the reason the last scheduling cycle gave",
        ("queue", "reason"),
    ),
    MetricSpec(
        "trainyard_gpu_hours_total",
        "counter",
        "GPU-hours used by attempts (running ones up to now)",
        ("queue", "owner", "model"),
    ),
    MetricSpec(
        "trainyard_cpu_core_hours_total",
        "counter",
        "CPU-core-hours held by attempts (running ones up to now)",
        ("queue", "owner"),
    ),
    MetricSpec(
        "trainyard_api_requests_total",
        "counter",
        "API requests by route template and status",
        ("method", "route", "status"),
    ),
    MetricSpec(
        "trainyard_api_request_duration_seconds",
        "histogram",
        "API request latency by route template and status",
        ("method", "route", "status"),
    ),
)

WORKER: tuple[str, ...] = (
    "trainyard_worker_step",
    "trainyard_worker_loss",
    "trainyard_worker_samples_per_second",
    "trainyard_worker_tokens_per_second",
    "trainyard_worker_step_duration_seconds",
    "trainyard_worker_data_wait_seconds",
    "trainyard_worker_peak_memory_bytes",
    "trainyard_worker_mfu_ratio",
    "trainyard_worker_checkpoint_duration_seconds",
    "trainyard_worker_gpu_utilization_ratio",
    "trainyard_worker_gpu_memory_used_bytes",
    "trainyard_worker_gpu_energy_joules",
)
# Worker series that exist only where NVML sees a GPU (absent, never faked, elsewhere).
NVML_ONLY: frozenset[str] = frozenset(
    {
        "trainyard_worker_gpu_utilization_ratio",
        "trainyard_worker_gpu_memory_used_bytes",
        "trainyard_worker_gpu_energy_joules",
    }
)


def control_plane_names() -> list[str]:
    """Every control-plane metric name as it appears in /metrics (histograms: base name)."""
    return [spec.name for spec in CONTROL_PLANE]


def by_name() -> dict[str, MetricSpec]:
    return {spec.name: spec for spec in CONTROL_PLANE}
