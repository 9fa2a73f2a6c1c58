"""Prometheus metrics of the control plane, on a registry per app (tests build many apps)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from trainyard.api.quota_view import queue_quotas
from trainyard.config import Settings
from trainyard.quotas import quota_file
from trainyard.store import count_jobs_by_state, read_transaction


class _JobsCollector(Collector):
    """Jobs per queue and state, counted in the store at scrape time (not per process)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "trainyard_jobs", "Jobs in the store by queue and state", labels=["queue", "state"]
        )
        with read_transaction(self._engine) as conn:
            counts = count_jobs_by_state(conn)
        for (queue, state), count in sorted(counts.items()):
            family.add_metric([queue, state], count)
        yield family


class _QuotaCollector(Collector):
    """Quota state per queue, flavor and resource, in the manner of Kueue's metrics,
    computed at scrape time from the store and the quota file (see api.quota_view)."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["queue", "cohort", "flavor", "resource"]
        families = {
            "nominal": GaugeMetricFamily(
                "trainyard_queue_nominal_quota",
                "Nominal quota (GPUs, chips, cores, bytes)",
                labels=labels,
            ),
            "used": GaugeMetricFamily(
                "trainyard_queue_resource_usage",
                "Quota in use by admitted and running jobs",
                labels=labels,
            ),
            "borrowed": GaugeMetricFamily(
                "trainyard_queue_borrowed", "Usage above the nominal quota", labels=labels
            ),
            "lent": GaugeMetricFamily(
                "trainyard_queue_lent", "Unused nominal quota used by the cohort", labels=labels
            ),
        }
        share = GaugeMetricFamily(
            "trainyard_queue_weighted_share", "Weighted dominant resource share", labels=["queue"]
        )
        with read_transaction(self._engine) as conn:
            statuses = queue_quotas(self._settings, conn)
        for name, status in sorted(statuses.items()):
            share.add_metric([name], status.weighted_share)
            for r in status.resources:
                key = [name, status.cohort or "", r.flavor, r.resource]
                families["nominal"].add_metric(key, r.nominal)
                families["used"].add_metric(key, r.used)
                families["borrowed"].add_metric(key, r.borrowed)
                families["lent"].add_metric(key, r.lent)
        yield from families.values()
        yield share
        source = quota_file(self._settings)
        refused = GaugeMetricFamily(
            "trainyard_quota_file_refused",
            "New versions of the quota file refused as invalid since start (the old one kept)",
        )
        refused.add_metric([], source.failures if source is not None else 0)
        yield refused


class ApiMetrics:
    """The counters the API updates, and the registry /metrics exposes."""

    def __init__(self, engine: Engine, settings: Settings | None = None) -> None:
        self.registry = CollectorRegistry()
        self.submitted = Counter(
            "trainyard_jobs_submitted_total",
            "Jobs accepted by POST /v1/jobs (idempotent replays not counted)",
            ["queue"],
            registry=self.registry,
        )
        self.cancelled = Counter(
            "trainyard_jobs_cancelled_total",
            "Jobs cancelled through the API",
            registry=self.registry,
        )
        self.registry.register(_JobsCollector(engine))
        if settings is not None and settings.quota_file is not None:
            self.registry.register(_QuotaCollector(engine, settings))
        self._submitted_by_queue: dict[str, Any] = {}

    def submitted_in(self, queue: str) -> Any:
        """The submissions counter of `queue` (children cached: .labels() is not free)."""
        child = self._submitted_by_queue.get(queue)
        if child is None:
            child = self._submitted_by_queue[queue] = self.submitted.labels(queue=queue)
        return child
