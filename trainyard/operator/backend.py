"""The backend contract: what the scheduling loop needs from wherever workers run.

Two implementations: `local` (worker process groups on this machine) and `kubernetes`
(pods bound to nodes). The loop is level-triggered, so the contract is small and every
call is idempotent:

- `nodes()`: the capacity snapshot the core schedules on (scheduler `Node`s, with the
  usage of work the loop does not manage in `used_*`).
- `workers()`: every worker of ours the backend knows about, of any job and attempt,
  with its phase. Cheap: served from a cache kept current by watches or a reaper.
- `launch(gang)`: make the gang's missing workers exist (workers of this attempt
  that already exist are left alone, so a launch repeated after a crash is harmless).
- `stop(job_id, grace)`: SIGTERM-equivalent to every live worker of the job, a hard
  kill once the grace period is over; records of exited workers are dropped. Called
  again every cycle until `workers()` shows nothing of the job.
- `stop_worker(job_id, attempt, index, grace)` (optional): the same for ONE worker, a
  model service replica that a rolling update or a scale-down retires; True once
  nothing of it is left. Without it a backend cannot roll or resize services.

Worker identity is (job id, attempt, index): deterministic, so "create what exists" is
detected and "stop what is gone" is a no-op.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from trainyard.scheduler.types import Node


class WorkerPhase(enum.StrEnum):
    """A worker's life as the backend observes it."""

    STARTING = "STARTING"  # created (process spawned / pod bound), not running yet
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"  # exited 0
    FAILED = "FAILED"  # exited non-zero, could not start, or its node was lost

    @property
    def exited(self) -> bool:
        return self in (WorkerPhase.SUCCEEDED, WorkerPhase.FAILED)


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """One worker as observed.

    `message` says what was seen in words a user understands ("exited 1",
    "executable not found: trainx", "killed by signal 9", "node gpu-3 NotReady for
    60s"); `stopping` is true once a stop was issued for it.
    """

    job_id: str
    attempt: int
    index: int
    node: str
    phase: WorkerPhase
    exit_code: int | None = None
    message: str = ""
    stopping: bool = False
    # Where the worker serves Prometheus metrics, when it does ("127.0.0.1:9412").
    metrics_address: str | None = None
    # Where a model service replica answers /predict and /healthz when that is not its
    # metrics address (a pod: pod IP and its "http" port); None: the metrics address.
    serve_address: str | None = None
    # The backend's own readiness verdict for a model service replica (a pod's Ready
    # condition, from the kubelet's readiness probe on /healthz); None where the loop
    # probes the replica itself (the local backend).
    ready: bool | None = None


@dataclass(frozen=True, slots=True)
class WorkerLaunch:
    """What one worker runs: an argument list (never a shell string) and its environment."""

    index: int
    node: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    gpus: int = 0
    tpu_chips: int = 0
    cpu_millicores: int = 0
    memory_bytes: int = 0


@dataclass(frozen=True, slots=True)
class GangLaunch:
    """Every worker of one attempt of a job, to be created together."""

    job_id: str
    attempt: int
    name: str
    queue: str
    owner: str
    workers: tuple[WorkerLaunch, ...]
    image: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    # The stored job document, for backend-specific fields (tolerations, volumes, ...).
    spec: Mapping[str, object] = field(default_factory=dict)


class LaunchError(Exception):
    """A gang could not be created. `permanent`: retrying cannot help (bad image, a pod
    the apiserver refuses) and the job should fail with `reason`; otherwise it goes back
    to PENDING and is tried again."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class Backend(Protocol):
    """Where workers run. See the module docstring for the contract of each call."""

    name: str

    def start(self, wake: Callable[[], None]) -> None:
        """Begin observing (watches, reaping); call `wake()` whenever a worker or node
        changes, so the loop runs a cycle at once instead of at its next period."""
        ...

    def nodes(self) -> Sequence[Node]: ...

    def workers(self) -> Sequence[WorkerStatus]: ...

    def launch(self, gang: GangLaunch) -> None: ...

    def stop(self, job_id: str, *, grace_seconds: float, reason: str) -> None: ...

    def log_tail(self, job_id: str, index: int, *, lines: int = 20) -> str:
        """The last lines a worker wrote (for a failure's reason); "" when unknown."""
        ...

    def rendezvous(self, job_id: str, attempt: int) -> tuple[str, int]:
        """(address, port) of worker 0's rendezvous for this attempt; stable across calls
        and restarts for the same attempt."""
        ...

    def close(self) -> None: ...


class Leadership(Protocol):
    """Whether this process may act on the store/cluster now.

    The loop checks `is_leader()` before every batch of actions, not only at start, so a
    process that lost its lease stops launching at once. Implemented by a lease row in
    the store (`trainyard.operator.lease`) and by a coordination.k8s.io Lease.
    """

    def start(self) -> None: ...

    def is_leader(self) -> bool: ...

    def stop(self) -> None: ...
