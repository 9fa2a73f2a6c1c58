"""The container's termination message: how a pod's worker 0 tells the control plane
which checkpoints it left, when nothing else can (see trainyard.checkpoint_index).

Active only where the backend sets TRAINYARD_TERMINATION_LOG (in a pod:
/dev/termination-log, whose contents the kubelet copies into the pod's status when the
container ends). Once the file is written the kubelet no longer falls back to the last
log lines on a failure, so a failing worker writes its last words there itself, before
the report. Best effort throughout: a report must never fail a training step.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from trainyard.checkpoint_index import REPORT_MARKER, report_line

log = logging.getLogger(__name__)
ENV = "TRAINYARD_TERMINATION_LOG"
MAX_FAILURE_CHARS = 1500


def _path() -> Path | None:
    value = os.environ.get(ENV, "")
    return Path(value) if value else None


def _report_in(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return next((ln for ln in text.splitlines() if ln.startswith(REPORT_MARKER)), "")


def report_checkpoints(directory: Path) -> None:
    """Replace the message with the report of `directory`'s checkpoints."""
    path = _path()
    if path is None:
        return
    try:
        path.write_text(report_line(directory) + "\n")
    except OSError as exc:
        log.warning("could not write the checkpoint report to %s: %s", path, exc)


def record_failure(summary: str) -> None:
    """Put a failure's summary before the report (the message the user sees)."""
    path = _path()
    if path is None:
        return
    report = _report_in(path)
    if not report:
        return  # nothing written yet: the kubelet's fallback to the log tail still works
    text = summary.strip()[-MAX_FAILURE_CHARS:]
    try:
        path.write_text(f"{text}\n{report}\n")
    except OSError as exc:
        log.warning("could not write the failure to %s: %s", path, exc)
