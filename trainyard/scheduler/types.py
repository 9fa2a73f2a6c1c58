"""The scheduling core's own input and output types.

The core imports nothing of Trainyard but these: the operator converts store rows and
Kubernetes nodes into them, the simulator builds them from traces. Every quantity is an
exact integer (millicores, bytes, GPU and TPU counts) so sums never drift, and every
time is plain seconds on whatever clock the caller uses: the core has no clock of its
own, `now` is always an argument.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# Well-known node labels (the same keys the Kubernetes ecosystem uses).
ZONE_LABEL = "topology.kubernetes.io/zone"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
TPU_ACCELERATOR_LABEL = "cloud.google.com/gke-tpu-accelerator"
TPU_TOPOLOGY_LABEL = "cloud.google.com/gke-tpu-topology"
DEFAULT_RACK_LABEL = "trainyard.io/rack"

# Extended resources nodes advertise in their allocatable (device plugins' names).
GPU_RESOURCE = "nvidia.com/gpu"
TPU_RESOURCE = "google.com/tpu"

_EMPTY: Mapping[str, str] = MappingProxyType({})
_EMPTY_USAGE: Mapping[str, float] = MappingProxyType({})


class JobKind(enum.StrEnum):
    """Training gangs pack onto few nodes; inference replicas spread for resilience."""

    TRAINING = "training"
    INFERENCE = "inference"


class TaintEffect(enum.StrEnum):
    """Only the hard effects keep a job off a node; PreferNoSchedule is advisory."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


@dataclass(frozen=True, slots=True)
class Taint:
    """A node taint as Kubernetes writes it."""

    key: str
    value: str = ""
    effect: TaintEffect = TaintEffect.NO_SCHEDULE


@dataclass(frozen=True, slots=True)
class Toleration:
    """A job toleration; `operator` is "Equal" (key and value match) or "Exists" (key only).

    An empty key with "Exists" tolerates every taint; `effect=None` matches any effect.
    """

    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: TaintEffect | None = None

    def tolerates(self, taint: Taint) -> bool:
        """True when this toleration neutralises `taint` (Kubernetes semantics)."""
        if self.effect is not None and self.effect != taint.effect:
            return False
        if self.operator == "Exists":
            return self.key in ("", taint.key)
        return self.key == taint.key and self.value == taint.value


@dataclass(frozen=True, slots=True)
class WorkerRequest:
    """What ONE worker (one pod) of a job needs; a gang of N workers needs N of these.

    - `gpus`: whole GPUs (`nvidia.com/gpu`).
    - `gpu_share_milli`: a fraction of a single GPU in thousandths (1-999), for traces such
      as Alibaba's where pods share a GPU; only meaningful with `gpus == 0`.
    - `gpu_models`: acceptable GPU models, each matched as a substring of the node's
      `nvidia.com/gpu.product` label ("H100" matches "NVIDIA-H100-80GB-HBM3"); empty = any.
    - `tpu_chips` with optional `tpu_type` / `tpu_topology`, matched exactly against the
      GKE node labels.

    A request with no GPU and no TPU is CPU-only work: it never takes an accelerator and
    prefers nodes without one.
    """

    cpu_millicores: int = 0
    memory_bytes: int = 0
    gpus: int = 0
    gpu_share_milli: int = 0
    gpu_models: tuple[str, ...] = ()
    tpu_chips: int = 0
    tpu_type: str | None = None
    tpu_topology: str | None = None
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        # Requests key the per-cycle caches and lanes; hash the fields once, not per lookup.
        return self._hash

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "_hash",
            hash(
                (
                    self.cpu_millicores,
                    self.memory_bytes,
                    self.gpus,
                    self.gpu_share_milli,
                    self.gpu_models,
                    self.tpu_chips,
                    self.tpu_type,
                    self.tpu_topology,
                )
            ),
        )
        for name in ("cpu_millicores", "memory_bytes", "gpus", "gpu_share_milli", "tpu_chips"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.gpu_share_milli and (self.gpus or self.gpu_share_milli >= 1000):
            raise ValueError("gpu_share_milli is a fraction of one GPU (1-999) and needs gpus == 0")
        if (self.gpus or self.gpu_share_milli) and self.tpu_chips:
            raise ValueError("a worker asks for GPUs or TPU chips, not both")

    @property
    def gpu_milli(self) -> int:
        """GPU demand in thousandths of a GPU (whole GPUs count 1000 each)."""
        return self.gpus * 1000 + self.gpu_share_milli

    @property
    def uses_gpu(self) -> bool:
        return self.gpus > 0 or self.gpu_share_milli > 0

    @property
    def cpu_only(self) -> bool:
        return not self.uses_gpu and self.tpu_chips == 0


@dataclass(frozen=True, slots=True, eq=False)
class Node:
    """A schedulable node: its allocatable resources, labels, taints and readiness.

    `used_*` is what is already consumed on the node by work the core does NOT see in
    the running-job list (daemon sets, pods of other systems); running Trainyard jobs are
    subtracted from their placements, so do not count them here as well.
    """

    name: str
    cpu_millicores: int
    memory_bytes: int
    gpus: int = 0
    tpu_chips: int = 0
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    taints: tuple[Taint, ...] = ()
    ready: bool = True
    used_cpu_millicores: int = 0
    used_memory_bytes: int = 0
    used_gpus: int = 0
    used_tpu_chips: int = 0

    @property
    def gpu_product(self) -> str:
        return self.labels.get(GPU_PRODUCT_LABEL, "")

    @property
    def zone(self) -> str:
        return self.labels.get(ZONE_LABEL, "")


@dataclass(frozen=True, slots=True, eq=False)
class PendingJob:
    """A job waiting to start.

    `submit_time` keeps its original value across preemptions, so a preempted job does
    not lose its place. `runtime_limit` (seconds) is what backfill and preemption rely on
    to predict when resources come free; None means unknown (treated as never).
    """

    id: str
    request: WorkerRequest
    workers: int = 1
    queue: str = "default"
    priority: int = 0
    submit_time: float = 0.0
    runtime_limit: float | None = None
    preemptible: bool = True
    kind: JobKind = JobKind.TRAINING
    tolerations: tuple[Toleration, ...] = ()
    user: str = ""  # the submitting user, for per-user quota limits (empty: unknown)
    # Learned-from-history inputs (see `estimator` and `las`); the defaults mean "nothing
    # known", which every policy that does not read them ignores.
    estimated_runtime: float | None = None  # expected seconds of work left (an estimate)
    attained_gpu_seconds: float = 0.0  # GPU-seconds of service received in earlier runs
    queued_since: float | None = None  # when it last entered the queue (None: submit_time)
    # Worker 0 prefers this node: its checkpoint is there (node-local checkpoint storage,
    # see `pinning`). Scoring only, never a reason to stay pending.
    preferred_node: str | None = None
    # Nodes that already run a replica of the same model service: a replica added to
    # it prefers any other node (spread, so one node's loss takes fewer replicas; see
    # `pinning.choose_preferring`). Scoring only, never a reason to stay pending.
    avoid_nodes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.runtime_limit is not None and self.runtime_limit < 0:
            raise ValueError("runtime_limit must be >= 0 seconds (or None: unknown)")


@dataclass(frozen=True, slots=True, eq=False)
class RunningJob:
    """A job holding resources: worker i runs on node `placement[i]`.

    `expected_end` is start + runtime limit (None when unknown); `last_checkpoint` lets
    preemption count only the work that would really be lost. `estimated_end` and
    `attained_gpu_seconds` feed the learned policies (`las`, `predicted`, the oracles).
    """

    id: str
    request: WorkerRequest
    placement: tuple[str, ...]
    start_time: float
    queue: str = "default"
    priority: int = 0
    submit_time: float = 0.0
    expected_end: float | None = None
    preemptible: bool = True
    last_checkpoint: float | None = None
    kind: JobKind = JobKind.TRAINING
    user: str = ""  # the submitting user, for per-user quota limits (empty: unknown)
    estimated_end: float | None = None  # start + estimated runtime (not a limit: never kills)
    attained_gpu_seconds: float = 0.0  # service received before this run started

    @property
    def workers(self) -> int:
        return len(self.placement)


@dataclass(frozen=True, slots=True, eq=False)
class ClusterSnapshot:
    """Everything one scheduling cycle decides over."""

    nodes: tuple[Node, ...]
    running: tuple[RunningJob, ...] = ()
    pending: tuple[PendingJob, ...] = ()
    rack_label: str = DEFAULT_RACK_LABEL
    # Decayed past usage per queue (see scheduler.fairshare.decay_usage), kept by the
    # caller between cycles; read only when quotas enable fair sharing with a half-life.
    queue_usage: Mapping[str, float] = field(default_factory=lambda: _EMPTY_USAGE)
    # The same per (queue, user), for the queues that order users by usage.
    user_usage: Mapping[tuple[str, str], float] = field(
        default_factory=lambda: MappingProxyType({})
    )


class Outcome(enum.IntEnum):
    """Typed, ordered result of trying one job (higher is better), as in Kueue."""

    NO_FIT = 0
    BLOCKED = 1
    FIT_WITH_PREEMPTION = 2
    FIT = 3


class ReasonCode(enum.IntEnum):
    """Why a job is still pending, most fundamental first."""

    NEVER_FITS = 0  # the cluster could not hold it even with none of our jobs running
    INSUFFICIENT_CAPACITY = 1  # could fit an empty cluster, not the free capacity now
    WOULD_DELAY_RESERVATION = 2  # fits now but would push back the backfill reservation
    RESERVED = 3  # holds the backfill reservation, starts at its time
    BEHIND_QUEUE_HEAD = 4  # strict FIFO: an earlier job of the same queue is blocked
    NOT_CONSIDERED = 5  # the cycle's work bound ended before this job was tried
    QUOTA = 6  # its queue's quota (or a per-user limit) holds it, whatever the nodes


@dataclass(frozen=True, slots=True)
class QuotaShortfall:
    """Which quota holds a job back, in numbers, for the human message.

    `kind` says which limit: "nominal" (the queue is at its quota and nothing can be
    borrowed), "lent" (the job fits the queue's own quota, but other queues of the
    cohort are using that unused quota and no reclaim freed it; `reclaim` is the
    queue's reclaim_within_cohort), "borrowing_limit" (its borrowing limit is used up),
    "no_flavor" (the queue has no quota in a flavor whose nodes fit the job), "user_jobs" /
    "user_gpus" (a per-user limit). Amounts are in the resource's display unit (GPUs, TPU
    chips, CPU cores, GiB)."""

    kind: str
    queue: str
    flavor: str = ""
    resource: str = ""
    used: float = 0.0
    nominal: float = 0.0
    requested: float = 0.0
    cohort: str | None = None
    lendable: float = 0.0
    limit: float = 0.0
    user: str = ""
    reclaim: str = ""

    @property
    def message(self) -> str:
        if self.kind == "no_flavor":
            return f"queue {self.queue} has no quota in a flavor whose nodes fit it"
        if self.kind == "user_jobs":
            return (
                f"user {self.user or '(unknown)'} runs {self.used:g}/{self.limit:g} jobs "
                f"allowed in queue {self.queue}"
            )
        if self.kind == "user_gpus":
            return (
                f"user {self.user or '(unknown)'} holds {self.used:g}/{self.limit:g} GPUs "
                f"allowed in queue {self.queue}"
            )
        what = f"{self.flavor} GPUs" if self.resource == "gpu" else f"{self.flavor} {self.resource}"
        if self.resource == "tpu":
            what = f"{self.flavor} TPU chips"
        head = f"queue {self.queue}: {self.used:g}/{self.nominal:g} {what} used"
        if self.kind == "borrowing_limit":
            return f"{head}, borrowing limit {self.limit:g} reached"
        if self.cohort is None:
            return f"{head}, no cohort to borrow from"
        tail = f"cohort {self.cohort} has {self.lendable:g} lendable"
        if self.kind == "lent":
            why = (
                "and this queue does not reclaim (reclaim_within_cohort: never)"
                if self.reclaim == "never"
                else "and no borrower's job could be reclaimed for it"
            )
            return f"{head}, its unused quota is lent out: {tail} {why}"
        return f"{head}, {tail}"


@dataclass(frozen=True, slots=True)
class CapacityView:
    """Free capacity seen for a job's shape when it failed, for the human message."""

    eligible_nodes: int
    largest_free: int  # the most free units (GPUs, TPU chips or workers) on one node
    nodes_with_largest: int
    unit: str  # "GPUs", "TPU chips" or "workers"


@dataclass(frozen=True, slots=True)
class PendingReason:
    """Why a job did not start; `message` is derived, never parsed.

    It names no job: jobs of one lane share one reason object, which keeps explaining
    100,000 pending jobs cheap (the mapping from job id is `CycleResult.pending`)."""

    code: ReasonCode
    workers: int
    request: WorkerRequest
    domain: str = "zone"
    capacity: CapacityView | None = None
    blocking_job: str | None = None
    reservation_time: float | None = None
    quota: QuotaShortfall | None = None

    @property
    def outcome(self) -> Outcome:
        """NO_FIT when capacity is the problem, BLOCKED when policy holds the job back."""
        if self.code in (ReasonCode.NEVER_FITS, ReasonCode.INSUFFICIENT_CAPACITY):
            return Outcome.NO_FIT
        return Outcome.BLOCKED

    @property
    def message(self) -> str:
        plural = "s" if self.workers != 1 else ""
        need = f"needs {self.workers} worker{plural} x {_describe(self.request)}"
        if self.workers > 1:
            need += f" in one {self.domain}"
        if self.code == ReasonCode.BEHIND_QUEUE_HEAD:
            return f"{need}; waiting behind {self.blocking_job}, the blocked head of its queue"
        if self.code == ReasonCode.NOT_CONSIDERED:
            return f"{need}; not tried this cycle (the cycle's work bound was reached)"
        if self.code == ReasonCode.QUOTA and self.quota is not None:
            return f"{need}; {self.quota.message}"
        if self.code == ReasonCode.RESERVED:
            return (
                f"{need}; holds the backfill reservation starting at t={self.reservation_time:.0f}"
            )
        if self.code == ReasonCode.WOULD_DELAY_RESERVATION:
            return (
                f"{need}; fits now but would delay the reservation of {self.blocking_job} "
                f"at t={self.reservation_time:.0f}"
            )
        cap = self.capacity
        if cap is not None and cap.eligible_nodes == 0:
            return f"{need}; no ready node matches its model, accelerator and tolerations"
        if self.code == ReasonCode.NEVER_FITS:
            return f"{need}; the cluster cannot hold it even with none of our jobs running"
        if cap is None:
            return f"{need}; not enough free capacity"
        if cap.largest_free == 0:
            return f"{need}; none of the {cap.eligible_nodes} eligible nodes has {cap.unit} free"
        return (
            f"{need}; largest free block is {cap.nodes_with_largest} "
            f"node{'s' if cap.nodes_with_largest != 1 else ''} with {cap.largest_free} "
            f"{cap.unit} free"
        )


def _describe(request: WorkerRequest) -> str:
    parts: list[str] = []
    model = "|".join(request.gpu_models)
    if request.gpus:
        parts.append(f"{request.gpus} {model or 'GPU'}")
    elif request.gpu_share_milli:
        parts.append(f"{request.gpu_share_milli / 1000:g} {model or 'GPU'}")
    if request.tpu_chips:
        parts.append(f"{request.tpu_chips} TPU {request.tpu_type or ''}".rstrip())
    if request.cpu_millicores:
        parts.append(f"{request.cpu_millicores}m CPU")
    if request.memory_bytes:
        parts.append(f"{request.memory_bytes / 2**30:g}Gi memory")
    return ", ".join(parts) or "nothing"


@dataclass(frozen=True, slots=True)
class Admission:
    """Start `job_id` with worker i on `placement[i]`, after evicting `preempts` (if any).

    Evicted jobs go back to the queue with their original submit time; that, and
    issuing the decision at all, is the caller's step."""

    job_id: str
    placement: tuple[str, ...]
    preempts: tuple[str, ...] = ()
    outcome: Outcome = Outcome.FIT
    backfilled: bool = False


@dataclass(frozen=True, slots=True)
class Reservation:
    """Backfill's promise: `job_id` can start at `start_time` on these nodes."""

    job_id: str
    start_time: float
    placement: tuple[str, ...]


@dataclass(slots=True)
class CycleResult:
    """Decisions of one scheduling cycle, in the order they were made."""

    admissions: list[Admission] = field(default_factory=list)
    reservations: list[Reservation] = field(default_factory=list)  # at most one per queue
    pending: dict[str, PendingReason] = field(default_factory=dict)
    examined: int = 0
    # With quotas: each queue's usage share after the cycle (what a caller that keeps a
    # decayed usage history integrates, see scheduler.fairshare.decay_usage).
    queue_usage: dict[str, float] = field(default_factory=dict)
    # The same per (queue, user), for the queues that order users by usage.
    user_usage: dict[tuple[str, str], float] = field(default_factory=dict)

    @property
    def preempted(self) -> list[str]:
        return [victim for a in self.admissions for victim in a.preempts]
