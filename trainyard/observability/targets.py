"""Persisting where workers serve metrics, for `/v1/metrics/targets` (Prometheus http_sd).

The backend reports each worker's `metrics_address` (`WorkerStatus`); the loop hands
every cycle's worker list to `TargetsRecorder.observe`, which writes
`job_attempts.metrics_targets` only for attempts whose addresses changed since it last
wrote them (one transaction for all of them), so a steady cluster costs no writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from sqlalchemy import Engine

from trainyard.store import write_transaction
from trainyard.store.telemetry import set_metrics_targets


class ObservedWorker(Protocol):
    """What is read of a backend's WorkerStatus."""

    job_id: str
    attempt: int
    index: int
    metrics_address: str | None


class TargetsRecorder:
    """Remembers what it wrote; writes only the attempts whose targets changed."""

    def __init__(self, engine: Engine, *, remember: int = 100_000) -> None:
        self._engine = engine
        self._written: dict[tuple[str, int], dict[int, str]] = {}
        self._remember = remember

    def observe(self, workers: Iterable[ObservedWorker]) -> int:
        """Record the addresses of live workers; returns how many attempts were written."""
        current: dict[tuple[str, int], dict[int, str]] = {}
        for worker in workers:
            exited = getattr(getattr(worker, "phase", None), "exited", False)
            if worker.metrics_address and not exited:
                key = (worker.job_id, worker.attempt)
                current.setdefault(key, {})[worker.index] = worker.metrics_address
        changed = {
            key: targets for key, targets in current.items() if self._written.get(key) != targets
        }
        if changed:
            with write_transaction(self._engine) as conn:
                for (job_id, attempt), targets in changed.items():
                    set_metrics_targets(conn, job_id=job_id, attempt=attempt, targets=targets)
        # Forget attempts whose workers are gone (their rows keep the last addresses; the
        # route lists RUNNING jobs' current attempts only).
        self._written = {key: self._written.get(key, {}) for key in current} | changed
        if len(self._written) > self._remember:  # pragma: no cover - a safety bound
            self._written = dict(changed)
        return len(changed)
