"""What one worker of a stored job document asks for, in the core's integer units.

Shared by the API's cluster and quota views and by the operator (launch contract,
snapshots), which must not import each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainyard.scheduler.quantity import cpu_millicores, memory_bytes


def worker_resources(spec: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """(millicores, bytes, GPUs, TPU chips) per worker; raises QuantityError on a bad
    quantity (a stored document was validated at submit, so only a corrupted one)."""
    resources = spec.get("resources") or {}
    return (
        cpu_millicores(str(resources.get("cpu", "1"))),
        memory_bytes(str(resources.get("memory", "1Gi"))),
        int(resources.get("gpu", 0) or 0),
        int(resources.get("tpu", 0) or 0),
    )
