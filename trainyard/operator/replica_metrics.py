"""Scrapes model-service replicas' own `/metrics`, from a thread, for the autoscaler.

Like the health prober, the loop never waits on a replica: `window()` answers at once
from the scrapes already taken. Each round reads every wanted replica's latency
histogram and in-flight gauge; a window is the rounds taken since a given time (the
autoscaler's last change, so a decision never counts traffic the old size served) and
within the last `window_seconds`.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

LATENCY = "trainyard_worker_inference_latency_seconds"
INFLIGHT = "trainyard_worker_inference_inflight"


@dataclass(frozen=True, slots=True)
class Sample:
    """One replica's numbers at one scrape."""

    buckets: tuple[tuple[float, float], ...]  # cumulative (upper bound, count)
    inflight: float


def parse_metrics(text: str) -> Sample:
    """The latency buckets and in-flight gauge out of Prometheus text (summed over ranks)."""
    buckets: dict[float, float] = {}
    inflight = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == LATENCY:
            for sample in family.samples:
                if sample.name == f"{LATENCY}_bucket":
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + float(sample.value)
        elif family.name == INFLIGHT:
            inflight += sum(float(s.value) for s in family.samples)
    return Sample(tuple(sorted(buckets.items())), inflight)


@dataclass(frozen=True, slots=True)
class Window:
    latency_delta: tuple[tuple[float, float], ...]
    inflight_samples: tuple[float, ...]  # per round: the sum over the replicas
    rounds: int


class ReplicaScraper:
    """Scrapes the wanted addresses every `interval_seconds`; keeps `window_seconds`."""

    def __init__(
        self,
        *,
        interval_seconds: float = 0.5,
        window_seconds: float = 10.0,
        timeout_seconds: float = 1.0,
    ) -> None:
        self.interval_seconds = interval_seconds
        self.window_seconds = window_seconds
        self.timeout_seconds = timeout_seconds
        self._lock = threading.Lock()
        self._wanted: dict[str, tuple[str, ...]] = {}  # job id -> addresses
        self._rounds: dict[str, deque[tuple[float, dict[str, Sample]]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def want(self, job_id: str, addresses: Iterable[str]) -> None:
        wanted = tuple(sorted(addresses))
        with self._lock:
            if self._wanted.get(job_id) != wanted:
                self._wanted[job_id] = wanted
                self._rounds[job_id] = deque()  # another set of replicas: start afresh
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="replica-scraper", daemon=True)
            self._thread.start()

    def drop_except(self, job_ids: Iterable[str]) -> None:
        keep = set(job_ids)
        with self._lock:
            for job_id in [j for j in self._wanted if j not in keep]:
                del self._wanted[job_id]
                self._rounds.pop(job_id, None)

    def window(self, job_id: str, *, since: float) -> Window:
        """The scrapes of this job's replicas taken after `since` (seconds since the
        epoch) and within the window: latency bucket deltas and in-flight sums."""
        with self._lock:
            rounds = [r for r in self._rounds.get(job_id, ()) if r[0] >= since]
        if not rounds:
            return Window((), (), 0)
        inflight = tuple(sum(s.inflight for s in samples.values()) for _, samples in rounds)
        first, last = rounds[0][1], rounds[-1][1]
        delta: dict[float, float] = {}
        for address, end in last.items():
            start = first.get(address)
            before = dict(start.buckets) if start is not None and len(rounds) > 1 else {}
            for bound, count in end.buckets:
                delta[bound] = delta.get(bound, 0.0) + count - before.get(bound, 0.0)
        return Window(tuple(sorted(delta.items())), inflight, len(rounds))

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            with self._lock:
                wanted = dict(self._wanted)
            for job_id, addresses in wanted.items():
                samples = {}
                for address in addresses:
                    sample = self._scrape(address)
                    if sample is not None:
                        samples[address] = sample
                at = time.time()
                with self._lock:
                    rounds = self._rounds.get(job_id)
                    if rounds is None or self._wanted.get(job_id) != addresses:
                        continue
                    rounds.append((at, samples))
                    while rounds and rounds[0][0] < at - self.window_seconds:
                        rounds.popleft()

    def _scrape(self, address: str) -> Sample | None:
        try:
            with urllib.request.urlopen(
                f"http://{address}/metrics", timeout=self.timeout_seconds
            ) as response:
                return parse_metrics(response.read().decode())
        except Exception:  # a replica starting or going: no sample this round
            return None
