"""Rolling updates and replica counts of a model service: the next step, decided purely.

A service's replicas are the workers of one admitted attempt, each with a stable index
(its identity: job, attempt, index) and the revision of the job document it was launched
with. A PATCH of a launch-relevant field (checkpoint, image, runtime, env, ...) makes the
document a new revision; the replicas of older revisions are then replaced one at a time,
each new one READY (answering its health route, in the published endpoints) before an
old one is stopped. Extra room is asked of the core first (a surge replica, placed and
counted against quota like any other); when the core has none, one old replica is
stopped first ("one down at a time"). The same step function moves the replica count to
its target (the document's `replicas`, or the autoscaler's choice) when nothing is old.

A new revision whose replica cannot run at all (its program exits with bad input: a
checkpoint that does not load, an executable not found) is rolled back while replicas
of an older revision still serve (what a Kubernetes Deployment's rollout and KServe's
canary do): the rollout stops, the service goes back to the newest older revision that
has live replicas, and the job's reason and an event carry the loader's words
(`rollback_for`). A service with no older replica left fails as before.

`next_step` and `rollback_for` are pure: no clock, no I/O, the same answer for the same
inputs, so the order of a rollout is tested as a table (tests/unit/operator/
test_rollout.py). The loop's glue (service_control.py) observes, asks the core, writes
and acts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from trainyard.service_revisions import revision_of

__all__ = ["Replica", "Rollback", "Step", "next_index", "next_step", "revision_of", "rollback_for"]


@dataclass(frozen=True, slots=True)
class Replica:
    """One replica as observed: its revision, and whether it serves (`ready`) or died."""

    index: int
    revision: int
    ready: bool = False
    exited: bool = False


@dataclass(frozen=True, slots=True)
class Step:
    """What to do now: place one more replica of the current revision (`add`), stop
    `remove`, and, if the added one cannot be placed (no room), stop `remove_if_no_room`
    instead so that its room frees up (one down at a time)."""

    add: bool = False
    remove: tuple[int, ...] = ()
    remove_if_no_room: int | None = None
    rolling: bool = False  # replicas of an older revision are left

    @property
    def idle(self) -> bool:
        return not self.add and not self.remove


def _removal_order(replica: Replica) -> tuple[bool, bool, int]:
    """Dead first, then not ready, then the oldest index."""
    return (not replica.exited, replica.ready, replica.index)


def next_step(replicas: Sequence[Replica], *, revision: int, target: int) -> Step:
    """The next step towards `target` replicas, all of `revision`, all ready.

    - A dead replica of an older revision is dropped at once (it serves nothing; its
      replacement is of the current revision).
    - While a replica of the current revision is still starting, no old one is stopped
      (one at a time: each new one ready before an old one goes).
    - With old replicas left: above the target, stop one old one; otherwise add one
      (a surge), and stop an old one instead if there is no room for it.
    - With none old: add below the target, stop one above it (dead or unready first,
      then the newest index).
    """
    target = max(target, 1)
    old = [r for r in replicas if r.revision != revision]
    new = [r for r in replicas if r.revision == revision]
    dead_old = tuple(sorted(r.index for r in old if r.exited))
    live_old = sorted((r for r in old if not r.exited), key=_removal_order)
    starting = [r for r in new if not r.ready]
    if live_old:
        if starting:
            return Step(remove=dead_old, rolling=True)
        count = len(new) + len(live_old)
        if count > target:
            return Step(remove=(*dead_old, live_old[0].index), rolling=True)
        if count == target:
            return Step(
                add=True, remove=dead_old, remove_if_no_room=live_old[0].index, rolling=True
            )
        return Step(add=True, remove=dead_old, rolling=True)
    if len(new) < target:
        return Step(add=True, remove=dead_old, rolling=bool(dead_old))
    if len(new) > target:
        victim = sorted(new, key=lambda r: (not r.exited, r.ready, -r.index))[0]
        return Step(remove=(*dead_old, victim.index))
    return Step(remove=dead_old)


def next_index(placement: Mapping[int, str], known: Sequence[int] = ()) -> int:
    """A fresh replica index: above every index placed or still known to the backend
    (a stopping replica keeps its identity until it is gone)."""
    return max([*placement, *known], default=-1) + 1


@dataclass(frozen=True, slots=True)
class Rollback:
    """Revision `bad` cannot run (replica `index` failed with `reason`, the loader's
    words) while replicas of revision `good` still serve: go back to `good`."""

    bad: int
    good: int
    index: int
    reason: str

    @property
    def note(self) -> str:
        """The job event and the reason's words."""
        return (
            f"revision {self.bad} failed: replica {self.index} cannot start: {self.reason}; "
            f"rolled back to revision {self.good}"
        )


def rollback_for(
    replicas: Sequence[Replica], *, revision: int, failed: int, reason: str
) -> Rollback | None:
    """What to do when replica `failed` exited for good (its program cannot run): a
    Rollback to the newest older revision that still has a live replica; None when the
    failed replica is of the current revision and none older is left (the service
    fails, as a new one whose checkpoint does not load). A failed replica of an older
    revision never rolls anything back (`next_step` drops it: it is being replaced)."""
    by_index = {r.index: r for r in replicas}
    failing = by_index.get(failed)
    if failing is None or failing.revision != revision:
        return None
    older = [r.revision for r in replicas if not r.exited and r.revision < revision]
    if not older:
        return None
    return Rollback(bad=revision, good=max(older), index=failed, reason=reason)
