"""Worker logs: reading them, and following them as they grow.

The local backend writes each worker's output to `layout.worker_log_path(home, job, i)`
($TRAINYARD_HOME/logs/<job>/worker-<i>.log); the API serves those files.

Following is event-driven and shared. One `LogFollowers` per app runs one watcher thread
for every follower of every job: each tick (0.25 s) it stats each followed file once
and reads the state of every followed job in one query, and wakes exactly the followers
whose file changed or whose job finished. A follower sleeps on an asyncio event in
between, so 200 followers of a job that prints nothing cost one `stat` and one small
query per tick, not 200 poll loops (which took 89 % of a core). The thread exits when
nobody follows anything. Each user may hold `max_per_user` streams at once (429 beyond
that), and a stream ends once its job has finished and the file has been read to its end,
when the client goes away, or at a hard deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import HTTPException

CHUNK_BYTES = 64 * 1024
POLL_SECONDS = 0.25
STATE_EVERY_TICKS = 2
"""Job states are read every this many ticks (0.5 s): a stream ends that soon after."""


def read_chunks(path: Path, *, limit: int | None = None) -> Iterable[bytes]:
    """The log's bytes (up to `limit`) in chunks; nothing when there is no output yet."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    with handle:
        left = limit
        while left is None or left > 0:
            chunk = handle.read(CHUNK_BYTES if left is None else min(CHUNK_BYTES, left))
            if not chunk:
                return
            if left is not None:
                left -= len(chunk)
            yield chunk


def read_log(path: Path) -> bytes:
    """The whole log, or nothing when the worker has produced no output yet."""
    return b"".join(read_chunks(path))


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read(CHUNK_BYTES)
    except FileNotFoundError:
        return b""


def _signature(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is written, replaced or truncated."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


@dataclass(eq=False)
class Follower:
    """One stream: woken (via its event) when its file changes or its job finishes."""

    user: str
    job_id: str
    path: Path
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = field(default_factory=asyncio.Event)
    finished: bool = False

    def wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
            self.loop.call_soon_threadsafe(self.event.set)


class LogFollowers:
    """Every follower of one app, and the one thread that watches for them."""

    def __init__(
        self,
        *,
        job_states: Callable[[list[str]], dict[str, bool]],
        max_per_user: int,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        """`job_states(ids)` answers {id: finished} for the ids it knows (blocking)."""
        self._job_states = job_states
        self._max_per_user = max_per_user
        self._poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._followers: set[Follower] = set()
        self._per_user: Counter[str] = Counter()
        self._thread: threading.Thread | None = None

    @property
    def count(self) -> int:
        return len(self._followers)

    def watcher_alive(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def add(self, *, user: str, job_id: str, path: Path) -> Follower:
        """Register a stream; 429 when `user` already holds the maximum."""
        follower = Follower(user=user, job_id=job_id, path=path, loop=asyncio.get_running_loop())
        follower.event.set()  # read what is there at once
        with self._lock:
            if self._per_user[user] >= self._max_per_user:
                raise HTTPException(
                    status_code=429,
                    detail=f"{user} already follows {self._per_user[user]} logs, the most "
                    f"one user may (TRAINYARD_MAX_LOG_FOLLOWERS_PER_USER); close one first",
                    headers={"Retry-After": "5"},
                )
            self._per_user[user] += 1
            self._followers.add(follower)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._watch, name="trainyard-log-watcher", daemon=True
                )
                self._thread.start()
        return follower

    def remove(self, follower: Follower) -> None:
        with self._lock:
            if follower in self._followers:
                self._followers.discard(follower)
                self._per_user[follower.user] -= 1
                if self._per_user[follower.user] <= 0:
                    del self._per_user[follower.user]

    def _watch(self) -> None:
        seen: dict[Path, tuple[int, int, int] | None] = {}
        tick = 0
        while True:
            time.sleep(self._poll_seconds)
            with self._lock:
                followers = list(self._followers)
                if not followers:
                    self._thread = None
                    return
            tick += 1
            by_path: dict[Path, list[Follower]] = {}
            for follower in followers:
                by_path.setdefault(follower.path, []).append(follower)
            for path, group in by_path.items():
                now = _signature(path)
                if seen.get(path) != now:
                    seen[path] = now
                    for follower in group:
                        follower.wake()
            for gone in set(seen) - set(by_path):
                del seen[gone]
            if tick % STATE_EVERY_TICKS == 0:
                self._check_jobs(followers)

    def _check_jobs(self, followers: list[Follower]) -> None:
        waiting = [f for f in followers if not f.finished]
        if not waiting:
            return
        try:
            finished = self._job_states(sorted({f.job_id for f in waiting}))
        except Exception:  # the store is down: streams keep waiting, and retry next tick
            return
        for follower in waiting:
            # A job that vanished (or is no longer visible) ends its streams too.
            if finished.get(follower.job_id, True):
                follower.finished = True
                follower.wake()


async def follow_log(
    followers: LogFollowers, follower: Follower, *, max_seconds: float = 24 * 3600
) -> AsyncIterator[bytes]:
    """Yield the log's bytes as they are written until the job finishes.

    `finished` is read before the file, so the last bytes written before the job ended
    are always sent: finished + read to the end -> stop.
    """
    deadline = time.monotonic() + max_seconds
    offset = 0
    try:
        while True:
            follower.event.clear()
            finished = follower.finished
            while True:
                chunk = await asyncio.to_thread(_read_from, follower.path, offset)
                if not chunk:
                    break
                offset += len(chunk)
                yield chunk
            left = deadline - time.monotonic()
            if finished or left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(follower.event.wait(), timeout=left)
    finally:
        followers.remove(follower)
