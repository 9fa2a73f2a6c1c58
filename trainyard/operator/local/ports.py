"""Free loopback ports for rendezvous and metrics, chosen below the ephemeral range.

Ports handed to workers are bound by them later (torchrun's store, the metrics
server), so a port is "free" when nothing is bound to it now AND no live worker of ours
was given it. Candidates come from a range below the kernel's ephemeral range
(`ip_local_port_range`, where outgoing connections take their local ports), so the
many connections gloo/NCCL open cannot occupy a port between its choice and its use.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Collection
from pathlib import Path

DEFAULT_PORT_RANGE = range(20000, 32768)
_ATTEMPTS = 200


def ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (32768 when unreadable)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def usable_range(ports: range) -> range:
    """`ports` without the part that overlaps the ephemeral range (when any is left)."""
    stop = min(ports.stop, ephemeral_start())
    return range(ports.start, stop) if stop > ports.start else ports


def is_bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_block(ports: range, size: int, taken: Collection[int], rng: random.Random) -> int:
    """The first port of `size` consecutive ports in `ports`, none taken or bound.

    Random rather than first-fit: several servers (or test sessions) on one machine
    then rarely race for the same port. OSError when none is found.
    """
    if size < 1:
        raise ValueError("size must be >= 1")
    last_start = ports.stop - size
    if last_start < ports.start:
        raise OSError(f"port range {ports.start}-{ports.stop - 1} is smaller than {size}")
    for _ in range(_ATTEMPTS):
        start = rng.randint(ports.start, last_start)
        block = range(start, start + size)
        if any(port in taken for port in block):
            continue
        if all(is_bindable(port) for port in block):
            return start
    raise OSError(
        f"no {size} free consecutive loopback port(s) in {ports.start}-{ports.stop - 1} "
        f"after {_ATTEMPTS} tries"
    )
