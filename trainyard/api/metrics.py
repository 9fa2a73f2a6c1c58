"""Prometheus metrics of the control plane, on a registry per app (tests build many apps).

Two kinds of series:

- Gauges and counters about jobs, the cluster and the scheduling loop are computed from
  the STORE at scrape time (`StoreCollector`, cached about a second): every API process
  and replica reports the same numbers, counters are counts of stored events and
  attempts (they survive restarts), and every series exists at zero on a fresh install.
- Request count and latency by route template and status are per process. When several
  server processes share one port (`serve --workers N`), `PROMETHEUS_MULTIPROC_DIR` is
  set and prometheus-client's multiprocess mode sums them on every scrape.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trainyard.api.inventory import NodeCapacity, NodeInventory
from trainyard.api.quota_view import queue_quotas
from trainyard.config import Settings
from trainyard.layout import ensure_private_dir, run_dir
from trainyard.observability import catalog
from trainyard.observability.cycles import STATS_NAME, reason_label
from trainyard.quotas import quota_file
from trainyard.scheduler.types import ReasonCode
from trainyard.store import JobState, count_jobs_by_state, now_us, read_transaction
from trainyard.store.estimates import expected_waits
from trainyard.store.telemetry import (
    HistogramCounts,
    UsageTotals,
    active_allocations,
    admission_counts,
    duration_histograms,
    finished_counts,
    live_job_counts,
    preemption_counts,
    read_loop_stats,
    retry_counts,
    usage_totals,
    wait_histograms,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Rows whose time (first start, finish, attempt end) is older than this are final and
# committed (no transaction runs this long): counted once per process, then cached.
STABLE_AFTER_US = 60_000_000


class _Settled:
    """Aggregates over rows that can no longer change, extended as time passes.

    Waits (first start), durations (finish) and ended attempts' usage are fixed once
    written. Counting all of them at every scrape would cost seconds at 100,000 jobs;
    instead [-inf, until) is counted once, then extended, and only [until, now) and the
    running attempts are counted per scrape. Every process converges on the same totals.
    """

    def __init__(self) -> None:
        self.until: int | None = None
        self.waits: dict[str, HistogramCounts] = {}
        self.durations: dict[str, HistogramCounts] = {}
        self.usage: dict[tuple[str, str, str | None], UsageTotals] = {}
        self.admissions: dict[str, int] = {}
        self.preemptions: dict[str, int] = {}
        self.finished: dict[tuple[str, str], int] = {}

    def advance(self, conn: Any, horizon: int, *, now: int) -> None:
        if self.until is not None and horizon <= self.until:
            return
        since = self.until
        waits = wait_histograms(conn, bounds=catalog.WAIT_BUCKETS, since=since, before=horizon)
        durations = duration_histograms(
            conn, bounds=catalog.DURATION_BUCKETS, since=since, before=horizon
        )
        usage = usage_totals(
            conn, now_us=now, ended_since=since, ended_before=horizon, running=False
        )
        _add_histograms(self.waits, waits)
        _add_histograms(self.durations, durations)
        self.usage = _add_usage(self.usage, usage)
        _add_counts(self.admissions, admission_counts(conn, since=since, before=horizon))
        _add_counts(self.preemptions, preemption_counts(conn, since=since, before=horizon))
        _add_counts(self.finished, finished_counts(conn, since=since, before=horizon))
        self.until = horizon


def _add_counts(into: dict[Any, int], more: dict[Any, int]) -> dict[Any, int]:
    for key, count in more.items():
        into[key] = into.get(key, 0) + count
    return into


def _add_histograms(
    into: dict[str, HistogramCounts], more: dict[str, HistogramCounts]
) -> dict[str, HistogramCounts]:
    for key, counts in more.items():
        into[key] = into[key] + counts if key in into else counts
    return into


def _add_usage(
    into: dict[tuple[str, str, str | None], UsageTotals], more: Iterable[UsageTotals]
) -> dict[tuple[str, str, str | None], UsageTotals]:
    result = dict(into)
    for u in more:
        key = (u.queue, u.owner, u.model)
        old = result.get(key)
        if old is not None:
            u = UsageTotals(
                u.queue,
                u.owner,
                u.model,
                old.gpu_seconds + u.gpu_seconds,
                old.tpu_chip_seconds + u.tpu_chip_seconds,
                old.cpu_core_seconds + u.cpu_core_seconds,
            )
        result[key] = u
    return result


def prepare_multiprocess_dir(home: Path) -> Path:
    """A fresh directory for prometheus-client's multiprocess files, under $TRAINYARD_HOME/run.

    Set as PROMETHEUS_MULTIPROC_DIR before the server processes start, so every process
    writes its request counters there and any process's /metrics sums them all. Files
    left by an earlier run are removed: their counts belong to processes that are gone
    (counters restarting at zero is what Prometheus expects of a restart).
    """
    directory = ensure_private_dir(run_dir(home) / "prometheus")
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
    return directory


KINDS = ("training", "inference")
SPECS = catalog.by_name()


def _gauge(name: str) -> GaugeMetricFamily:
    spec = SPECS[name]
    return GaugeMetricFamily(name, spec.help, labels=list(spec.labels))


def _counter(name: str) -> CounterMetricFamily:
    spec = SPECS[name]
    return CounterMetricFamily(name, spec.help, labels=list(spec.labels))


def _histogram(
    counts: HistogramCounts | None, bounds: Sequence[float]
) -> tuple[list[tuple[str, float]], float]:
    """(cumulative buckets with +Inf, sum) for HistogramMetricFamily.add_metric."""
    counts = counts or HistogramCounts(buckets=(0,) * len(bounds), count=0, sum=0.0)
    buckets = [(_le(b), float(c)) for b, c in zip(bounds, counts.buckets, strict=True)]
    buckets.append(("+Inf", float(counts.count)))
    return buckets, counts.sum


def _le(bound: float) -> str:
    return repr(float(bound))


class StoreCollector(Collector):
    """Every job, cluster and loop series of the catalog, read from the store."""

    def __init__(
        self,
        engine: Engine,
        *,
        queues: Sequence[str],
        priority_classes: Sequence[str],
        inventory: NodeInventory | None,
        cache_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._queues = tuple(queues)
        self._priorities = tuple(priority_classes)
        self._inventory = inventory
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None
        self._settled = _Settled()

    def describe(self) -> Iterable[Metric]:
        return []  # computed at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if self._cached is None or self._clock() - self._cached[0] >= self._cache_seconds:
                self._cached = (self._clock(), self._compute())
            metrics = self._cached[1]
        yield from metrics

    def _nodes(self) -> list[NodeCapacity]:
        if self._inventory is None:
            return []
        try:
            return list(self._inventory.nodes())
        except Exception:  # an unreachable cluster API must not break /metrics
            return []

    def _compute(self) -> list[Metric]:
        nodes = self._nodes()
        at = now_us()
        settled = self._settled
        with read_transaction(self._engine) as conn:
            live = live_job_counts(conn)
            retries = retry_counts(conn)
            settled.advance(conn, at - STABLE_AFTER_US, now=at)
            recent = settled.until
            admissions = _add_counts(dict(settled.admissions), admission_counts(conn, since=recent))
            preemptions = _add_counts(
                dict(settled.preemptions), preemption_counts(conn, since=recent)
            )
            finished = _add_counts(dict(settled.finished), finished_counts(conn, since=recent))
            waits = _add_histograms(
                dict(settled.waits),
                wait_histograms(conn, bounds=catalog.WAIT_BUCKETS, since=recent),
            )
            durations = _add_histograms(
                dict(settled.durations),
                duration_histograms(conn, bounds=catalog.DURATION_BUCKETS, since=recent),
            )
            usage = list(
                _add_usage(
                    settled.usage, usage_totals(conn, now_us=at, ended_since=recent)
                ).values()
            )
            allocations = active_allocations(conn)
            loop = read_loop_stats(conn, name=STATS_NAME) or {}
        queues = sorted(
            set(self._queues)
            | {c.queue for c in live}
            | set(admissions)
            | {q for q, _ in finished}
            | set(waits)
        )
        out: list[Metric] = []
        out += self._job_gauges(live, queues, at)
        out += self._job_counters(admissions, preemptions, retries, finished, queues)
        out += self._job_histograms(waits, durations, queues)
        out += self._loop_series(loop, queues)
        out += self._cluster_series(nodes, allocations, queues)
        out += self._usage_series(usage, queues)
        return out

    def _job_gauges(self, live: list[Any], queues: list[str], at: int) -> list[Metric]:
        pending = _gauge("trainyard_queue_pending_jobs")
        oldest = _gauge("trainyard_queue_oldest_pending_seconds")
        running = _gauge("trainyard_jobs_running")
        admitted = _gauge("trainyard_jobs_admitted")
        per_pending: dict[tuple[str, str, str], int] = {
            (q, p, k): 0 for q in queues for p in self._priorities for k in KINDS
        }
        oldest_at: dict[str, int] = {}
        per_state: dict[tuple[str, str], int] = defaultdict(int)
        for c in live:
            if c.state == JobState.PENDING.value:
                key = (c.queue, c.priority, c.kind)
                per_pending[key] = per_pending.get(key, 0) + c.count
                oldest_at[c.queue] = min(
                    oldest_at.get(c.queue, c.oldest_created_at), c.oldest_created_at
                )
            else:
                per_state[(c.queue, c.state)] += c.count
        for (queue, priority, kind), count in sorted(per_pending.items()):
            pending.add_metric([queue, priority, kind], count)
        for queue in queues:
            first = oldest_at.get(queue)
            oldest.add_metric([queue], 0.0 if first is None else max(0, at - first) / 1e6)
            running.add_metric([queue], per_state[(queue, JobState.RUNNING.value)])
            admitted.add_metric([queue], per_state[(queue, JobState.ADMITTED.value)])
        return [pending, oldest, running, admitted]

    def _job_counters(
        self,
        admissions: dict[str, int],
        preemptions: dict[str, int],
        retries: dict[str, int],
        finished: dict[tuple[str, str], int],
        queues: list[str],
    ) -> list[Metric]:
        zeros = dict.fromkeys(queues, 0)
        admissions, preemptions = {**zeros, **admissions}, {**zeros, **preemptions}
        result = []
        for name, values in (
            ("trainyard_admissions_total", admissions),
            ("trainyard_preemptions_total", preemptions),
            ("trainyard_job_retries_total", {**dict.fromkeys(queues, 0), **retries}),
        ):
            family = _counter(name)
            for queue, count in sorted(values.items()):
                family.add_metric([queue], count)
            result.append(family)
        family = _counter("trainyard_job_finished_total")
        per_outcome = {(q, o): 0 for q in queues for o in catalog.OUTCOMES}
        for (queue, outcome), count in sorted({**per_outcome, **finished}.items()):
            family.add_metric([queue, outcome], count)
        result.append(family)
        return result

    def _job_histograms(
        self,
        waits: dict[str, HistogramCounts],
        durations: dict[str, HistogramCounts],
        queues: list[str],
    ) -> list[Metric]:
        spec = SPECS["trainyard_job_wait_seconds"]
        wait = HistogramMetricFamily(spec.name, spec.help, labels=["queue"])
        for queue in queues:
            buckets, total = _histogram(waits.get(queue), catalog.WAIT_BUCKETS)
            wait.add_metric([queue], buckets, total)
        spec = SPECS["trainyard_job_duration_seconds"]
        duration = HistogramMetricFamily(spec.name, spec.help, labels=["outcome"])
        for outcome in catalog.OUTCOMES:
            buckets, total = _histogram(durations.get(outcome), catalog.DURATION_BUCKETS)
            duration.add_metric([outcome], buckets, total)
        return [wait, duration]

    def _loop_series(self, loop: dict[str, Any], queues: list[str]) -> list[Metric]:
        spec = SPECS["trainyard_scheduling_cycle_seconds"]
        cycle = HistogramMetricFamily(spec.name, spec.help)
        bounds = loop.get("bounds") or list(catalog.CYCLE_BUCKETS)
        per_bucket = loop.get("buckets") or [0] * len(bounds)
        cumulative, running_total = [], 0
        for bound, count in zip(bounds, per_bucket, strict=True):
            running_total += int(count)
            cumulative.append((_le(bound), float(running_total)))
        cumulative.append(("+Inf", float(loop.get("cycles", 0))))
        cycle.add_metric([], cumulative, float(loop.get("sum", 0.0)))
        decisions = _counter("trainyard_scheduling_decisions_total")
        counts = {**dict.fromkeys(catalog.DECISION_RESULTS, 0), **(loop.get("decisions") or {})}
        for result, count in sorted(counts.items()):
            decisions.add_metric([result], count)
        last = _gauge("trainyard_scheduling_last_cycle_timestamp_seconds")
        last.add_metric([], (loop.get("last_cycle_us") or 0) / 1e6)
        unschedulable = _gauge("trainyard_unschedulable_jobs")
        snapshot = {(q, reason_label(code)): 0 for q in queues for code in ReasonCode}
        for queue, reason, count in loop.get("pending") or []:
            snapshot[(queue, reason)] = int(count)
        for (queue, reason), count in sorted(snapshot.items()):
            unschedulable.add_metric([queue, reason], count)
        return [cycle, decisions, last, unschedulable]

    def _cluster_series(
        self, nodes: list[NodeCapacity], allocations: list[Any], queues: list[str]
    ) -> list[Metric]:
        capacity: dict[tuple[str, str], float] = {("cpu", ""): 0.0, ("memory", ""): 0.0}
        for node in nodes:
            capacity[("cpu", "")] += node.cpu_millicores / 1000
            capacity[("memory", "")] += node.memory_bytes
            if node.gpu:
                key = ("gpu", node.gpu_model or "unknown")
                capacity[key] = capacity.get(key, 0.0) + node.gpu
            if node.tpu:
                key = ("tpu", node.tpu_type or "unknown")
                capacity[key] = capacity.get(key, 0.0) + node.tpu
        for resource in ("gpu", "tpu"):
            if not any(r == resource for r, _ in capacity):
                capacity[(resource, "")] = 0.0
        allocated: dict[tuple[str, str, str], float] = {
            (resource, model, queue): 0.0 for (resource, model) in capacity for queue in queues
        }
        node_models = {
            node.name: (node.gpu_model if node.gpu else None, node.tpu_type if node.tpu else None)
            for node in nodes
        }
        for a in allocations:
            # The model of the node the workers were placed on; the attempt's requested
            # model where the node is not (or no longer) listed.
            gpu_model, tpu_type = node_models.get(a.node or "", (None, None))
            model = (gpu_model if a.gpus else tpu_type if a.tpu_chips else None) or a.model or ""
            for resource, amount in (
                ("cpu", a.cpu_millicores / 1000),
                ("memory", float(a.memory_bytes)),
                ("gpu", float(a.gpus)),
                ("tpu", float(a.tpu_chips)),
            ):
                if resource in ("cpu", "memory"):
                    key = (resource, "", a.queue)
                elif amount:
                    key = (resource, model or "unknown", a.queue)
                else:
                    continue
                allocated[key] = allocated.get(key, 0.0) + amount
        cap = _gauge("trainyard_cluster_capacity")
        for (resource, model), value in sorted(capacity.items()):
            cap.add_metric([resource, model], value)
        alloc = _gauge("trainyard_cluster_allocated")
        for (resource, model, queue), value in sorted(allocated.items()):
            alloc.add_metric([resource, model, queue], value)
        return [cap, alloc]

    def _usage_series(self, usage: list[Any], queues: list[str]) -> list[Metric]:
        gpu: dict[tuple[str, str, str], float] = {(q, "", ""): 0.0 for q in queues}
        cpu: dict[tuple[str, str], float] = {(q, ""): 0.0 for q in queues}
        for u in usage:
            if u.gpu_seconds:
                key = (u.queue, u.owner, u.model or "unknown")
                gpu[key] = gpu.get(key, 0.0) + u.gpu_seconds / 3600
            cpu[(u.queue, u.owner)] = cpu.get((u.queue, u.owner), 0.0) + u.cpu_core_seconds / 3600
        gpu_family = _counter("trainyard_gpu_hours_total")
        for labels, value in sorted(gpu.items()):
            gpu_family.add_metric(list(labels), value)
        cpu_family = _counter("trainyard_cpu_core_hours_total")
        for labels, value in sorted(cpu.items()):
            cpu_family.add_metric(list(labels), value)
        return [gpu_family, cpu_family]


class _JobsCollector(Collector):
    """Jobs per queue and state, counted in the store at scrape time (not per process)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def describe(self) -> Iterable[Metric]:
        return []

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
    """The per-process counters the API updates, and the registry /metrics exposes."""

    def __init__(
        self,
        engine: Engine,
        *,
        queues: Sequence[str] = ("default",),
        priority_classes: Sequence[str] = ("low", "normal", "high"),
        inventory: NodeInventory | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        multiproc_dir = os.environ.get(MULTIPROC_ENV)
        # In multiprocess mode the values live in files shared by the server processes and
        # are exposed (summed) by MultiProcessCollector only; registering the objects here
        # too would expose this process's share a second time.
        own = None if multiproc_dir else self.registry
        if multiproc_dir:
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(self.registry, path=multiproc_dir)
        self.submitted = Counter(
            "trainyard_jobs_submitted_total",
            "Jobs accepted by POST /v1/jobs (idempotent replays not counted)",
            ["queue"],
            registry=own,
        )
        self.cancelled = Counter(
            "trainyard_jobs_cancelled_total", "Jobs cancelled through the API", registry=own
        )
        spec = SPECS["trainyard_api_requests_total"]
        self.requests = Counter(spec.name, spec.help, list(spec.labels), registry=own)
        spec = SPECS["trainyard_api_request_duration_seconds"]
        self.latency = Histogram(
            spec.name, spec.help, list(spec.labels), registry=own, buckets=catalog.API_BUCKETS
        )
        self.registry.register(_JobsCollector(engine))
        self.registry.register(
            StoreCollector(
                engine, queues=queues, priority_classes=priority_classes, inventory=inventory
            )
        )
        if settings is not None and settings.quota_file is not None:
            self.registry.register(_QuotaCollector(engine, settings))
        self._submitted_by_queue: dict[str, Any] = {}
        self._request_children: dict[tuple[str, str, str], Any] = {}
        self._latency_children: dict[tuple[str, str, str], Any] = {}
        for queue in queues:  # exist at zero from the first scrape
            self.submitted_in(queue)
        self.observe_request("GET", "/healthz", 200, None)

    def submitted_in(self, queue: str) -> Any:
        """The submissions counter of `queue` (children cached: .labels() is not free)."""
        child = self._submitted_by_queue.get(queue)
        if child is None:
            child = self._submitted_by_queue[queue] = self.submitted.labels(queue=queue)
        return child

    def observe_request(self, method: str, route: str, status: int, seconds: float | None) -> None:
        """Count one request; `seconds` None only creates the series."""
        key = (method, route, str(status))
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(*key)
        latency = self._latency_children.get(key)
        if latency is None:
            latency = self._latency_children[key] = self.latency.labels(*key)
        if seconds is not None:
            counter.inc()
            latency.observe(seconds)


_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class RequestMetricsMiddleware:
    """Counts every HTTP request by method, route template and status, with its latency.

    The route is the matched template (`/v1/jobs/{job_id}`), never the raw path, and
    anything that matched no route is "unmatched": label values stay bounded whatever
    clients send.
    """

    def __init__(self, app: ASGIApp, metrics: Callable[[], ApiMetrics | None]) -> None:
        self.app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            metrics = self._metrics()
            if metrics is not None:
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                method = scope.get("method", "GET")
                method = method if method in _METHODS else "OTHER"
                metrics.observe_request(method, template, status, time.perf_counter() - started)
