"""How the scheduling loop reports its own metrics: `CycleRecorder.record_cycle`.

The loop runs in its own process (and on one replica only), while /metrics is served
by every API process. So the loop does not keep prometheus-client objects of its own:
it adds each cycle's duration and decision counts to a cumulative document in the store
(`loop_stats`, one row), at most about once a second, and every API process exposes that
document. The counters are cumulative in the store, so they survive restarts and a
change of leader, and all API processes report identical values.

Use from the loop::

    recorder = CycleRecorder(engine)
    ...
    recorder.record_cycle(elapsed, {"admitted": 3, "preempted": 1},
                          pending=count_pending_reasons(result.pending, queue_of))
    ...
    recorder.flush()   # at shutdown
"""

from __future__ import annotations

import bisect
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Engine

from trainyard.observability.catalog import CYCLE_BUCKETS
from trainyard.store import now_us, write_transaction
from trainyard.store.telemetry import merge_loop_stats

STATS_NAME = "scheduler"
# Pending reasons that mean "capacity", as opposed to a policy holding the job back.
NO_FIT_REASONS = frozenset({"never_fits", "insufficient_capacity"})
_LABEL_VALUE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def reason_label(code: Any) -> str:
    """A scheduler ReasonCode (or its name) as a metric label: NEVER_FITS -> never_fits."""
    name = getattr(code, "name", code)
    return str(name).lower()


def count_pending_reasons(
    pending: Mapping[str, Any], queue_of: Callable[[str], str | None]
) -> dict[tuple[str, str], int]:
    """Count a cycle's pending reasons (job id -> PendingReason) per (queue, reason)."""
    counts: Counter[tuple[str, str]] = Counter()
    for job_id, reason in pending.items():
        queue = queue_of(job_id)
        if queue is not None:
            counts[(queue, reason_label(reason.code))] += 1
    return dict(counts)


class CycleRecorder:
    """Accumulates cycles in memory and adds them to the store at most every `interval_s`.

    Thread-safe. A failed flush keeps the pending deltas for the next one (losing the
    metrics must never cost the loop a cycle), so nothing is counted twice or dropped.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._interval = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_flush = float("-inf")
        self._reset()

    def _reset(self) -> None:
        self._cycles = 0
        self._sum = 0.0
        self._buckets = [0] * len(CYCLE_BUCKETS)
        self._decisions: Counter[str] = Counter()
        self._pending: dict[tuple[str, str], int] | None = None
        self._last_cycle_us: int | None = None

    def record_cycle(
        self,
        duration_s: float,
        decisions: Mapping[str, int],
        *,
        pending: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        """Count one cycle: its duration, its decisions by result ("admitted": 3, ...) and,
        optionally, the pending jobs per (queue, reason) it left (a snapshot: replaces the
        previous one). Flushes to the store when the interval has passed."""
        with self._lock:
            self._cycles += 1
            self._sum += max(0.0, duration_s)
            index = bisect.bisect_left(CYCLE_BUCKETS, duration_s)
            if index < len(self._buckets):
                self._buckets[index] += 1  # per-bucket here; made cumulative on exposition
            for result, count in decisions.items():
                if count and _LABEL_VALUE.match(result):
                    self._decisions[result] += int(count)
            if pending is not None:
                self._pending = {k: int(v) for k, v in pending.items()}
            self._last_cycle_us = now_us()
            due = self._clock() - self._last_flush >= self._interval
        if due:
            self.flush()

    def record_report(self, report: Any) -> None:
        """Count one `SchedulingLoop.cycle()` report (duck-typed: total_s, admitted,
        preempted and, when the loop provides it, pending_reasons)."""
        pending = getattr(report, "pending_reasons", None)
        decisions = {
            "admitted": len(report.admitted),
            "preempted": len(report.preempted),
        }
        if pending is not None:
            for (_queue, reason), count in pending.items():
                result = "no_fit" if reason in NO_FIT_REASONS else "blocked"
                decisions[result] = decisions.get(result, 0) + count
        self.record_cycle(report.total_s, decisions, pending=pending)

    def flush(self) -> None:
        """Add what was recorded since the last flush to the store document."""
        with self._lock:
            if self._cycles == 0:
                return
            delta = (
                self._cycles,
                self._sum,
                list(self._buckets),
                dict(self._decisions),
                self._pending,
                self._last_cycle_us,
            )
            self._reset()
            self._last_flush = self._clock()
        try:
            with write_transaction(self._engine) as conn:
                merge_loop_stats(
                    conn, name=STATS_NAME, at=now_us(), merge=lambda doc: _merged(doc, *delta)
                )
        except Exception:
            with self._lock:  # keep the counts for the next flush
                self._restore(*delta)
            raise

    def _restore(
        self,
        cycles: int,
        total: float,
        buckets: list[int],
        decisions: dict[str, int],
        pending: dict[tuple[str, str], int] | None,
        last_cycle_us: int | None,
    ) -> None:
        self._cycles += cycles
        self._sum += total
        self._buckets = [a + b for a, b in zip(self._buckets, buckets, strict=True)]
        self._decisions.update(decisions)
        if self._pending is None:
            self._pending = pending
        if self._last_cycle_us is None:
            self._last_cycle_us = last_cycle_us


def _merged(
    current: dict[str, Any] | None,
    cycles: int,
    total: float,
    buckets: list[int],
    decisions: dict[str, int],
    pending: dict[tuple[str, str], int] | None,
    last_cycle_us: int | None,
) -> dict[str, Any]:
    doc = current or {}
    stored = list(doc.get("buckets") or [0] * len(CYCLE_BUCKETS))
    if len(stored) != len(buckets):  # the bucket layout changed: start the histogram over
        stored, doc = [0] * len(buckets), {**doc, "cycles": 0, "sum": 0.0}
    merged_decisions = Counter(doc.get("decisions") or {})
    merged_decisions.update(decisions)
    result = {
        "cycles": int(doc.get("cycles", 0)) + cycles,
        "sum": float(doc.get("sum", 0.0)) + total,
        "buckets": [a + b for a, b in zip(stored, buckets, strict=True)],
        "bounds": list(CYCLE_BUCKETS),
        "decisions": dict(merged_decisions),
        "pending": doc.get("pending") or [],
        "last_cycle_us": last_cycle_us or doc.get("last_cycle_us"),
    }
    if pending is not None:
        result["pending"] = [[queue, reason, count] for (queue, reason), count in pending.items()]
    return result
