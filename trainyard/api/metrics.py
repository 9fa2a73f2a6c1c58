"""Prometheus metrics of the control plane, on a registry per app (tests build many apps)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from trainyard.store import count_jobs_by_state, now_us, read_transaction
from trainyard.store.estimates import expected_waits


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
        waits = GaugeMetricFamily(
            "trainyard_queue_expected_wait_seconds",
            "Median forecast wait of each queue's pending jobs (the scheduler's forward "
            "simulation; queues without a forecast are absent)",
            labels=["queue"],
        )
        with read_transaction(self._engine) as conn:
            expected = expected_waits(conn, now_us())
        for queue, seconds in expected.items():
            waits.add_metric([queue], seconds)
        yield waits


class ApiMetrics:
    """The counters the API updates, and the registry /metrics exposes."""

    def __init__(self, engine: Engine) -> None:
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
        self._submitted_by_queue: dict[str, Any] = {}

    def submitted_in(self, queue: str) -> Any:
        """The submissions counter of `queue` (children cached: .labels() is not free)."""
        child = self._submitted_by_queue.get(queue)
        if child is None:
            child = self._submitted_by_queue[queue] = self.submitted.labels(queue=queue)
        return child
