"""Garbage collection in the loop's process: between cycles, never in the middle of one.

With Python's automatic collector, a store of 10,000 live jobs made a full collection
(every object, the loop's cached job documents included) happen about every other
cycle, inside it: 30-350 ms added to that cycle's latency on this machine. The loop's
process paces it instead: automatic collection off; after every cycle the young
generations are collected (what the cycle made and dropped, a few milliseconds); a
full collection at most every FULL_EVERY_SECONDS, also between cycles. Reference
counting still frees every acyclic object at once; only cyclic garbage waits, at most
until the end of the cycle that made it.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

FULL_EVERY_SECONDS = 30.0


class CollectionPacing:
    """`start()` once, `after_cycle()` after every cycle (failed ones too), `stop()`."""

    def __init__(
        self,
        *,
        full_every_seconds: float = FULL_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._full_every = full_every_seconds
        self._clock = clock
        self._last_full = clock()
        self._was_enabled = gc.isenabled()

    def start(self) -> None:
        self._was_enabled = gc.isenabled()
        gc.disable()

    def after_cycle(self) -> tuple[int, float]:
        """Collect now; returns (the generation collected, seconds it took)."""
        started = time.perf_counter()
        now = self._clock()
        if now - self._last_full >= self._full_every:
            generation = 2
            self._last_full = now
        else:
            generation = 1
        gc.collect(generation)
        return generation, time.perf_counter() - started

    def stop(self) -> None:
        if self._was_enabled:
            gc.enable()
