"""The scheduling loop: store -> core -> store -> backend, one level-triggered cycle at a time.

`SchedulingLoop.cycle()` is the whole algorithm, callable on its own (tests drive it):

1. Read every live job from the store (lifecycle columns; documents cached by id) and
   every worker the backend knows about.
2. Reconcile each job against its workers (`reconcile.reconcile_job`): finished gangs,
   failures, stops that completed, gangs still to launch.
3. Build the core's snapshot: what active and stopping jobs hold, and the PENDING jobs
   that may start (no leftover workers, backoff over); run `trainyard.scheduler.schedule`.
4. Persist every decision in ONE transaction, each conditional on the version read
   in step 1: admissions (ADMITTED + placement + a new attempt), stop requests for
   preemption victims, transitions, and pending reasons that changed.
5. Only then act on the backend: launch admitted gangs, stop what must stop.

A crash between 4 and 5 is repaired by the next cycle (an ADMITTED job without workers
is launched; a stop request is re-issued), and a crash before 4 leaves nothing to
repair, so no job is lost and none is launched twice (launch is idempotent per worker
identity). Leadership is checked before every batch of writes and actions.

A preemptor is not admitted in the cycle that chooses its victims: the victims are
asked to stop (checkpointing on SIGTERM) and keep their resources in the snapshot until
the backend reports them gone; meanwhile they are presented to the core as the cheapest
victims of all, so a later cycle neither picks fresh victims for the same need nor lets
anyone else take the room first.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from trainyard import layout
from trainyard.observability.cycles import reason_label
from trainyard.observability.energy import attempt_energy_joules
from trainyard.observability.targets import TargetsRecorder
from trainyard.operator import admission as admission_hooks
from trainyard.operator.backend import (
    Backend,
    GangLaunch,
    LaunchError,
    Leadership,
    WorkerPhase,
    WorkerStatus,
)
from trainyard.operator.checkpoint_reports import CheckpointReports
from trainyard.operator.estimates import LearnedInputs
from trainyard.operator.launch import Runtime, build_workers
from trainyard.operator.pinning import CheckpointPins
from trainyard.operator.reconcile import Decision, RetryPolicy, reconcile_job
from trainyard.operator.service_control import ServiceControl, admission_revisions
from trainyard.operator.services import (
    EndpointPublisher,
    HealthProber,
    RestartBook,
    annotate_batch_success,
    is_batch_inference,
    is_service,
    reconcile_service,
    service_endpoint,
)
from trainyard.operator.snapshot import JobShape, job_shape, pending_job, running_job
from trainyard.scheduler import ClusterSnapshot, ReasonCode, SchedulerConfig, schedule
from trainyard.scheduler.fairshare import UsageHistory
from trainyard.scheduler.types import GPU_PRODUCT_LABEL, TPU_ACCELERATOR_LABEL, Node
from trainyard.store import read_transaction, write_transaction
from trainyard.store.scheduling import (
    AttemptStart,
    JobChange,
    LiveJob,
    apply_changes,
    load_live_jobs,
    load_specs,
    publish_nodes,
)
from trainyard.store.services import drop_endpoints, publish_endpoint
from trainyard.store.states import JobState

log = logging.getLogger("trainyard.loop")
US = 1_000_000
LIVE = frozenset({JobState.PENDING, JobState.ADMITTED, JobState.RUNNING})
# A full read of every live job at least this often, whatever the incremental reads saw.
RESYNC_SECONDS = 30
CHANGE_MARGIN_SECONDS = 5
# How long one cycle may spend launching when the backend launches in batches
# (`launch_batch_size`): the rest stay ADMITTED and the next cycle launches them, so in
# a burst the RUNNING of the first gangs is persisted while later ones still start.
LAUNCH_BUDGET_SECONDS = 0.25


_OFFER = Decision(offer=True)


def now_us_clock() -> int:
    return time.time_ns() // 1000


class AlwaysLeader:
    """Leadership for a loop that is alone by construction (tests, a single embedded run)."""

    def start(self) -> None:
        pass

    def is_leader(self) -> bool:
        return True

    def stop(self) -> None:
        pass


@dataclass(slots=True)
class CycleReport:
    """What one cycle did, and where its time went (seconds)."""

    leader: bool = True
    live_jobs: int = 0
    offered: int = 0
    admitted: list[str] = field(default_factory=list)
    preempted: list[str] = field(default_factory=list)
    launched: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    transitions: int = 0
    reasons_written: int = 0
    # Gangs left ADMITTED for the next cycle once the launch budget was spent.
    launch_deferred: int = 0
    # Pending jobs per (queue, reason code) the core left, for the metrics.
    pending_reasons: dict[tuple[str, str], int] = field(default_factory=dict)
    read_s: float = 0.0
    core_s: float = 0.0  # reconcile + snapshot + the core
    schedule_s: float = 0.0  # of which the pure core (`schedule`)
    write_s: float = 0.0
    act_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.read_s + self.core_s + self.write_s + self.act_s


def pending_reason_text(code: ReasonCode, message: str) -> str:
    """The stored reason of a pending job: 'unschedulable: ...' when nothing could hold it."""
    prefix = "unschedulable" if code is ReasonCode.NEVER_FITS else "pending"
    return f"{prefix}: {message}"


def node_document(node: Node) -> dict[str, Any]:
    """A Node as the JSON the API's cluster view reads (see store.publish_nodes)."""
    return {
        "cpu_millicores": node.cpu_millicores,
        "memory_bytes": node.memory_bytes,
        "gpus": node.gpus,
        "tpu_chips": node.tpu_chips,
        "gpu_model": node.labels.get(GPU_PRODUCT_LABEL) if node.gpus else None,
        "tpu_type": node.labels.get(TPU_ACCELERATOR_LABEL) if node.tpu_chips else None,
        "ready": node.ready,
        "used_cpu_millicores": node.used_cpu_millicores,
        "used_memory_bytes": node.used_memory_bytes,
        "used_gpus": node.used_gpus,
        "used_tpu_chips": node.used_tpu_chips,
        "labels": dict(node.labels),
        "taints": [{"key": t.key, "value": t.value, "effect": t.effect.value} for t in node.taints],
    }


class SchedulingLoop:
    """One store, one backend, one core: `cycle()` runs one pass (see the module doc)."""

    def __init__(
        self,
        engine: Engine,
        backend: Backend,
        *,
        scheduler_config: SchedulerConfig | Callable[[], SchedulerConfig] | None = None,
        retry: RetryPolicy | None = None,
        stop_grace_seconds: float = 30.0,
        leadership: Leadership | None = None,
        home: Path | None = None,
        extra_env: Callable[[Mapping[str, Any]], Mapping[str, str]] | None = None,
        clock: Callable[[], float] = time.time,
        learned: LearnedInputs | None = None,
    ) -> None:
        self.engine = engine
        # Runtime estimates, attained service and start forecasts (operator/estimates.py).
        self.learned = learned
        self.backend = backend
        config = scheduler_config or SchedulerConfig()
        self._config_source = config if callable(config) else (lambda: config)
        self.retry = retry or RetryPolicy()
        self.stop_grace_seconds = stop_grace_seconds
        self.leadership = leadership or AlwaysLeader()
        self.home = home or Path.home() / ".trainyard"
        self.extra_env = extra_env
        self.clock = clock
        self._specs: dict[str, dict[str, Any]] = {}
        self._shapes: dict[str, JobShape] = {}
        self._launch_errors: dict[str, tuple[str, bool]] = {}
        self._published: dict[str, dict[str, Any]] | None = None
        self._live: dict[str, LiveJob] | None = None
        self._node_models: dict[str, str | None] = {}
        self._last_read = 0
        self._last_full_read = 0
        # PendingJob per (job id, version): rebuilt only when the job changed.
        self._pending: dict[str, tuple[int, Any]] = {}
        self._gated: set[str] = set()  # jobs the backend must clear first (admission.py)
        self._runtime: Runtime = getattr(backend, "runtime", lambda: Runtime())()
        # Quota fair sharing with a usage half-life: the decayed usage per queue, kept in
        # memory (a restarted loop starts with no memory of past use).
        self._usage = UsageHistory()
        self._targets = TargetsRecorder(engine)
        self._restarts = RestartBook()
        self._prober = HealthProber()
        self._endpoints = EndpointPublisher()
        self._pins = CheckpointPins(engine, backend)  # restarts near node-local checkpoints
        self._checkpoint_reports = CheckpointReports(engine, backend)
        self._launch_deadline = 0.0
        # Per-cycle work that only changes with its inputs (see `cycle`): the node list
        # the published view and node models were made from, each live job's stored
        # row (store.load_live_jobs's cache), the running jobs' RunningJob, and which
        # live jobs are services (the only ones with endpoints to publish).
        self._nodes_seen: tuple[Node, ...] | None = None
        self._node_view: dict[str, dict[str, Any]] = {}
        self._rows: dict[str, tuple[Any, LiveJob]] = {}
        self._running: dict[str, tuple[LiveJob, Any, bool, Any]] = {}
        self._services: set[str] = set()
        # Rolling updates and autoscaling of services (operator/service_control.py).
        self._service_control = ServiceControl(
            backend, self._restarts, self._endpoints, stop_grace_seconds=stop_grace_seconds
        )

    # ------------------------------------------------------------------ the cycle

    def cycle(self, now: float | None = None) -> CycleReport:
        """Run one reconcile + schedule pass; returns what it did."""
        report = CycleReport()
        if not self.leadership.is_leader():
            report.leader = False
            return report
        now = self.clock() if now is None else now
        now_us = int(now * US)
        t0 = time.perf_counter()
        live, workers, nodes = self._read()
        nodes = tuple(nodes)
        if nodes != self._nodes_seen:
            self._node_models = {
                n.name: n.labels.get(GPU_PRODUCT_LABEL if n.gpus else TPU_ACCELERATOR_LABEL)
                for n in nodes
            }
            self._node_view = {node.name: node_document(node) for node in nodes}
            self._nodes_seen = nodes
        report.live_jobs = len(live)
        try:
            self._targets.observe(workers)  # where workers serve metrics (service discovery)
        except Exception:  # losing metrics targets must not cost a cycle
            log.exception("could not record the workers' metrics targets")
        self._checkpoint_reports.store()  # what pods reported their claims hold
        t1 = time.perf_counter()
        report.read_s = t1 - t0

        by_job: dict[str, list[WorkerStatus]] = defaultdict(list)
        for worker in workers:
            by_job[worker.job_id].append(worker)
        changes: dict[str, JobChange] = {}
        decisions: dict[str, Decision] = {}
        running = []
        pending = []
        jobs_by_id = {job.id: job for job in live}
        live_ids = jobs_by_id.keys()
        offer = _OFFER
        shapes = self._shapes
        reconciled: list[LiveJob] = []  # the jobs not taken by the fast path, in order
        for job in live:
            job_workers = by_job.get(job.id)
            if (
                job.state is JobState.PENDING
                and job.stop_target is None
                and not job_workers
                and (job.not_before is None or job.not_before <= now_us)
            ):
                # The common case at 10,000 pending jobs, without the general machinery.
                if job.id in self._gated:
                    blocked = admission_hooks.blocker(self.backend, self._specs[job.id])
                    if blocked is not None:
                        decisions[job.id] = Decision()
                        self._set_reason(changes, job, blocked)
                        continue
                decisions[job.id] = offer
                cached = self._pending.get(job.id)
                if cached is None or cached[0] != job.version:
                    cached = (job.version, pending_job(job, shapes[job.id]))
                    self._pending[job.id] = cached
                pending.append(cached[1])
                continue
            reconciled.append(job)
            shape = shapes[job.id]
            spec = self._specs[job.id]
            decision = (reconcile_service if is_service(spec) else reconcile_job)(
                job,
                spec,
                job_workers or (),
                now_us=now_us,
                retry=self.retry,
                log_tail=lambda index, job_id=job.id: self.backend.log_tail(job_id, index),
                launch_error=self._launch_errors.pop(job.id, None),
                runtime_limit=shape.runtime_limit,
                **({"book": self._restarts} if is_service(spec) else {}),
            )
            if decision.change is not None and is_batch_inference(spec):
                annotate_batch_success(
                    decision.change, Path(self._output_dir(job.id)), int(spec.get("workers", 1))
                )
            decisions[job.id] = decision
            if decision.change is not None:
                changes[job.id] = decision.change
            if is_service(spec):  # rolling update / autoscaling step (service_control.py)
                self._service_control.plan(job, spec, job_workers or (), decision, now_us=now_us)
            if decision.holds:
                running.append(self._running_job(job, shape, decision, now))
            elif decision.offer:
                pending.append(pending_job(job, shape))
        orphans = sorted(set(by_job) - live_ids)
        for job_id in [j for j in self._running if j not in live_ids]:
            del self._running[job_id]

        pending = self._pins.prefer(pending, jobs_by_id, self._specs, nodes)
        report.offered = len(pending)
        config = self._config_source()
        snapshot = ClusterSnapshot(
            tuple(nodes),
            tuple(running),
            tuple(pending),
            queue_usage=self._usage.before_cycle(config, now),
            user_usage=self._usage.user_history,
        )
        if self.learned is not None:
            snapshot = self.learned.enrich(snapshot, now, jobs_by_id, self._specs)
        scheduled_at = time.perf_counter()
        result = schedule(self._service_control.add_growth(snapshot, self._shapes), now, config)
        self._service_control.after_schedule(result, changes)  # replicas to add are no jobs
        report.schedule_s = time.perf_counter() - scheduled_at
        self._usage.after_cycle(result.queue_usage, now, result.user_usage)
        if self.learned is not None:
            self.learned.after_schedule(snapshot, now)
        t2 = time.perf_counter()
        report.core_s = t2 - t1

        admitted: list[str] = []
        for admission in result.admissions:
            job = jobs_by_id[admission.job_id]
            fresh_victims = [
                v for v in admission.preempts if v in jobs_by_id and not decisions[v].stopping
            ]
            if admission.preempts:
                for victim_id in fresh_victims:
                    victim = jobs_by_id[victim_id]
                    change = changes.setdefault(
                        victim_id,
                        JobChange(job_id=victim_id, version=victim.version, state=victim.state),
                    )
                    reason = f"preempted by job {job.id} ({job.name})"
                    change.values.update(
                        stop_target=JobState.PREEMPTED.value,
                        stop_reason=reason,
                        reason=f"stopping: {reason}",
                    )
                    report.preempted.append(victim_id)
                waiting = ", ".join(admission.preempts)
                self._set_reason(
                    changes, job, f"pending: waiting for preempted jobs to stop: {waiting}"
                )
                continue
            changes[job.id] = self._admission(job, admission.placement, now_us)
            admitted.append(job.id)
        texts: dict[int, str] = {}  # jobs of one lane share one reason object
        labels: dict[int, str] = {}
        reasons = report.pending_reasons
        for job_id, reason in result.pending.items():
            lane = id(reason)
            text = texts.get(lane)
            if text is None:
                text = texts[lane] = pending_reason_text(reason.code, reason.message)
                labels[lane] = reason_label(reason.code)
            job = jobs_by_id[job_id]
            key = (job.queue, labels[lane])
            reasons[key] = reasons.get(key, 0) + 1
            if job.reason != text or job_id in changes:  # else _set_reason does nothing
                self._set_reason(changes, job, text)

        self._attach_energy(changes.values())
        node_view = self._node_view
        if not self.leadership.is_leader():
            report.leader = False
            return report
        publish = node_view != self._published
        applied: set[str] = set()
        if changes or publish:  # else no write lock taken (SQLite: BEGIN IMMEDIATE)
            with write_transaction(self.engine) as conn:
                applied = apply_changes(conn, list(changes.values()))
                if publish:
                    publish_nodes(conn, nodes=node_view)
        self._published = node_view
        self._remember_reasons(changes.values(), applied)
        t3 = time.perf_counter()
        report.write_s = t3 - t2
        report.admitted = [j for j in admitted if j in applied]
        report.reasons_written = sum(1 for c in changes.values() if c.reason_only)
        report.transitions = sum(len(c.transitions) for c in changes.values())

        if not self.leadership.is_leader():
            report.leader = False
            return report
        # Only reconciled jobs can launch or stop (the fast path only offers or waits).
        to_launch = [
            j
            for j in reconciled
            if decisions[j.id].launch and (j.id not in changes or j.id in applied)
        ]
        self._forget_restarted(to_launch, decisions)
        to_launch = [j for j in to_launch if decisions[j.id].launch]
        self._launch_deadline = time.perf_counter() + LAUNCH_BUDGET_SECONDS
        self._launch_all(to_launch, report)
        self._launch_admitted(report.admitted, jobs_by_id, changes, report)
        self._service_control.act(applied, lambda items: self._launch_many(items, report))
        for job in reconciled:
            decision = decisions[job.id]
            stop_now = decision.stop and (job.id not in changes or job.id in applied)
            stop_now = stop_now or (job.id in report.preempted and job.id in applied)
            if stop_now:
                # A victim chosen in this cycle has its reason in `changes` only so far.
                change = changes.get(job.id)
                fresh = change.values.get("stop_reason") if change is not None else None
                self._stop(job.id, reason=fresh or job.stop_reason or "stopping", report=report)
        for job_id in orphans:
            self._stop(job_id, reason="its job is finished or unknown", report=report)
        self._publish_endpoints([job for job in live if job.id in self._services], by_job)
        report.act_s = time.perf_counter() - t3
        return report

    # ------------------------------------------------------------------ steps

    def _read(self) -> tuple[list[LiveJob], Sequence[WorkerStatus], Sequence[Node]]:
        """Workers, nodes and the live jobs: all of them every RESYNC_SECONDS, otherwise
        only rows changed since the last read (minus a margin for writers whose commit
        landed after their timestamp, or whose clock is a little behind ours)."""
        workers = self.backend.workers()
        nodes = self.backend.nodes()
        read_at = now_us_clock()
        full = self._live is None or read_at - self._last_full_read > RESYNC_SECONDS * US
        with read_transaction(self.engine) as conn:
            if full:
                self._live = {job.id: job for job in load_live_jobs(conn, cache=self._rows)}
                self._last_full_read = read_at
            else:
                assert self._live is not None
                since = self._last_read - CHANGE_MARGIN_SECONDS * US
                for job in load_live_jobs(conn, changed_since=since, cache=self._rows):
                    if job.state in LIVE:
                        self._live[job.id] = job
                    else:
                        self._live.pop(job.id, None)
            self._last_read = read_at
            live = sorted(self._live.values(), key=lambda job: job.seq)
            unknown = [job.id for job in live if job.id not in self._specs]
            if unknown:
                self._specs.update(load_specs(conn, unknown))
            # A PATCHed service's document (service_control.py).
            self._service_control.refresh_specs(
                conn, live, self._specs, (self._shapes, self._pending)
            )
        live_ids = self._live.keys()
        for job_id in [j for j in self._specs if j not in live_ids]:
            del self._specs[job_id]
            self._shapes.pop(job_id, None)
            self._pending.pop(job_id, None)
            self._gated.discard(job_id)
            self._services.discard(job_id)
        for job_id in [j for j in self._rows if j not in live_ids]:
            del self._rows[job_id]
        for job in live:
            if job.id not in self._shapes:
                self._shapes[job.id] = job_shape(self._specs[job.id])
                if admission_hooks.may_block(self._specs[job.id]):
                    self._gated.add(job.id)
                if is_service(self._specs[job.id]):
                    self._services.add(job.id)
        return live, workers, nodes

    def _running_job(self, job: LiveJob, shape: JobShape, decision: Decision, now: float) -> Any:
        """The core's RunningJob for a job holding resources, rebuilt only when its row,
        what it holds or whether it is stopping changed (at 10,000 live jobs, most run
        unchanged from one cycle to the next)."""
        holds, stopping = decision.holds, decision.stopping
        assert holds is not None
        cached = self._running.get(job.id)
        if (
            cached is not None
            and cached[0] is job
            and cached[2] == stopping
            and (cached[1] is holds or cached[1] == holds)
        ):
            return cached[3]
        built = running_job(job, shape, holds, stopping=stopping, now=now)
        start = (job.attempt_started_at or job.created_at) / US
        if start <= now:  # else its start_time is `now`, which moves: not cacheable
            self._running[job.id] = (job, holds, stopping, built)
        return built

    def _attach_energy(self, changes: Any) -> None:
        """The GPU energy an ended attempt's ranks recorded in the job's output directory
        (NVML readings; nothing where there is no GPU). Readable only where the output
        directory is on this machine (the local backend)."""
        if self.backend.name != "local":
            return
        for change in changes:
            if change.attempt_end is None:
                continue
            output = Path(self._output_dir(change.job_id))
            change.attempt_energy_joules = attempt_energy_joules(output, change.attempt_end[0])

    def _remember_reasons(self, changes: Any, applied: set[str]) -> None:
        """Reason-only writes do not touch updated_at (they are advisory), so the
        incremental read would not see them: keep the cached rows in step."""
        assert self._live is not None
        for change in changes:
            if change.reason_only and change.job_id in applied:
                job = self._live.get(change.job_id)
                if job is not None:
                    self._live[change.job_id] = replace(job, reason=change.values.get("reason"))

    def _set_reason(self, changes: dict[str, JobChange], job: LiveJob, reason: str) -> None:
        change = changes.get(job.id)
        if change is not None:
            if not change.transitions and "reason" not in change.values:
                change.values["reason"] = reason
            return
        if job.reason != reason:
            changes[job.id] = JobChange(
                job_id=job.id, version=job.version, state=job.state, values={"reason": reason}
            )

    def _admission(self, job: LiveJob, placement: Sequence[str], now_us: int) -> JobChange:
        spec = self._specs[job.id]
        shape = self._shapes[job.id]
        by_index = dict(enumerate(placement))
        nodes = sorted(set(placement))
        change = JobChange(job_id=job.id, version=job.version, state=job.state)
        change.transitions.append((JobState.ADMITTED, f"placed on {', '.join(nodes)}"))
        change.values.update(
            placement=by_index,
            attempt=job.attempt + 1,
            not_before=None,
            attempt_started_at=None,
        )
        request = shape.request
        model = None
        if request.gpus or request.tpu_chips:
            # The model of the nodes it got (what usage accounting groups by), not the
            # list it asked for ("any GPU" asks for none).
            models = sorted({self._node_models.get(node) or "unknown" for node in placement})
            model = ",".join(models)
        change.attempt_start = AttemptStart(
            placement=by_index,
            queue=job.queue,
            owner=job.owner,
            workers=shape.workers,
            cpu_millicores=request.cpu_millicores,
            memory_bytes=request.memory_bytes,
            gpus=request.gpus,
            tpu_chips=request.tpu_chips,
            accelerator_model=model,
        )
        change.notes.extend(admission_hooks.notes(self.backend, spec))
        change.notes.extend(self._pins.notes(job.id, placement))
        if is_service(spec):
            change.values["replica_revisions"] = admission_revisions(spec, by_index)
        if spec.get("image") and self.backend.name == "local":
            change.notes.append(
                f"warning: image {spec['image']!r} ignored: the local backend runs workers "
                "in the server's own environment"
            )
        return change

    def _launch_admitted(
        self,
        admitted: Sequence[str],
        jobs_by_id: Mapping[str, LiveJob],
        changes: Mapping[str, JobChange],
        report: CycleReport,
    ) -> None:
        items = []
        for job_id in admitted:
            values = changes[job_id].values
            items.append((jobs_by_id[job_id], values["attempt"], values["placement"]))
        self._launch_many(items, report)

    def _launch_all(self, jobs: Sequence[LiveJob], report: CycleReport) -> None:
        self._launch_many([(j, j.attempt, j.placement) for j in jobs if j.placement], report)

    def _launch_many(
        self, items: Sequence[tuple[LiveJob, int, Mapping[int, str]]], report: CycleReport
    ) -> None:
        """Launch the gangs of one cycle; together (`launch_many`) when the backend can,
        which a cluster backend needs: one gang's API calls take tens of milliseconds,
        and a cycle may admit hundreds. A backend with a `launch_batch_size` gets them in
        batches of that size until the cycle's launch budget is spent (see
        LAUNCH_BUDGET_SECONDS); what is left is launched by the next cycle."""
        size = getattr(self.backend, "launch_batch_size", None) or max(len(items), 1)
        for start in range(0, len(items), size):
            if start and time.perf_counter() > self._launch_deadline:
                report.launch_deferred += len(items) - start
                return
            self._launch_batch(items[start : start + size], report)

    def _launch_batch(
        self, items: Sequence[tuple[LiveJob, int, Mapping[int, str]]], report: CycleReport
    ) -> None:
        gangs: list[tuple[LiveJob, GangLaunch]] = []
        for job, attempt, placement in items:
            try:
                gangs.append((job, self._gang(job, attempt=attempt, placement=placement)))
            except Exception as exc:
                self._launch_failed(job, exc)
        many = getattr(self.backend, "launch_many", None)
        if many is not None and len(gangs) > 1:
            try:
                outcomes = list(many([gang for _, gang in gangs]))
            except Exception as exc:  # a backend bug must not stop the loop for everyone
                outcomes = [exc] * len(gangs)
        else:
            outcomes = []
            for _, gang in gangs:
                try:
                    self.backend.launch(gang)
                    outcomes.append(None)
                except Exception as exc:
                    outcomes.append(exc)
        for (job, _), outcome in zip(gangs, outcomes, strict=True):
            if outcome is None:
                report.launched.append(job.id)
            else:
                self._launch_failed(job, outcome)

    def _launch_failed(self, job: LiveJob, exc: BaseException) -> None:
        if isinstance(exc, LaunchError):
            log.warning("launch of job %s failed: %s", job.id, exc.reason)
            self._launch_errors[job.id] = (exc.reason, exc.permanent)
        else:
            log.error("launch of job %s raised", job.id, exc_info=exc)
            self._launch_errors[job.id] = (f"{type(exc).__name__}: {exc}", False)

    def _gang(self, job: LiveJob, *, attempt: int, placement: Mapping[int, str]) -> GangLaunch:
        spec = self._specs[job.id]
        output_dir = self._output_dir(job.id)
        extra = dict(self.extra_env(spec)) if self.extra_env else {}
        extra["TRAINYARD_QUEUE"] = job.queue
        workers = build_workers(
            job_id=job.id,
            name=job.name,
            kind=job.kind,
            spec=spec,
            attempt=attempt,
            placement=placement,
            rendezvous=self.backend.rendezvous(job.id, attempt),
            output_dir=output_dir,
            checkpoint_dir=self._checkpoint_dir(spec),
            runtime=self._runtime,
            extra_env=extra,
        )
        return GangLaunch(
            job_id=job.id,
            attempt=attempt,
            name=job.name,
            queue=job.queue,
            owner=job.owner,
            workers=workers,
            image=spec.get("image"),
            labels=dict(spec.get("labels") or {}),
            annotations=dict(spec.get("annotations") or {}),
            spec=spec,
        )

    def _forget_restarted(self, jobs: Sequence[LiveJob], decisions: Mapping[str, Any]) -> None:
        """Service replicas to restart: drop their exited workers so launch recreates them."""
        forget = getattr(self.backend, "forget_worker", None)
        for job in jobs:
            for index in decisions[job.id].restart:
                if forget is not None and not forget(job.id, job.attempt, index):
                    # Still going (a pod being deleted): once it is gone the replica is
                    # missing and the service branch launches it then.
                    decisions[job.id].launch = False

    def _publish_endpoints(
        self, live: Sequence[LiveJob], by_job: Mapping[str, Sequence[WorkerStatus]]
    ) -> None:
        """Each live service's endpoint and ready replicas into the store, on change."""
        services: list[tuple[LiveJob, Mapping[str, Any], list[str], list[str]]] = []
        for job in live:
            spec = self._specs.get(job.id)
            if spec is None or not is_service(spec) or job.state is JobState.PENDING:
                continue
            # A replica answers on its serve address (locally: its metrics address). Its
            # readiness is the backend's verdict where it has one (a pod's Ready
            # condition: the kubelet probes), else the loop's own probe of /healthz.
            serving = [
                w
                for w in by_job.get(job.id, ())
                if w.attempt == job.attempt
                and w.phase is WorkerPhase.RUNNING
                and not w.stopping
                and (w.serve_address or w.metrics_address)
            ]
            probed = [w.metrics_address for w in serving if w.ready is None and w.metrics_address]
            observed = [w.serve_address or w.metrics_address for w in serving if w.ready]
            services.append((job, spec, probed, observed))  # type: ignore[arg-type]
        # One call with every service's replicas: `ready` also sets what the prober
        # probes, so a call per service would leave only the last one probed (and every
        # other service never ready while two run at once).
        ready_now = set(self._prober.ready(a for _, _, probed, _ in services for a in probed))
        current: dict[str, tuple[str | None, tuple[str, ...]]] = {}
        for job, spec, probed, observed in services:
            ready = tuple(sorted([*(a for a in probed if a in ready_now), *observed]))
            current[job.id] = (service_endpoint(self.backend, job, spec), ready)
        for job_id in self._restarts.jobs() - {job.id for job in live}:
            self._restarts.forget_job(job_id)
        write, drop = self._endpoints.changes(current)
        if not write and not drop:
            return
        try:
            with write_transaction(self.engine) as conn:
                for job_id, (endpoint, ready) in write.items():
                    publish_endpoint(conn, job_id=job_id, endpoint=endpoint, ready=ready)
                drop_endpoints(conn, drop)
            self._endpoints.applied(write, drop)
        except Exception:
            log.exception("publishing service endpoints failed; retried next cycle")

    def _checkpoint_dir(self, spec: Mapping[str, Any]) -> str | None:
        """Where an inference job's model comes from: its `serve_checkpoint`, or the output
        directory of the training job named by `checkpoint_job`."""
        if spec.get("checkpoint_job"):
            model_dir = getattr(self.backend, "model_dir", None)  # its own mount of them
            if model_dir is not None:
                return str(model_dir(str(spec["checkpoint_job"])))
            return self._output_dir(str(spec["checkpoint_job"]))
        checkpoint = spec.get("serve_checkpoint")
        return None if checkpoint is None else str(checkpoint)

    def _output_dir(self, job_id: str) -> str:
        output_dir = getattr(self.backend, "output_dir", None)
        if output_dir is not None:
            return str(output_dir(job_id))
        return str(layout.job_output_dir(self.home, job_id))

    def _stop(self, job_id: str, *, reason: str, report: CycleReport) -> None:
        try:
            self.backend.stop(job_id, grace_seconds=self.stop_grace_seconds, reason=reason)
            report.stopped.append(job_id)
        except Exception:
            log.exception("stop of job %s raised; retried next cycle", job_id)
