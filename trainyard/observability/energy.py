"""An attempt's GPU energy, as its workers recorded it (see trainyard.worker.metrics).

Each rank with an NVML energy counter writes `<output>/energy/attempt-<n>-rank-<r>.json`
at exit; the loop calls `attempt_energy_joules` when the attempt ends and stores the sum
in `job_attempts.energy_joules`, which `/v1/usage` reports. Read here, not imported from
the worker, so the control plane never imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path


def attempt_energy_joules(output_dir: Path, attempt: int) -> float | None:
    """The GPU energy all ranks of `attempt` recorded; None when none did (no NVML)."""
    total, found = 0.0, False
    for path in sorted((Path(output_dir) / "energy").glob(f"attempt-{attempt}-rank-*.json")):
        try:
            total += float(json.loads(path.read_text(encoding="utf-8"))["joules"])
            found = True
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a rank killed while writing: count what the others measured
    return total if found else None
