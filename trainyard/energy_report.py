"""The GPU energy a pod's ranks report in its termination message, for the accounting.

On the local backend each rank writes its NVML reading to a file in the job's output
directory (trainyard.worker.metrics) and the loop adds them up. On Kubernetes the
control plane cannot read the pods' volume, so every rank also puts its figure in its
container's termination message, which the kubelet copies into the pod's status when
the container ends (done, failed or stopped). Each pod carries its own ranks' figures:
no collective is needed, and a gang whose peers are already gone still reports.

The line format is the contract between the worker (trainyard.worker.termination
writes it) and the control plane (trainyard.operator.kubernetes.observe reads it), so
it lives here, importing neither: one line, the marker and a JSON object of global rank
-> joules, e.g. `trainyard-energy {"0":1500.25,"1":250.5}`. The kubelet keeps only the
message's last 4096 bytes, so the writer puts this short line last.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

ENERGY_MARKER = "trainyard-energy "
MAX_RANKS = 64  # per pod: ~20 bytes each, the line stays far inside the kubelet's 4096
MAX_RANK = 2**31
MAX_JOULES = 1e15  # ~280 GWh: anything larger is not a reading of one process's GPU


def energy_line(ranks: Mapping[int, float]) -> str:
    """The report of these ranks' energy: the marker and compact JSON, one line."""
    kept = sorted(ranks.items())[:MAX_RANKS]
    body = {str(rank): round(float(joules), 3) for rank, joules in kept}
    return ENERGY_MARKER + json.dumps(body, separators=(",", ":"))


def _reading(rank: str, joules: object) -> tuple[int, float] | None:
    if not (rank.isascii() and rank.isdigit()) or isinstance(joules, bool):
        return None
    number = int(rank)
    if number >= MAX_RANK:
        return None
    if not isinstance(joules, int | float) or not math.isfinite(joules):
        return None
    if not 0 <= joules <= MAX_JOULES:
        return None
    return number, float(joules)


def parse_energy(text: str) -> tuple[dict[int, float] | None, str]:
    """(the reported rank -> joules, or None when `text` holds no report; the other text).

    Malformed entries are left out rather than trusted: the message is written by a
    user's container and read by the control plane."""
    found: dict[int, float] | None = None
    rest: list[str] = []
    for line in text.splitlines():
        if not line.startswith(ENERGY_MARKER):
            rest.append(line)
            continue
        try:
            loaded = json.loads(line[len(ENERGY_MARKER) :])
        except ValueError:
            continue
        if not isinstance(loaded, dict):
            continue
        found = {}
        for rank, joules in list(loaded.items())[:MAX_RANKS]:
            reading = _reading(rank, joules)
            if reading is not None:
                found[reading[0]] = reading[1]
    return found, "\n".join(rest)
