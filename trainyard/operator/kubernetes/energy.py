"""The GPU energy pods reported, kept until the loop ends their attempt.

Each pod's ranks put their NVML readings in its termination message
(trainyard.energy_report); the pod watch parses them into `PodRecord.energy`. The loop
asks for an attempt's total when it ends the attempt, which for a failed, preempted or
cancelled gang is after its pods are gone (the loop waits for that before moving on):
so the figures are kept here, per attempt, from the moment a pod reports them, not
read from the pods at the end.

Bounded: an attempt's figures go when the job's next attempt is launched (its end was
stored before that), and beyond `limit` jobs the one reported least recently goes
first (a finished job launches nothing more; its attempt ended cycles ago).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

from trainyard.operator.kubernetes.observe import PodRecord

DEFAULT_LIMIT = 20_000  # jobs; a few hundred bytes each


class ReportedEnergy:
    """job id -> attempt -> {global rank: joules}, from every pod of the attempt."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, dict[int, dict[int, float]]] = OrderedDict()

    def record(self, pod: PodRecord) -> None:
        """Keep what `pod` reported (nothing when it reported nothing)."""
        if pod.worker is None or pod.energy is None:
            return
        job_id, attempt = pod.worker.job_id, pod.worker.attempt
        with self._lock:
            self._jobs.setdefault(job_id, {}).setdefault(attempt, {}).update(pod.energy)
            self._jobs.move_to_end(job_id)
            while len(self._jobs) > self._limit:
                self._jobs.popitem(last=False)

    def joules(self, job_id: str, attempt: int, pods: Iterable[PodRecord] = ()) -> float | None:
        """The attempt's GPU energy over all its ranks; None when no rank reported any.
        `pods`: the job's pods as the cache has them now (a report the watch delivered
        but whose change hook has not run yet still counts)."""
        with self._lock:
            ranks = dict(self._jobs.get(job_id, {}).get(attempt, {}))
        for pod in pods:
            worker = pod.worker
            if worker and (worker.job_id, worker.attempt) == (job_id, attempt) and pod.energy:
                ranks.update(pod.energy)
        return sum(ranks.values()) if ranks else None

    def forget_before(self, job_id: str, attempt: int) -> None:
        """Drop the job's attempts before `attempt` (being launched: they have ended)."""
        with self._lock:
            attempts = self._jobs.get(job_id)
            if attempts is None:
                return
            for old in [a for a in attempts if a < attempt]:
                del attempts[old]
            if not attempts:
                del self._jobs[job_id]
