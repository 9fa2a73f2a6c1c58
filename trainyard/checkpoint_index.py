"""What a job's output directory says about its checkpoints, for listing them.

The worker writes `checkpoint-<step>.pt` (trainyard.worker.checkpoint) and, beside it,
`checkpoint-<step>.json`: which attempt wrote it and when. The API lists a job's
checkpoints from these files (the local backend's output directory is under the home
the API serves from), without loading a checkpoint or importing the worker or the
operator. A checkpoint without its record (written by an older worker) is listed with
its file's time and no attempt.

On Kubernetes worker 0 also reports the listing in its termination message (see
`report_line` below); the loop stores what the pods report (store.checkpoints) and the
API lists that where it cannot read the directory.
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


# ---------------------------------------------------------------- the pod's report
# On Kubernetes the control plane cannot read a job's claim, so worker 0 reports what
# its output directory holds in its container's termination message: the kubelet
# copies the file (its last 4096 bytes) into the pod's status when the container ends,
# for any reason (done, failed, preempted), and the backend's pod watch sees it there.
# The report is one line; text before it (a failure's last words) stays the message.

REPORT_MARKER = "trainyard-checkpoints "
MAX_REPORTED = 40  # ~80 bytes each: the report stays well inside the kubelet's 4096


def report_line(directory: Path) -> str:
    """The report of `directory`'s checkpoints: the marker and compact JSON, one line."""
    listed = list_checkpoints(directory)[:MAX_REPORTED]
    body = [{**c, "written_at": round(c["written_at"], 3)} for c in listed]
    return REPORT_MARKER + json.dumps(body, separators=(",", ":"))


def parse_report(text: str) -> tuple[list[dict[str, Any]] | None, str]:
    """(the reported checkpoints, or None when `text` holds no report; the other text).

    Malformed entries are left out rather than trusted: the message is written by a
    user's container and read by the control plane."""
    found: list[dict[str, Any]] | None = None
    rest: list[str] = []
    for line in text.splitlines():
        if not line.startswith(REPORT_MARKER):
            rest.append(line)
            continue
        try:
            loaded = json.loads(line[len(REPORT_MARKER) :])
        except ValueError:
            continue
        if not isinstance(loaded, list):
            continue
        found = []
        for entry in loaded[:MAX_REPORTED]:
            if not isinstance(entry, dict):
                continue
            step, size = entry.get("step"), entry.get("size_bytes")
            written, attempt = entry.get("written_at"), entry.get("attempt")
            if not (isinstance(step, int) and 0 <= step < 2**62):
                continue
            found.append(
                {
                    "step": step,
                    "written_at": float(written) if isinstance(written, int | float) else 0.0,
                    "size_bytes": size if isinstance(size, int) and size >= 0 else 0,
                    "attempt": attempt if isinstance(attempt, int) else None,
                }
            )
    return found, "\n".join(rest)
