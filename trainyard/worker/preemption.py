"""SIGTERM as a request, not an interruption.

Kubernetes sends SIGTERM on preemption, cancellation and node drain, then SIGKILL after the
grace period. The handler only sets a flag; the training loop checks it at the next step
boundary, all ranks agree through a collective (so none is left waiting in an all-reduce),
rank 0 writes a checkpoint and every rank exits in order.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

log = logging.getLogger(__name__)

# Exit status of a run that stopped early on SIGTERM after checkpointing (128 + SIGTERM), so a
# backend never mistakes a preempted run for a finished one.
PREEMPTED_EXIT_CODE = 143


class PreemptionFlag:
    """Set by SIGTERM; read by the training loop once per step."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: object = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.requested:
            log.warning("received signal %d: will checkpoint and stop at the next step", signum)
        self.requested = True

    def install(self) -> PreemptionFlag:
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)  # type: ignore[arg-type]
            self._previous = None
