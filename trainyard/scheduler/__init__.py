"""Trainyard's pure scheduling core: snapshot in, decisions out, no I/O and no clock.

Public surface: the input/output types in `types`, `schedule()` in `api`, the policy
registry in `policies`. The simulator drives the same cycle (`cycle.run_cycle`) over
structures it keeps between events.
"""

from trainyard.scheduler.api import schedule
from trainyard.scheduler.policies import (
    REGISTRY,
    Policy,
    PolicySettings,
    SchedulerConfig,
    get_policy,
    policy_names,
)
from trainyard.scheduler.types import (
    Admission,
    ClusterSnapshot,
    CycleResult,
    JobKind,
    Node,
    Outcome,
    PendingJob,
    PendingReason,
    ReasonCode,
    Reservation,
    RunningJob,
    Taint,
    TaintEffect,
    Toleration,
    WorkerRequest,
)

__all__ = [
    "REGISTRY",
    "Admission",
    "ClusterSnapshot",
    "CycleResult",
    "JobKind",
    "Node",
    "Outcome",
    "PendingJob",
    "PendingReason",
    "Policy",
    "PolicySettings",
    "ReasonCode",
    "Reservation",
    "RunningJob",
    "SchedulerConfig",
    "Taint",
    "TaintEffect",
    "Toleration",
    "WorkerRequest",
    "get_policy",
    "policy_names",
    "schedule",
]
