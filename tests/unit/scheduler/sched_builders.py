"""Fluent builders for scheduler tests: `job("a").gpus(8).workers(2).build()`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from trainyard.scheduler.quota import (
    BorrowWithinCohort,
    Cohort,
    FairSharing,
    Flavor,
    QueuePreemption,
    QueueQuota,
    QuotaConfig,
    ReclaimWithinCohort,
    ResourceQuota,
    UserLimits,
    WithinQueue,
)
from trainyard.scheduler.types import (
    DEFAULT_RACK_LABEL,
    GPU_PRODUCT_LABEL,
    TPU_ACCELERATOR_LABEL,
    TPU_TOPOLOGY_LABEL,
    ZONE_LABEL,
    JobKind,
    Node,
    PendingJob,
    RunningJob,
    Taint,
    TaintEffect,
    Toleration,
    WorkerRequest,
)

GI = 2**30


@dataclass
class JobBuilder:
    _id: str
    _request: WorkerRequest = field(default_factory=WorkerRequest)
    _workers: int = 1
    _queue: str = "default"
    _priority: int = 0
    _submit: float = 0.0
    _limit: float | None = None
    _preemptible: bool = True
    _kind: JobKind = JobKind.TRAINING
    _tolerations: tuple[Toleration, ...] = ()
    _user: str = ""

    def gpus(self, n: int, *models: str) -> JobBuilder:
        self._request = replace(self._request, gpus=n, gpu_models=tuple(models))
        return self

    def gpu_share(self, milli: int) -> JobBuilder:
        self._request = replace(self._request, gpu_share_milli=milli)
        return self

    def tpu(
        self, chips: int, tpu_type: str | None = None, topology: str | None = None
    ) -> JobBuilder:
        self._request = replace(
            self._request, tpu_chips=chips, tpu_type=tpu_type, tpu_topology=topology
        )
        return self

    def cpu(self, millicores: int) -> JobBuilder:
        self._request = replace(self._request, cpu_millicores=millicores)
        return self

    def memory_gi(self, gi: int) -> JobBuilder:
        self._request = replace(self._request, memory_bytes=gi * GI)
        return self

    def workers(self, n: int) -> JobBuilder:
        self._workers = n
        return self

    def queue(self, name: str) -> JobBuilder:
        self._queue = name
        return self

    def priority(self, p: int) -> JobBuilder:
        self._priority = p
        return self

    def submitted(self, t: float) -> JobBuilder:
        self._submit = t
        return self

    def limit(self, seconds: float | None) -> JobBuilder:
        self._limit = seconds
        return self

    def not_preemptible(self) -> JobBuilder:
        self._preemptible = False
        return self

    def inference(self) -> JobBuilder:
        self._kind = JobKind.INFERENCE
        return self

    def user(self, name: str) -> JobBuilder:
        self._user = name
        return self

    def tolerates(self, key: str, value: str = "") -> JobBuilder:
        self._tolerations = (*self._tolerations, Toleration(key, "Equal", value))
        return self

    def build(self) -> PendingJob:
        return PendingJob(
            self._id,
            self._request,
            workers=self._workers,
            queue=self._queue,
            priority=self._priority,
            submit_time=self._submit,
            runtime_limit=self._limit,
            preemptible=self._preemptible,
            kind=self._kind,
            tolerations=self._tolerations,
            user=self._user,
        )

    def running_on(self, *nodes: str, start: float = 0.0, end: float | None = None) -> RunningJob:
        return RunningJob(
            self._id,
            self._request,
            tuple(nodes),
            start,
            queue=self._queue,
            priority=self._priority,
            submit_time=self._submit,
            expected_end=end,
            preemptible=self._preemptible,
            kind=self._kind,
            user=self._user,
        )


@dataclass
class NodeBuilder:
    _name: str
    _cpu: int = 64_000
    _memory: int = 512 * GI
    _gpus: int = 0
    _tpu: int = 0
    _labels: dict[str, str] = field(default_factory=dict)
    _taints: tuple[Taint, ...] = ()
    _ready: bool = True

    def gpus(self, n: int, product: str = "NVIDIA-H100-80GB-HBM3") -> NodeBuilder:
        self._gpus = n
        self._labels[GPU_PRODUCT_LABEL] = product
        return self

    def tpu(self, chips: int, tpu_type: str, topology: str) -> NodeBuilder:
        self._tpu = chips
        self._labels[TPU_ACCELERATOR_LABEL] = tpu_type
        self._labels[TPU_TOPOLOGY_LABEL] = topology
        return self

    def cpu(self, millicores: int) -> NodeBuilder:
        self._cpu = millicores
        return self

    def memory_gi(self, gi: int) -> NodeBuilder:
        self._memory = gi * GI
        return self

    def zone(self, z: str) -> NodeBuilder:
        self._labels[ZONE_LABEL] = z
        return self

    def rack(self, r: str) -> NodeBuilder:
        self._labels[DEFAULT_RACK_LABEL] = r
        return self

    def taint(
        self, key: str, value: str = "", effect: TaintEffect = TaintEffect.NO_SCHEDULE
    ) -> NodeBuilder:
        self._taints = (*self._taints, Taint(key, value, effect))
        return self

    def not_ready(self) -> NodeBuilder:
        self._ready = False
        return self

    def build(self) -> Node:
        return Node(
            self._name,
            self._cpu,
            self._memory,
            gpus=self._gpus,
            tpu_chips=self._tpu,
            labels=dict(self._labels),
            taints=self._taints,
            ready=self._ready,
        )


def job(job_id: str) -> JobBuilder:
    return JobBuilder(job_id)


def node(name: str) -> NodeBuilder:
    return NodeBuilder(name)


@dataclass
class QuotaBuilder:
    """`quotas().flavor("h100", H100).cohort("org").queue("a", "org", h100={"gpu": 8})`."""

    _flavors: list[Flavor] = field(default_factory=list)
    _cohorts: list[Cohort] = field(default_factory=list)
    _queues: list[QueueQuota] = field(default_factory=list)
    _fair: FairSharing = field(default_factory=FairSharing)

    def flavor(self, name: str, product: str | None = None) -> QuotaBuilder:
        labels = {GPU_PRODUCT_LABEL: product} if product else {}
        self._flavors.append(Flavor(name, labels))
        return self

    def cohort(self, name: str, parent: str | None = None, **quotas: dict) -> QuotaBuilder:
        self._cohorts.append(Cohort(name, parent, _resource_quotas(quotas)))
        return self

    def queue(
        self,
        name: str,
        cohort: str | None = None,
        *,
        weight: float = 1.0,
        within: str = "never",
        reclaim: str = "never",
        borrow: str = "never",
        borrow_max_priority: int | None = None,
        max_jobs_per_user: int | None = None,
        max_gpus_per_user: int | None = None,
        order_users: bool = False,
        **quotas: dict,
    ) -> QuotaBuilder:
        self._queues.append(
            QueueQuota(
                name,
                cohort,
                _resource_quotas(quotas),
                weight,
                QueuePreemption(
                    WithinQueue(within),
                    ReclaimWithinCohort(reclaim),
                    BorrowWithinCohort(borrow),
                    borrow_max_priority,
                ),
                UserLimits(max_jobs_per_user, max_gpus_per_user),
                order_users_by_usage=order_users,
            )
        )
        return self

    def fair(self, half_life: float | None = None, *, enabled: bool = True) -> QuotaBuilder:
        self._fair = FairSharing(enabled, half_life)
        return self

    def build(self) -> QuotaConfig:
        return QuotaConfig(
            tuple(self._flavors), tuple(self._cohorts), tuple(self._queues), self._fair
        )


def _resource_quotas(quotas: dict) -> dict[str, dict[str, ResourceQuota]]:
    """{"h100": {"gpu": 8, "gpu_borrow": 4, "gpu_lend": 2}} in whole GPUs / cores / GiB."""
    scale = {"gpu": 1000, "tpu": 1, "cpu": 1000, "memory": GI}
    out: dict[str, dict[str, ResourceQuota]] = {}
    for flavor, spec in quotas.items():
        per: dict[str, ResourceQuota] = {}
        for resource in ("gpu", "tpu", "cpu", "memory"):
            if resource in spec:
                borrow = spec.get(f"{resource}_borrow")
                lend = spec.get(f"{resource}_lend")
                per[resource] = ResourceQuota(
                    int(spec[resource] * scale[resource]),
                    None if borrow is None else int(borrow * scale[resource]),
                    None if lend is None else int(lend * scale[resource]),
                )
        out[flavor] = per
    return out


def quotas() -> QuotaBuilder:
    return QuotaBuilder()
