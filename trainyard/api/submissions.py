"""Group commit for POST /v1/jobs: one writer thread stores submitted jobs in batches.

Why: the store admits one writer at a time (SQLite always; and one transaction per job
is mostly BEGIN/COMMIT overhead on either database). Handing each submit to a thread-pool
worker that then queues for the write lock costs a thread hop per request and one commit
per job. Instead the request handler puts its job on a queue and awaits a future; a single
writer thread takes everything queued, stores it in one transaction (`submit_jobs`) and
resolves the futures. Under load, groups grow and the cost per job falls; idle, a group is
one job and the latency is one commit. The event loop never blocks on the database.

The thread starts on the first submit and exits after a quiet spell, so an app that is
dropped (tests build many) leaves no thread behind.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from trainyard.store import JobRecord, Submission, submit_jobs

MAX_GROUP = 256
IDLE_EXIT_SECONDS = 30.0


@dataclass(slots=True)
class _Pending:
    submission: Submission
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[tuple[JobRecord, bool]]


def _resolve(future: asyncio.Future[Any], result: Any) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class GroupCommitter:
    """Stores submissions from any number of requests through one writer thread."""

    def __init__(self, engine: Engine, *, idle_exit_seconds: float = IDLE_EXIT_SECONDS) -> None:
        self._engine = engine
        self._idle_exit_seconds = idle_exit_seconds
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = False

    async def submit(self, submission: Submission) -> tuple[JobRecord, bool]:
        """Store `submission` (see `trainyard.store.submit_jobs`); raises its StoreError."""
        loop = asyncio.get_running_loop()
        pending = _Pending(submission, loop, loop.create_future())
        self._queue.put(pending)
        self._ensure_writer()
        return await pending.future

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            # Whatever ended the loop, the next submit must start a new writer: a flag
            # left set would make every later submit wait forever on a dead thread.
            with self._lock:
                self._running = False
                restart = not self._queue.empty()
            if restart:
                self._ensure_writer()

    def _ensure_writer(self) -> None:
        with self._lock:
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="trainyard-submit", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self._idle_exit_seconds)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        return
                continue
            group = [first]
            while len(group) < MAX_GROUP:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._commit(group)
            except BaseException as exc:
                # Unexpected (not a database error, which _commit hands to the waiters):
                # answer the group before the thread ends, so no request waits forever.
                for pending in group:
                    try:
                        pending.loop.call_soon_threadsafe(_resolve, pending.future, exc)
                    except RuntimeError:
                        continue
                raise

    def _commit(self, group: list[_Pending]) -> None:
        try:
            results: list[Any] = submit_jobs(
                self._engine, submissions=[p.submission for p in group]
            )
        except Exception as exc:  # the database is down: every waiter gets the error
            results = [exc] * len(group)
        # A StoreError result (IdempotencyConflict) is raised in the awaiting request.
        for pending, result in zip(group, results, strict=True):
            try:
                pending.loop.call_soon_threadsafe(_resolve, pending.future, result)
            except RuntimeError:  # its event loop is closed: nobody is waiting any more
                continue
