"""Undoing a trial release restores GPU shares to the slots they held.

Preemption releases candidate victims, tries the preemptor, and rolls back what it does not
need. Re-taking fractional-GPU shares by best fit could put them in other slots than before
and fragment the node so that a later share no longer fits ("over-committed on
accelerators", found by hypothesis in test_preemption_frees_what_it_claims); `restore` is
the exact inverse of `release`.
"""

from __future__ import annotations

import pytest

from trainyard.scheduler.capacity import ClusterIndex
from trainyard.scheduler.types import Node, WorkerRequest


def _shares(index: ClusterIndex, *milli: int) -> list:
    return [index.take(0, WorkerRequest(cpu_millicores=1, gpu_share_milli=m), 1) for m in milli]


def _index() -> ClusterIndex:
    return ClusterIndex([Node("n", 64_000, 2**40, gpus=2)], "trainyard.io/rack")


def test_best_fit_retake_after_releases_can_fragment_the_node() -> None:
    """The failure restore prevents: 500+500 on GPU 0, 700+200 on GPU 1, released
    latest-first; taking them back by best fit runs out of whole GPUs."""
    index = _index()
    a, b, c, _d = _shares(index, 500, 700, 500, 200)
    released = [c, b, a]
    for allocation in released:
        index.release(allocation)
    with pytest.raises(ValueError, match="over-committed on accelerators"):
        for allocation in reversed(released):
            index.take(allocation.node, allocation.request, allocation.count)


def test_restore_puts_every_share_back_in_its_slot() -> None:
    index = _index()
    allocations = _shares(index, 500, 700, 500, 200)
    before = (list(index.free_units), dict(index.partial[0] or {}), index.free_cpu[0])
    a, b, c, _d = allocations
    released = [c, b, a]
    for allocation in released:
        index.release(allocation)
    restored = [index.restore(allocation) for allocation in reversed(released)]
    assert [r.share_slots for r in restored] == [a.share_slots, b.share_slots, c.share_slots]
    assert (list(index.free_units), dict(index.partial[0] or {}), index.free_cpu[0]) == before
