"""The catalog holds every control-plane metric issue 10 names, with the labels it names
(the /metrics tests then check the server exposes the catalog, labels included)."""

from __future__ import annotations

from trainyard.observability import catalog

# Issue 10, item 1, as written (types: what the issue says or the name's suffix implies).
ISSUE: dict[str, tuple[str, tuple[str, ...]]] = {
    "trainyard_queue_pending_jobs": ("gauge", ("queue", "priority", "kind")),
    "trainyard_queue_oldest_pending_seconds": ("gauge", ("queue",)),
    "trainyard_job_wait_seconds": ("histogram", ("queue",)),
    "trainyard_jobs_running": ("gauge", ("queue",)),
    "trainyard_admissions_total": ("counter", ("queue",)),
    "trainyard_preemptions_total": ("counter", ("queue",)),
    "trainyard_job_finished_total": ("counter", ("queue", "outcome")),
    "trainyard_job_duration_seconds": ("histogram", ("outcome",)),
    "trainyard_job_retries_total": ("counter", ("queue",)),
    "trainyard_scheduling_cycle_seconds": ("histogram", ()),
    "trainyard_scheduling_decisions_total": ("counter", ("result",)),
    "trainyard_cluster_capacity": ("gauge", ("resource", "model")),
    "trainyard_cluster_allocated": ("gauge", ("resource", "model", "queue")),
    "trainyard_unschedulable_jobs": ("gauge", ("queue", "reason")),
    "trainyard_gpu_hours_total": ("counter", ("queue", "owner", "model")),
}


def test_every_metric_of_the_issue_is_in_the_catalog_with_its_labels() -> None:
    specs = catalog.by_name()
    for name, (kind, labels) in ISSUE.items():
        assert name in specs, name
        assert specs[name].type == kind, name
        assert specs[name].labels == labels, name


def test_api_request_count_and_latency_are_by_route_template_and_status() -> None:
    specs = catalog.by_name()
    assert specs["trainyard_api_requests_total"].type == "counter"
    assert specs["trainyard_api_request_duration_seconds"].type == "histogram"
    for name in ("trainyard_api_requests_total", "trainyard_api_request_duration_seconds"):
        assert {"route", "status"} <= set(specs[name].labels), name


def test_no_control_plane_metric_is_labelled_by_job() -> None:
    """Label values must stay bounded: a job id (or name) label grows without limit."""
    for spec in catalog.CONTROL_PLANE:
        assert not {"job", "job_id", "id", "name"} & set(spec.labels), spec.name
