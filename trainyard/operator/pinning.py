"""Restarts of jobs whose checkpoints stay on worker 0's node: ask the core for that node.

Without ReadWriteMany storage, a Kubernetes job's checkpoints live on the node its
worker 0 ran on (storage.keeps_node_checkpoints). When such a job is pending again
after an attempt (preempted, retried after a failure), its PendingJob names the node
of the previous attempt's worker 0, read from that attempt's row in `job_attempts`, as
`preferred_node`: the core puts worker 0 back there when it can and otherwise places
the gang as usual (trainyard.scheduler.pinning). The admission's job event says which
happened, and why not: the node is gone, not ready, cordoned, or has no room for worker 0.

Only jobs the backend says keep node-local checkpoints are looked at (its optional
`checkpoint_node_local(spec)` hook; the local backend has one machine and nothing to
pin), and each job's previous placement is read once per attempt.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import Engine, select

from trainyard.scheduler.types import Node, PendingJob
from trainyard.store import read_transaction
from trainyard.store.scheduling import LiveJob
from trainyard.store.tables import job_attempts

CORDONED = "node.kubernetes.io/unschedulable"  # the taint a cordoned node carries


def pin_note(
    preferred: str, previous_attempt: int, placement: Sequence[str], nodes: Mapping[str, Node]
) -> str:
    """The job event of an admission that asked for worker 0 on `preferred`."""
    where = f"node {preferred}, where worker 0 of attempt {previous_attempt} kept them"
    if placement and placement[0] == preferred:
        return f"checkpoints: worker 0 is back on {where}"
    node = nodes.get(preferred)
    if node is None:
        why = "is gone from the cluster"
    elif not node.ready:
        why = "is not ready"
    elif any(taint.key == CORDONED for taint in node.taints):
        why = "is cordoned"
    else:
        why = "has no room for worker 0 now"
    first = placement[0] if placement else "another node"
    return (
        f"checkpoints: {where}, {why}, so they are not reachable; worker 0 starts on "
        f"{first} and the job restarts from step 0 (or from an older checkpoint of it "
        f"left on {first})"
    )


class CheckpointPins:
    """The loop's side of pinned restarts (see the module docstring)."""

    def __init__(self, engine: Engine, backend: Any) -> None:
        self.engine = engine
        self._node_local = getattr(backend, "checkpoint_node_local", None)
        # job id -> (attempt, worker 0's node in it, or None when unknown)
        self._previous: dict[str, tuple[int, str | None]] = {}
        self._asked: dict[str, tuple[str, int]] = {}  # job id -> (node, attempt) this cycle
        self._nodes: Mapping[str, Node] = {}

    def prefer(
        self,
        pending: list[PendingJob],
        jobs: Mapping[str, LiveJob],
        specs: Mapping[str, Mapping[str, Any]],
        nodes: Sequence[Node],
    ) -> list[PendingJob]:
        """`pending` with `preferred_node` set on restarts of node-local jobs."""
        self._asked = {}
        if self._node_local is None:
            return pending
        wanted = [p for p in pending if jobs[p.id].attempt >= 1 and self._node_local(specs[p.id])]
        if not wanted:
            self._previous.clear()
            return pending
        self._nodes = {node.name: node for node in nodes}
        self._load([jobs[p.id] for p in wanted])
        keep = {p.id for p in wanted}
        for job_id in [j for j in self._previous if j not in keep]:
            del self._previous[job_id]
        out = list(pending)
        positions = {p.id: i for i, p in enumerate(pending)}
        for offered in wanted:
            attempt, node = self._previous[offered.id]
            if node is not None:
                out[positions[offered.id]] = replace(offered, preferred_node=node)
                self._asked[offered.id] = (node, attempt)
        return out

    def notes(self, job_id: str, placement: Sequence[str]) -> list[str]:
        """The job event for an admission decided in the last `prefer` cycle."""
        asked = self._asked.get(job_id)
        if asked is None:
            return []
        return [pin_note(asked[0], asked[1], placement, self._nodes)]

    def _load(self, jobs: Sequence[LiveJob]) -> None:
        """Worker 0's node of each job's latest attempt, read once per attempt."""
        stale = [j for j in jobs if self._previous.get(j.id, (None,))[0] != j.attempt]
        if not stale:
            return
        wanted = {j.id: j.attempt for j in stale}
        found: dict[str, str] = {}
        with read_transaction(self.engine) as conn:
            ids = sorted(wanted)
            for start in range(0, len(ids), 500):
                query = select(
                    job_attempts.c.job_id, job_attempts.c.attempt, job_attempts.c.placement
                ).where(job_attempts.c.job_id.in_(ids[start : start + 500]))
                for row in conn.execute(query):
                    if wanted.get(row.job_id) == row.attempt:
                        node = _worker_zero(row.placement)
                        if node is not None:
                            found[row.job_id] = node
        for job_id, attempt in wanted.items():
            self._previous[job_id] = (attempt, found.get(job_id))


def _worker_zero(placement: str | None) -> str | None:
    try:
        loaded = json.loads(placement or "")
    except ValueError:
        return None
    node = loaded.get("0") if isinstance(loaded, dict) else None
    return node if isinstance(node, str) and node else None
