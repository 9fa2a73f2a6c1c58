"""The container's termination message: how a pod's workers tell the control plane what
it cannot see itself (worker 0's checkpoints, see trainyard.checkpoint_index; every
rank's GPU energy, see trainyard.energy_report).

Active only where the backend sets TRAINYARD_TERMINATION_LOG (in a pod:
/dev/termination-log, whose contents the kubelet copies into the pod's status when the
container ends). Once the file is written the kubelet no longer falls back to the last
log lines on a failure, so a failing worker writes its last words there itself, before
the reports. The message is three parts, in this order: a failure's summary, the
checkpoint report, the energy report. Each writer replaces its own part and keeps the
others; the ranks of a pod share the file, so every rewrite holds an exclusive lock on
it. The kubelet keeps the last 4096 bytes: the short energy line goes last, the
failure's text (the part that may be cut) first. Best effort throughout: a report must
never fail a training step.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainyard.checkpoint_index import REPORT_MARKER, report_line
from trainyard.energy_report import ENERGY_MARKER, energy_line, parse_energy

log = logging.getLogger(__name__)
ENV = "TRAINYARD_TERMINATION_LOG"
MAX_FAILURE_CHARS = 1500


@dataclass(slots=True)
class Message:
    """The termination message's parts ("" where a part is not written)."""

    failure: str = ""
    checkpoints: str = ""  # the checkpoint report line
    energy: str = ""  # the energy report line

    @classmethod
    def parse(cls, text: str) -> Message:
        message, other = cls(), []
        for line in text.splitlines():
            if line.startswith(REPORT_MARKER):
                message.checkpoints = line
            elif line.startswith(ENERGY_MARKER):
                message.energy = line
            else:
                other.append(line)
        message.failure = "\n".join(other).strip()
        return message

    def render(self) -> str:
        parts = (self.failure, self.checkpoints, self.energy)
        return "".join(f"{part}\n" for part in parts if part)


def _path() -> Path | None:
    value = os.environ.get(ENV, "")
    return Path(value) if value else None


def _rewrite(path: Path, change: Callable[[Message], bool], *, create: bool = True) -> None:
    """Read the message, let `change` edit it (False: leave the file alone), write it
    back, all under an exclusive lock (the other ranks of the pod write it too)."""
    try:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    except FileNotFoundError:
        if create:
            raise
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(os.dup(fd), "rb") as current:
            message = Message.parse(current.read().decode(errors="replace"))
        if not change(message):
            return
        data = message.render().encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)  # releases the lock


def report_checkpoints(directory: Path) -> None:
    """Replace the checkpoint report with the report of `directory`'s checkpoints."""
    path = _path()
    if path is None:
        return
    line = report_line(directory)

    def change(message: Message) -> bool:
        message.checkpoints = line
        return True

    try:
        _rewrite(path, change)
    except OSError as exc:
        log.warning("could not write the checkpoint report to %s: %s", path, exc)


def report_energy(rank: int, joules: float) -> None:
    """Put this rank's GPU energy into the pod's energy report (the other ranks' stay)."""
    path = _path()
    if path is None:
        return

    def change(message: Message) -> bool:
        ranks, _ = parse_energy(message.energy)
        message.energy = energy_line({**(ranks or {}), rank: joules})
        return True

    try:
        _rewrite(path, change)
    except OSError as exc:
        log.warning("could not write the energy report to %s: %s", path, exc)


def record_failure(summary: str) -> None:
    """Put a failure's summary before the reports (the message the user sees)."""
    path = _path()
    if path is None:
        return
    text = summary.strip()[-MAX_FAILURE_CHARS:]

    def change(message: Message) -> bool:
        if not (message.checkpoints or message.energy):
            return False  # nothing written yet: the kubelet's fallback to the log tail works
        message.failure = text
        return True

    try:
        _rewrite(path, change, create=False)
    except OSError as exc:
        log.warning("could not write the failure to %s: %s", path, exc)
