"""The loop's glue for rolling updates and autoscaling of model services.

The decisions are pure (rollout.next_step, autoscale.decide); this module observes,
asks the core and acts, in the loop's own phases so that every change is one of its
version-conditional writes:

1. read: a service's document may change (PATCH /v1/jobs/{id}); its cached copy is
   reloaded when the job's version moved (`refresh_specs`).
2. plan, per RUNNING service: which replicas are of an older revision, which are ready
   (in the endpoints the loop published from its health probes), what the target count
   is (`replicas`, or the autoscaler's from the replicas' own /metrics), and so the next
   step. A replica to add becomes a one-worker pending job for the core (`add_growth`):
   placed by the same core as everything else, counted against the queue's quota, or
   left waiting with the core's reason, which the job's reason then shows. The other
   replicas are never moved: they stay in the snapshot as the job's holds; the new one
   prefers a node none of them runs on (`PendingJob.avoid_nodes`, scoring in the core).
3. after the core: the placement (index -> node) and the per-replica revisions change
   in the job's JobChange, with an event per replica added or retired.
4. act, once that write applied: launch the added replica; stop (SIGTERM, grace) every
   worker of the attempt whose index left the placement (level-triggered: a crash
   between write and act is repaired by the next cycle).

A new revision that cannot run (rollout.rollback_for, decided in reconcile_service) is
rolled back by writing the last good revision's document back as the job's document,
in the same conditional write as everything else; the documents of the revisions
this loop has seen are kept in memory for that. A loop started after the update has
not seen the good document: it stops the rollout instead (no replica of the bad
revision is added, the older ones serve on) until the service is updated again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Connection

from trainyard.operator.autoscale import AutoscalePolicy, ScaleState, decide, observe
from trainyard.operator.backend import WorkerPhase, WorkerStatus
from trainyard.operator.reconcile import Decision
from trainyard.operator.replica_metrics import ReplicaScraper
from trainyard.operator.rollout import (
    Replica,
    Rollback,
    Step,
    next_index,
    next_step,
    revision_of,
)
from trainyard.operator.services import EndpointPublisher, RestartBook, is_service
from trainyard.scheduler.types import ClusterSnapshot, CycleResult, PendingJob
from trainyard.store.repository import dump_document
from trainyard.store.scheduling import JobChange, LiveJob, load_specs
from trainyard.store.states import JobState

log = logging.getLogger(__name__)
US = 1_000_000
GROWTH_SEPARATOR = "~"  # a replica to place: "<job id>~<index>" (job ids are hex)
KEEP_DOCUMENTS = 4  # revisions of a service's document kept for a rollback


def admission_revisions(spec: Mapping[str, Any], placement: Mapping[int, str]) -> dict[int, int]:
    """The revisions written with a service's admission: every replica is the current one."""
    revision = revision_of(spec)
    return {int(index): revision for index in placement}


@dataclass(slots=True)
class _Plan:
    job: LiveJob
    step: Step
    placement: dict[int, str]
    revisions: dict[int, int]
    revision: int
    target: int
    workers: list[WorkerStatus]
    growth_id: str | None = None
    new_placement: dict[int, str] | None = None
    added: int | None = None


@dataclass(slots=True)
class _Scale:
    replicas: int  # the document's `replicas` the state was started from
    state: ScaleState


@dataclass
class ServiceControl:
    backend: Any
    book: RestartBook
    endpoints: EndpointPublisher
    stop_grace_seconds: float = 30.0
    clock: Callable[[], float] = time.time
    scraper: ReplicaScraper = field(default_factory=ReplicaScraper)
    _seen: dict[str, int] = field(default_factory=dict)  # job id -> version of its spec
    _plans: dict[str, _Plan] = field(default_factory=dict)
    _scale: dict[str, _Scale] = field(default_factory=dict)
    _rolling: set[str] = field(default_factory=set)
    # job id -> revision -> the document of that revision, as this loop read it.
    _documents: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    # job id -> (revision it went back to, the note): kept in the reason while it stays.
    _rolled_back: dict[str, tuple[int, str]] = field(default_factory=dict)
    # job id -> (a bad revision the loop could not roll back from, the note).
    _held: dict[str, tuple[int, str]] = field(default_factory=dict)

    # ------------------------------------------------------------------ 1. read

    def refresh_specs(
        self,
        conn: Connection,
        live: Sequence[LiveJob],
        specs: MutableMapping[str, dict[str, Any]],
        derived: Sequence[MutableMapping[str, Any]] = (),
    ) -> list[str]:
        """Reload the documents of services whose version moved since they were read;
        drop what was derived from a changed one (`derived`: the loop's caches by id).
        Returns the ids whose document changed. Called first in every cycle."""
        self._plans.clear()  # a cycle that ended before acting leaves nothing behind
        stale = []
        for job in live:
            spec = specs.get(job.id)
            if spec is None or not is_service(spec):
                continue
            seen = self._seen.get(job.id)
            if seen is None:
                self._seen[job.id] = job.version  # read in this same transaction
                self._remember(job.id, spec)
            elif seen != job.version:
                stale.append(job)
        changed = []
        if stale:
            fresh = load_specs(conn, [job.id for job in stale])
            for job in stale:
                self._seen[job.id] = job.version
                spec = fresh.get(job.id)
                if spec is not None and spec != specs[job.id]:
                    specs[job.id] = spec
                    changed.append(job.id)
                    self._remember(job.id, spec)
                    for cache in derived:
                        cache.pop(job.id, None)
        live_ids = {job.id for job in live}
        for job_id in [j for j in self._seen if j not in live_ids]:
            del self._seen[job_id]
            self._scale.pop(job_id, None)
            self._rolling.discard(job_id)
            self._documents.pop(job_id, None)
            self._rolled_back.pop(job_id, None)
            self._held.pop(job_id, None)
        return changed

    def _remember(self, job_id: str, spec: Mapping[str, Any]) -> None:
        revision = revision_of(spec)
        documents = self._documents.setdefault(job_id, {})
        documents[revision] = dict(spec)
        for old in sorted(documents)[:-KEEP_DOCUMENTS]:
            del documents[old]
        back = self._rolled_back.get(job_id)
        if back is not None and back[0] != revision:
            del self._rolled_back[job_id]  # updated since: that note is history
        held = self._held.get(job_id)
        if held is not None and held[0] != revision:
            del self._held[job_id]

    # ------------------------------------------------------------------ 2. plan

    def plan(
        self,
        job: LiveJob,
        spec: Mapping[str, Any],
        workers: Sequence[WorkerStatus],
        decision: Decision,
        *,
        now_us: int,
    ) -> None:
        """Decide this cycle's step for one service (see the module docstring)."""
        if (
            job.state is not JobState.RUNNING
            or job.stop_target is not None
            or decision.stop
            or not job.placement
            or (decision.change is not None and decision.change.transitions)
        ):
            return
        held = self._held.get(job.id)
        if decision.rollback is not None and (held is None or held[0] != decision.rollback.bad):
            self._rollbacks[job.id] = (job, decision.rollback)
            return  # the document changes (or the rollout stops): planned anew next cycle
        placement = dict(job.placement)
        current = [w for w in workers if w.attempt == job.attempt]
        by_index = {w.index: w for w in current}
        revisions = dict(job.replica_revisions or {})
        revision = revision_of(spec)
        ready_addresses = set(self.endpoints.published.get(job.id, (None, ()))[1])
        replicas = []
        for index in sorted(placement):
            worker = by_index.get(index)
            ready = (
                worker is not None
                and worker.phase is WorkerPhase.RUNNING
                and not worker.stopping
                and (
                    worker.ready  # the backend's verdict (a pod's Ready condition)
                    if worker.ready is not None
                    else worker.metrics_address in ready_addresses  # the loop's probe
                )
            )
            exited = worker is not None and worker.phase.exited
            replicas.append(Replica(index, revisions.get(index, 1), ready, exited))
        old_dead = {r.index for r in replicas if r.exited and r.revision != revision}
        if old_dead:  # replaced by the current revision, never restarted as the old one
            decision.restart = [i for i in decision.restart if i not in old_dead]
        draining = {w.index: w.node for w in current if w.index not in placement}
        if draining:  # retired replicas hold their room until they are gone
            decision.holds = {**placement, **draining}
        target = self._target(job, spec, replicas, revision, current, now_us=now_us)
        step = next_step(replicas, revision=revision, target=target)
        if held is not None and held[0] == revision:
            # The rollout of a revision that cannot run stopped here: its dead replicas
            # go, none is added, the older ones serve on.
            dead = tuple(r.index for r in replicas if r.exited and r.revision == revision)
            step = Step(remove=dead)
            target = len(replicas) - len(dead)
        plan = _Plan(job, step, placement, revisions, revision, target, current)
        if step.add:
            index = next_index(placement, [w.index for w in current])
            plan.growth_id = f"{job.id}{GROWTH_SEPARATOR}{index}"
            plan.added = index
        self._plans[job.id] = plan
        if step.rolling:
            self._rolling.add(job.id)

    def _target(
        self,
        job: LiveJob,
        spec: Mapping[str, Any],
        replicas: Sequence[Replica],
        revision: int,
        current: Sequence[WorkerStatus],
        *,
        now_us: int,
    ) -> int:
        asked = int(spec.get("replicas") or spec.get("workers") or 1)
        policy = AutoscalePolicy.of(spec)
        if policy is None:
            self._scale.pop(job.id, None)
            return asked
        scale = self._scale.get(job.id)
        if scale is None or scale.replicas != asked:
            # First sight (a loop that just started keeps what runs), or a new `replicas`
            # from a PATCH (which then wins).
            start = len(replicas) if scale is None else asked
            scale = self._scale[job.id] = _Scale(asked, ScaleState(policy.clamp(start), now_us))
        ready = [r for r in replicas if r.ready]
        settled = len(ready) == len(replicas) == scale.state.target and all(
            r.revision == revision for r in replicas
        )
        ready_indexes = {r.index for r in ready}
        addresses = sorted(
            w.metrics_address for w in current if w.index in ready_indexes and w.metrics_address
        )
        self.scraper.want(job.id, addresses)
        if not settled:
            return scale.state.target
        window = self.scraper.window(job.id, since=scale.state.changed_at_us / US)
        observed = observe(
            policy.metric,
            latency_delta=window.latency_delta,
            inflight_samples=window.inflight_samples,
            replicas=len(ready),
            rounds=window.rounds,
        )
        before = scale.state.target
        scale.state = decide(scale.state, observed, policy, now_us=now_us)
        if scale.state.target != before and observed is not None:
            self._notes.setdefault(job.id, []).append(
                f"autoscaling: {policy.metric} {observed:.3g} "
                f"{'above' if scale.state.target > before else 'well below'} target "
                f"{policy.target:g}: {before} -> {scale.state.target} replicas"
            )
        return scale.state.target

    def add_growth(self, snapshot: ClusterSnapshot, shapes: Mapping[str, Any]) -> ClusterSnapshot:
        """The snapshot with one pending one-worker job per replica to place."""
        growth = []
        for plan in self._plans.values():
            if plan.growth_id is None:
                continue
            job = plan.job
            shape = shapes[job.id]
            growth.append(
                PendingJob(
                    id=plan.growth_id,
                    request=shape.request,
                    workers=1,
                    queue=job.queue,
                    priority=job.priority_value,
                    submit_time=job.created_at / US,
                    runtime_limit=None,
                    preemptible=False,
                    kind=shape.kind,
                    tolerations=shape.tolerations,
                    user=job.owner,
                    # Spread: another node than the replicas it joins, when one has room.
                    avoid_nodes=tuple(sorted(set(plan.placement.values()))),
                )
            )
        if not growth:
            return snapshot
        return replace(snapshot, pending=(*snapshot.pending, *growth))

    # ------------------------------------------------------------------ 3. after the core

    def after_schedule(self, result: CycleResult, changes: dict[str, JobChange]) -> None:
        """Take the replicas' placements out of the core's result (they are no jobs of
        their own) and turn each plan into the job's placement change."""
        growth = {p.growth_id: p for p in self._plans.values() if p.growth_id is not None}
        placed: dict[str, str] = {}
        waiting: dict[str, str] = {}
        if growth:
            keep = []
            for admission in result.admissions:
                plan = growth.get(admission.job_id)
                if plan is None:
                    keep.append(admission)
                elif admission.preempts:  # a replica never evicts anyone
                    waiting[plan.job.id] = "no room without preempting other work"
                else:
                    placed[plan.job.id] = admission.placement[0]
            result.admissions[:] = keep
            for growth_id, plan in growth.items():
                reason = result.pending.pop(growth_id, None)
                if reason is not None:
                    waiting[plan.job.id] = reason.message
            result.reservations[:] = [r for r in result.reservations if r.job_id not in growth]
        for job_id, plan in self._plans.items():
            self._apply_plan(plan, placed.get(job_id), waiting.get(job_id), changes)
        for job, rollback in self._rollbacks.values():
            self._apply_rollback(job, rollback, changes)
        self._rollbacks.clear()

    def _apply_rollback(
        self, job: LiveJob, rollback: Rollback, changes: dict[str, JobChange]
    ) -> None:
        """The good revision's document back as the job's, with an event saying why;
        without that document, stop the rollout where it is."""
        change = changes.get(job.id)
        if change is None:
            change = changes[job.id] = JobChange(
                job_id=job.id, version=job.version, state=job.state
            )
        good = self._documents.get(job.id, {}).get(rollback.good)
        if good is not None:
            text = dump_document(good)
            change.values["spec"] = text
            change.values["spec_bytes"] = len(text)
            note = rollback.note
            self._rolled_back[job.id] = (rollback.good, note)
        else:
            note = (
                f"revision {rollback.bad} failed: replica {rollback.index} cannot start: "
                f"{rollback.reason}; rollout stopped, revision {rollback.good} serves on "
                "(update the service to roll forward)"
            )
            self._held[job.id] = (rollback.bad, note)
        change.notes.append(note)
        self.book.status[job.id] = note
        self._rolling.discard(job.id)

    def _apply_plan(
        self,
        plan: _Plan,
        node: str | None,
        waiting: str | None,
        changes: dict[str, JobChange],
    ) -> None:
        job, step = plan.job, plan.step
        remove = set(step.remove)
        if step.add and node is None and step.remove_if_no_room is not None:
            remove.add(step.remove_if_no_room)  # no room for a surge: one down first
        notes = self._notes.pop(job.id, [])
        why = "replaced by revision" if step.rolling else "scaled down"
        for index in sorted(remove):
            notes.append(
                f"replica {index} (revision {plan.revisions.get(index, 1)}) retired: "
                f"{why}{f' {plan.revision}' if step.rolling else ''}"
            )
        new_placement = {i: n for i, n in plan.placement.items() if i not in remove}
        revisions = {i: plan.revisions.get(i, 1) for i in new_placement}
        if node is not None and plan.added is not None:
            new_placement[plan.added] = node
            revisions[plan.added] = plan.revision
            notes.append(f"replica {plan.added} (revision {plan.revision}) added on {node}")
        else:
            plan.added = None
        if not step.rolling and job.id in self._rolling and not step.add and not remove:
            self._rolling.discard(job.id)
            count = len(new_placement)
            notes.append(
                f"rolled out revision {plan.revision}: {count} replica{'s' if count != 1 else ''}"
            )
        status = []
        for kept in (self._rolled_back.get(job.id), self._held.get(job.id)):
            if kept is not None and kept[0] == plan.revision:
                status.append(kept[1])
        if step.rolling:
            updated = sum(1 for r in revisions.values() if r == plan.revision)
            status.append(
                f"rolling to revision {plan.revision}: {updated} of {plan.target} replicas updated"
            )
        elif len(plan.placement) != plan.target:
            status.append(f"scaling to {plan.target} replicas")
        if step.add and node is None and waiting:
            status.append(f"a new replica waits: {waiting}")
        self.book.status[job.id] = "; ".join(status)
        if new_placement == plan.placement and revisions == plan.revisions and not notes:
            return
        change = changes.get(job.id)
        if change is None:
            change = changes[job.id] = JobChange(
                job_id=job.id, version=job.version, state=job.state
            )
        if new_placement != plan.placement or revisions != plan.revisions:
            change.values["placement"] = new_placement
            change.values["replica_revisions"] = revisions
            plan.new_placement = new_placement
        if len(new_placement) != len(plan.placement):  # what usage accounting counts
            change.replica_count = (job.attempt, len(new_placement), len(plan.placement))
        change.notes.extend(notes)

    # ------------------------------------------------------------------ 4. act

    def act(
        self,
        applied: Iterable[str],
        launch: Callable[[Sequence[tuple[LiveJob, int, Mapping[int, str]]]], None],
    ) -> None:
        """Launch added replicas and stop retired ones, for the writes that applied."""
        applied = set(applied)
        items = []
        try:
            for job_id, plan in self._plans.items():
                placement = plan.placement
                if plan.new_placement is not None:
                    if job_id not in applied:
                        continue  # lost a race (a cancel, a PATCH): decided anew next cycle
                    placement = plan.new_placement
                    if plan.added is not None:
                        items.append((plan.job, plan.job.attempt, placement))
                for worker in plan.workers:
                    if worker.index not in placement:
                        self._retire(worker)
            if items:
                launch(items)
        finally:
            self._plans.clear()
            live = set(self._seen)
            self.scraper.drop_except(j for j in self._scale if j in live)

    def _retire(self, worker: WorkerStatus) -> None:
        stop_worker = getattr(self.backend, "stop_worker", None)
        try:
            if stop_worker is not None:
                stop_worker(
                    worker.job_id,
                    worker.attempt,
                    worker.index,
                    grace_seconds=self.stop_grace_seconds,
                    reason="replica retired",
                )
            elif worker.phase.exited:
                forget = getattr(self.backend, "forget_worker", None)
                if forget is not None:
                    forget(worker.job_id, worker.attempt, worker.index)
        except Exception:  # retried next cycle: the worker is still outside the placement
            log.exception("stopping replica %s of job %s raised", worker.index, worker.job_id)

    def close(self) -> None:
        self.scraper.close()

    # per-cycle scratch, initialised here so the dataclass fields above stay the state
    def __post_init__(self) -> None:
        self._notes: dict[str, list[str]] = {}
        self._rollbacks: dict[str, tuple[LiveJob, Rollback]] = {}
