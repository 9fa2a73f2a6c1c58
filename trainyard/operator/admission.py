"""Backend checks the loop makes before offering a pending job to the core.

Optional hooks of a backend (the Backend protocol does not require them):

- `admission_blockers(spec) -> str | None`: why the job cannot start yet although
  capacity may be free (a PersistentVolumeClaim its volumes name does not exist); the
  job stays PENDING with that reason and is asked about again next cycle.
- `admission_notes(spec) -> list[str]`: job events to write when it is admitted (its
  checkpoints stay pod-local).

Only jobs that could be blocked are asked (`may_block`), so 10,000 pending jobs
without volumes cost nothing here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def may_block(spec: Mapping[str, Any]) -> bool:
    """Whether the job names objects that must exist before it starts (a claim, or the
    training job whose checkpoints a service serves)."""
    if spec.get("checkpoint_job"):
        return True
    return any(volume.get("pvc") for volume in spec.get("volumes") or ())


def blocker(backend: Any, spec: Mapping[str, Any]) -> str | None:
    hook = getattr(backend, "admission_blockers", None)
    return hook(spec) if hook is not None else None


def notes(backend: Any, spec: Mapping[str, Any]) -> Sequence[str]:
    hook = getattr(backend, "admission_notes", None)
    return list(hook(spec)) if hook is not None else []
