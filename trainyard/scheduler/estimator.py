"""Runtime estimates learned online from the jobs that have finished.

Helios (SC'21) found that a job's runtime is best predicted by recent jobs that look
like it: the same user running the same (or a similarly named) job at the same size,
and failing that, broader groups. This estimator keeps, for each such group, the
runtimes of its most recent finished jobs and answers from the most specific group
that has enough history (the fallback chain below), ending at the mean of everything.

It only ever learns from `observe` calls, so a replay that feeds it jobs as they end
never looks ahead. Everything is plain arithmetic on its own state: pure and
deterministic (no clock, no I/O).

Estimates are of the total run time; `remaining` turns one into the expected time left
for a job that has run for a while (a job that outlives its estimate is expected to run
as long again as it already has, never "zero left": it is never killed for it either).
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

_DIGITS = re.compile(r"[0-9]+")


def name_stem(name: str) -> str:
    """A job name with its numbers blanked: "bert-lr3-run17" ~ "bert-lr1-run02" (Helios'
    "similar name")."""
    return _DIGITS.sub("#", name.strip().lower())


@dataclass(frozen=True, slots=True)
class JobFeatures:
    """What is known about a job when it is submitted (the fields a trace has)."""

    owner: str = ""
    name: str = ""
    queue: str = "default"
    workload: str = ""
    gpus: float = 0.0  # in all workers together
    workers: int = 1
    kind: str = "training"


Level = tuple[str, Callable[[JobFeatures], Hashable | None]]

# Most specific first. A level whose key is None (e.g. no owner in the trace) is skipped.
FALLBACK_CHAIN: tuple[Level, ...] = (
    (
        "owner+name+size",
        lambda f: (f.owner, f.name, f.gpus, f.workers) if f.owner and f.name else None,
    ),
    (
        "owner+similar name+size",
        lambda f: (f.owner, name_stem(f.name), f.gpus) if f.owner and f.name else None,
    ),
    ("owner+similar name", lambda f: (f.owner, name_stem(f.name)) if f.owner and f.name else None),
    ("owner+size", lambda f: (f.owner, f.gpus, f.kind) if f.owner else None),
    ("queue+workload+size", lambda f: (f.queue, f.workload, f.gpus) if f.workload else None),
    ("queue+size", lambda f: (f.queue, f.gpus, f.kind)),
    ("owner", lambda f: f.owner or None),
    ("queue", lambda f: (f.queue, f.kind)),
    ("size", lambda f: (f.gpus, f.kind)),
)


@dataclass(frozen=True, slots=True)
class Estimate:
    seconds: float
    level: str  # which group of the fallback chain answered ("prior" if none)


class _Group:
    """The last `window` runtimes of one group, with their running sum of logs."""

    __slots__ = ("log_sum", "runs")

    def __init__(self, window: int) -> None:
        self.runs: deque[float] = deque(maxlen=window)
        self.log_sum = 0.0

    def add(self, seconds: float) -> None:
        if len(self.runs) == self.runs.maxlen:
            self.log_sum -= math.log(self.runs[0])
        self.runs.append(seconds)
        self.log_sum += math.log(seconds)

    def geometric_mean(self) -> float:
        return math.exp(self.log_sum / len(self.runs))


class RuntimeEstimator:
    """Online runtime estimates with a fallback chain (see module docstring).

    Each group answers with the geometric mean of its recent runtimes: runtimes are
    heavy-tailed (seconds to weeks in one group), where an arithmetic mean is dominated
    by the rare long job, while the geometric mean is the typical job's runtime, which
    is what relative-error accuracy (within 10/50/100 %) rewards."""

    def __init__(
        self,
        window: int = 32,
        min_runs: int = 2,
        prior_seconds: float = 3600.0,
        chain: Iterable[Level] = FALLBACK_CHAIN,
    ) -> None:
        if window < 1 or min_runs < 1:
            raise ValueError("window and min_runs must be >= 1")
        self.window = window
        self.min_runs = min_runs
        self.prior_seconds = prior_seconds
        self.chain = tuple(chain)
        self.groups: list[dict[Hashable, _Group]] = [{} for _ in self.chain]
        self.everything = _Group(window * 8)
        self.observed = 0

    def observe(self, features: JobFeatures, seconds: float) -> None:
        """Learn from a finished job's total run time."""
        seconds = max(float(seconds), 1.0)
        self.observed += 1
        for (_name, key_of), groups in zip(self.chain, self.groups, strict=True):
            key = key_of(features)
            if key is None:
                continue
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group(self.window)
            group.add(seconds)
        self.everything.add(seconds)

    def estimate(self, features: JobFeatures) -> Estimate:
        """Expected total run time of a job like `features`."""
        for (name, key_of), groups in zip(self.chain, self.groups, strict=True):
            key = key_of(features)
            if key is None:
                continue
            group = groups.get(key)
            if group is not None and len(group.runs) >= self.min_runs:
                return Estimate(group.geometric_mean(), name)
        if self.everything.runs:
            return Estimate(self.everything.geometric_mean(), "all")
        return Estimate(self.prior_seconds, "prior")


def remaining(estimate: float, elapsed: float) -> float:
    """Expected seconds left for a job estimated at `estimate` that has run `elapsed`."""
    left = estimate - elapsed
    return left if left > 0 else max(elapsed, 60.0)


@dataclass(frozen=True, slots=True)
class Accuracy:
    """Helios' accuracy table: share of estimates within 10 %, 50 % and 100 % error."""

    jobs: int
    within_10: float
    within_50: float
    within_100: float

    @staticmethod
    def of(pairs: Iterable[tuple[float, float]]) -> Accuracy:
        """From (estimate, actual) pairs; error = |estimate - actual| / actual."""
        n = a = b = c = 0
        for est, actual in pairs:
            n += 1
            err = abs(est - actual) / max(actual, 1.0)
            a += err <= 0.10
            b += err <= 0.50
            c += err <= 1.00
        if not n:
            return Accuracy(0, 0.0, 0.0, 0.0)
        return Accuracy(n, a / n, b / n, c / n)
