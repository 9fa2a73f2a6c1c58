"""Names, labels and annotations Trainyard puts on its Kubernetes objects, written down once.

Worker identity is (job id, attempt, index). The pod name carries job and index only
(`<job>-worker-<i>`), so a create repeated after a crash finds the same pod; the
attempt lives in a label, so a pod left by an earlier attempt is told apart from ours.
Job ids are 32 lowercase hex characters, so pod names (at most 32 + 8 + 4 characters)
are valid DNS labels; Service names must start with a letter (DNS-1035), hence `ty-`.
"""

from __future__ import annotations

import re

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "trainyard"
JOB_ID_LABEL = "trainyard.io/job-id"
JOB_NAME_LABEL = "trainyard.io/job-name"
ATTEMPT_LABEL = "trainyard.io/attempt"
WORKER_INDEX_LABEL = "trainyard.io/worker-index"
QUEUE_LABEL = "trainyard.io/queue"
REVISION_LABEL = "trainyard.io/revision"
"""A model service replica's revision of the job document (rollout.py): which pods a
rolling update has replaced is visible to kubectl (`-L trainyard.io/revision`)."""

QUEUE_ANNOTATION = "trainyard.io/queue"
OWNER_ANNOTATION = "trainyard.io/owner"
TARGET_NODE_ANNOTATION = "trainyard.io/node"
"""The node the core chose, written at creation so an unbound pod (a crash between
create and bind) still says where it belongs."""

SCHEDULER_NAME = "trainyard"
CONTAINER_NAME = "worker"
RENDEZVOUS_PORT = 29500
METRICS_PORT = 9400
"""The worker runtime's metrics port (trainyard.worker.config's default base): local rank
r of a worker serves `trainyard_worker_*` on METRICS_PORT + r."""
METRICS_PORT_NAME = "metrics-{rank}"
"""Container port names of the metrics ports; the chart's PodMonitor keeps every port
whose name matches `metrics(-[0-9]+)?` (values.yaml `metrics.podMonitor.portNamePattern`)."""
SCRAPE_ANNOTATIONS = ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")
"""The conventional annotations of annotation-based Prometheus scrape configs."""
OUR_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def pod_name(job_id: str, index: int) -> str:
    return f"{job_id}-worker-{index}"


def service_name(job_id: str) -> str:
    return f"ty-{job_id}"


def is_label_value(text: str) -> bool:
    """True when `text` may be a Kubernetes label value (63 characters, the charset)."""
    return len(text) <= 63 and _LABEL_VALUE.match(text) is not None


def worker_hostname(job_id: str, index: int, namespace: str, cluster_domain: str) -> str:
    """The DNS name of worker `index` through the job's headless Service."""
    return f"{pod_name(job_id, index)}.{service_name(job_id)}.{namespace}.svc.{cluster_domain}"
