"""Job output files and following them as they grow.

The local backend writes each job's output to $TRAINYARD_HOME/logs/<job-id>.log; the API
serves that file. Following is condition-based: new bytes are sent as they appear, and the
stream ends once the job is in a terminal state and the file has been read to its end, when
the client goes away, or at a hard deadline, whichever comes first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from trainyard.layout import worker_log_path

CHUNK_BYTES = 64 * 1024


def log_path(home: Path, job_id: str, worker: int = 0) -> Path:
    """Where the output of worker `worker` of `job_id` is written (see trainyard.layout)."""
    return worker_log_path(home, job_id, worker)


def read_log(path: Path) -> bytes:
    """The whole log, or nothing when the job has produced no output yet."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


async def follow_log(
    path: Path,
    *,
    is_finished: Callable[[], Awaitable[bool]],
    is_disconnected: Callable[[], Awaitable[bool]],
    poll_seconds: float = 0.25,
    max_seconds: float = 24 * 3600,
) -> AsyncIterator[bytes]:
    """Yield the log's bytes as they are written until the job finishes.

    The job's state is checked before each read, so the last bytes written before the job
    finished are always sent: finished + read to the end -> stop.
    """
    offset = 0
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        finished = await is_finished()
        while True:
            chunk = await asyncio.to_thread(_read_from, path, offset)
            if not chunk:
                break
            offset += len(chunk)
            yield chunk
        if finished or await is_disconnected():
            return
        await asyncio.sleep(poll_seconds)


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read(CHUNK_BYTES)
    except FileNotFoundError:
        return b""
