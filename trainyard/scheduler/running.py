"""Running jobs as the core tracks them: what they hold and when they should end."""

from __future__ import annotations

from dataclasses import dataclass, field

from sortedcontainers import SortedList

from trainyard.scheduler.capacity import Allocation
from trainyard.scheduler.types import WorkerRequest


@dataclass(slots=True, eq=False)
class Placed:
    """A running job with its live allocations in the capacity index."""

    job_id: str
    request: WorkerRequest
    allocations: list[Allocation]
    start_time: float
    queue: str = "default"
    priority: int = 0
    preemptible: bool = True
    expected_end: float | None = None
    last_checkpoint: float | None = None
    estimated_end: float | None = None  # start + estimated runtime (learned policies only)
    attained_before: float = 0.0  # GPU-seconds of service received in earlier runs
    gpus: float = field(default=0.0, init=False)  # GPUs held, shares as fractions

    def __post_init__(self) -> None:
        self.gpus = self.request.gpu_milli * self.workers / 1000.0

    @property
    def workers(self) -> int:
        return sum(a.count for a in self.allocations)

    def attained_gpu_seconds(self, now: float) -> float:
        """GPU-seconds of service received so far, this run included (LAS's measure)."""
        return self.attained_before + self.gpus * max(now - self.start_time, 0.0)

    def lost_gpu_seconds(self, now: float) -> float:
        """GPU-seconds of work a preemption now would throw away (since the last checkpoint)."""
        since = self.last_checkpoint if self.last_checkpoint is not None else self.start_time
        return self.gpus * max(now - since, 0.0)


class RunningSet:
    """Running jobs by id, and by expected end for reservations."""

    def __init__(self) -> None:
        self.by_id: dict[str, Placed] = {}
        self.by_end: SortedList = SortedList()  # (expected_end, job_id)
        self.removals = 0  # lets derived views (VictimPool) tell whether they are stale
        self.changes = 0  # bumped by every add, remove and end change (see ReservationCache)

    def __len__(self) -> int:
        return len(self.by_id)

    def add(self, placed: Placed) -> None:
        if placed.job_id in self.by_id:
            raise ValueError(f"job {placed.job_id} is already running")
        self.by_id[placed.job_id] = placed
        self.changes += 1
        if placed.expected_end is not None:
            self.by_end.add((placed.expected_end, placed.job_id))

    def remove(self, job_id: str) -> Placed:
        placed = self.by_id.pop(job_id)
        self.removals += 1
        self.changes += 1
        if placed.expected_end is not None:
            self.by_end.remove((placed.expected_end, job_id))
        return placed

    def move_end(self, job_id: str, expected_end: float) -> None:
        """Change a running job's expected end (a job that outlived its estimate)."""
        placed = self.by_id[job_id]
        if placed.expected_end is not None:
            self.by_end.remove((placed.expected_end, job_id))
        placed.expected_end = expected_end
        self.by_end.add((expected_end, job_id))
        self.changes += 1
