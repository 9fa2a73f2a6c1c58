"""What a job's output directory says about its checkpoints, for listing them.

The worker writes `checkpoint-<step>.pt` (trainyard.worker.checkpoint) and, beside it,
`checkpoint-<step>.json`: which attempt wrote it and when. The API lists a job's
checkpoints from these files (the local backend's output directory is under the home
the API serves from), without loading a checkpoint or importing the worker or the
operator. A checkpoint without its record (written by an older worker) is listed with
its file's time and no attempt.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)\.pt$")


def record_path(directory: Path, step: int) -> Path:
    """The small JSON record next to checkpoint `step`."""
    return directory / f"checkpoint-{step}.json"


def list_checkpoints(directory: Path) -> list[dict[str, Any]]:
    """[{step, written_at (unix seconds), size_bytes, attempt}], newest step first."""
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = CHECKPOINT_NAME.match(entry.name)
        if match is None:
            continue
        try:
            stat = entry.stat()
        except FileNotFoundError:  # pruned meanwhile
            continue
        step = int(match.group(1))
        record: dict[str, Any] = {}
        try:
            loaded = json.loads(record_path(directory, step).read_text())
            if isinstance(loaded, dict):
                record = loaded
        except (OSError, ValueError):
            pass
        attempt = record.get("attempt")
        written = record.get("written_at")
        found.append(
            {
                "step": step,
                "written_at": float(written) if isinstance(written, int | float) else stat.st_mtime,
                "size_bytes": stat.st_size,
                "attempt": attempt if isinstance(attempt, int) else None,
            }
        )
    return sorted(found, key=lambda c: c["step"], reverse=True)
