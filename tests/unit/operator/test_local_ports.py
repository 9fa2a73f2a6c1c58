"""Port blocks: never one that is bound now or handed to a live worker."""

from __future__ import annotations

import random
import socket

import pytest

from trainyard.operator.local.ports import free_block, usable_range

PORTS = range(28900, 28910)  # inside this suite's local-backend range


def test_a_block_avoids_taken_and_bound_ports() -> None:
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 28905))
        rng = random.Random(1)
        for _ in range(20):
            start = free_block(PORTS, 2, {28901, 28902}, rng)
            assert not {start, start + 1} & {28901, 28902, 28905}
            assert PORTS.start <= start and start + 1 < PORTS.stop


def test_no_free_block_is_an_os_error_naming_the_range() -> None:
    with pytest.raises(OSError, match="28900-28909"):
        free_block(PORTS, 3, set(PORTS), random.Random(1))


def test_the_range_stops_below_the_ephemeral_ports() -> None:
    assert usable_range(range(20000, 65536)).stop <= 61000
