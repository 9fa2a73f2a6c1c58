"""Atomic, self-validating checkpoints with keep-latest-k, in the style of torchtitan's manager.

A checkpoint is written to a temporary file in the same directory, fsynced, renamed over
`checkpoint-<step>.pt`, and the directory is fsynced, so a crash leaves either the old set or
the new file, never a half-written one under the real name. Loading still validates, because
disks, copies and humans truncate files: an unreadable newest checkpoint is skipped with a
warning and the next one is used.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from trainyard.checkpoint_index import record_path
from trainyard.worker.termination import report_checkpoints

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^checkpoint-(\d+)\.pt$")
REQUIRED_KEYS = ("format", "step", "workload", "model", "optimizer", "scaler", "rng", "data")
FORMAT = 1


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"checkpoint-{step}.pt"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(step, path) for every file named like a checkpoint, newest first."""
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = NAME_RE.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found, reverse=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write `state` to `path` so that `path` is either absent, old, or complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def load_valid(path: Path, step: int) -> dict[str, Any]:
    """Load and check one checkpoint; raises ValueError when it is unusable."""
    try:
        # weights_only: a checkpoint directory is shared storage; never unpickle code from it.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated/corrupt archives
        raise ValueError(f"{path.name} is unreadable: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path.name} does not hold a dict")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"{path.name} lacks {', '.join(missing)}")
    if state["format"] != FORMAT or state["step"] != step:
        raise ValueError(f"{path.name} has format {state['format']} step {state['step']}")
    return state


class CheckpointManager:
    """Saves `checkpoint-<step>.pt` into one directory and keeps the newest `keep_latest`."""

    def __init__(self, directory: Path, keep_latest: int = 3, attempt: int | None = None) -> None:
        if keep_latest < 1:
            raise ValueError(f"--keep-checkpoints: must be at least 1, got {keep_latest}")
        self.directory = directory
        self.keep_latest = keep_latest
        if attempt is None:  # the attempt the control plane launched us as
            attempt_text = os.environ.get("TRAINYARD_ATTEMPT", "")
            attempt = int(attempt_text) if attempt_text.isdigit() else None
        self.attempt = attempt

    def remove_stale_temporaries(self) -> None:
        """Temp files left by a writer that was killed mid-save are garbage; delete them."""
        if self.directory.is_dir():
            for entry in self.directory.glob(".checkpoint-*.tmp"):
                entry.unlink(missing_ok=True)

    def save(self, state: dict[str, Any], step: int) -> tuple[Path, float]:
        """Write the checkpoint for `step`, prune old ones; returns (path, seconds taken)."""
        started = time.perf_counter()
        path = checkpoint_path(self.directory, step)
        save_atomic({**state, "format": FORMAT, "step": step}, path)
        self._write_record(step)
        self._prune()
        report_checkpoints(self.directory)  # for a control plane that cannot read it
        return path, time.perf_counter() - started

    def _write_record(self, step: int) -> None:
        """Which attempt wrote checkpoint `step` and when (for `trainyard checkpoints`).
        Best effort: the checkpoint is what matters, a missing record only hides its
        attempt."""
        record = {"step": step, "attempt": self.attempt, "written_at": time.time()}
        target = record_path(self.directory, step)
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            tmp.write_text(json.dumps(record))
            os.replace(tmp, target)
        except OSError as exc:
            log.warning("could not write %s: %s", target.name, exc)

    def _prune(self) -> None:
        for step, path in list_checkpoints(self.directory)[self.keep_latest :]:
            path.unlink(missing_ok=True)
            record_path(self.directory, step).unlink(missing_ok=True)

    def load_latest(self) -> dict[str, Any] | None:
        """The newest checkpoint that loads and validates, or None when there is none."""
        for step, path in list_checkpoints(self.directory):
            try:
                return load_valid(path, step)
            except ValueError as exc:
                log.warning("skipping checkpoint: %s", exc)
        return None
