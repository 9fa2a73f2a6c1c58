"""The loop process's garbage-collection pacing (trainyard/operator/collector.py)."""

from __future__ import annotations

import gc

from trainyard.operator.collector import CollectionPacing


def test_young_collections_after_cycles_and_a_full_one_when_due() -> None:
    now = [100.0]
    pacing = CollectionPacing(full_every_seconds=30, clock=lambda: now[0])
    was_enabled = gc.isenabled()
    pacing.start()
    try:
        assert not gc.isenabled()  # no automatic collection inside a cycle
        assert pacing.after_cycle()[0] == 1
        now[0] += 29
        assert pacing.after_cycle()[0] == 1
        now[0] += 2  # 31 s since the start: a full collection is due
        assert pacing.after_cycle()[0] == 2
        assert pacing.after_cycle()[0] == 1  # and the next is 30 s away again
    finally:
        pacing.stop()
    assert gc.isenabled() == was_enabled


def test_cyclic_garbage_of_a_cycle_is_collected_after_it() -> None:
    import weakref

    class Node:
        other: object = None

    pacing = CollectionPacing(full_every_seconds=3600)
    pacing.start()
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle: reference counting alone never frees it
        alive = weakref.ref(a)
        del a, b
        assert alive() is not None
        pacing.after_cycle()
        assert alive() is None
    finally:
        pacing.stop()
