"""One thread that sleeps until a watched file descriptor is ready or a deadline is due.

The local backend watches a pidfd per live supervisor (readable once it exited) and, while
a worker starts, the pipe its supervisor writes `S` to. Nothing is polled: the thread
blocks in epoll until one of them is ready, another thread adds a descriptor or moves a
deadline (`poke`), or the next deadline `tick` asked for comes. So the cost of watching
1,000 workers is 1,000 registered descriptors, not 1,000 checks a second.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class FdWatcher:
    """Runs one-shot callbacks when descriptors become readable, and `tick` in between.

    `add(fd, callback)`: `callback()` runs on the watcher thread once `fd` is readable;
    the fd is unregistered first and is NOT closed here (its owner closes it, under its
    own lock). `tick()` runs after every batch of callbacks and returns the seconds until
    it wants to run again (None: only when something happens).
    """

    def __init__(self, tick: Callable[[], float | None], *, name: str = "fd-watcher") -> None:
        self._tick = tick
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        self._pending: list[tuple[int, Callable[[], None]]] = []
        self._pending_lock = threading.Lock()
        self._closing = False
        self._freed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, fd: int, callback: Callable[[], None]) -> None:
        with self._pending_lock:
            self._pending.append((fd, callback))
        self.poke()

    def poke(self) -> None:
        """Make the thread run `tick` (and register added fds) now."""
        # A full pipe is full of pokes already: the thread will wake. Under the lock
        # that `_free` takes: never a write to a closed (and maybe reused) number.
        with self._pending_lock, contextlib.suppress(BlockingIOError):
            if not self._freed:
                os.write(self._wake_write, b"\0")

    def close(self, timeout: float = 10.0) -> bool:
        """Stop the thread (callbacks not yet run are dropped) and free its descriptors.

        Returns at once the callback running now has returned (the thread checks after
        each one), or after `timeout`. True when the thread has stopped; False when a
        callback is still running: its descriptors are then left for the thread to
        free when it ends, never closed under it (a closed number is soon reused)."""
        if not self._closing:
            self._closing = True
            self.poke()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)
            if self._thread.is_alive():
                return False
        self._free()
        return True

    def _free(self) -> None:
        with self._pending_lock:
            if self._freed:
                return
            self._freed = True
        self._selector.close()
        os.close(self._wake_read)
        os.close(self._wake_write)

    def _register_pending(self) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, []
        for fd, callback in pending:
            try:
                self._selector.register(fd, selectors.EVENT_READ, callback)
            except (ValueError, KeyError, OSError) as exc:
                # A closed or duplicate fd: run the callback so its owner looks again.
                log.warning("cannot watch fd %d (%s); checking it now", fd, exc)
                self._call(callback)

    def _call(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            log.exception("watcher callback failed")

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            if self._closing:
                self._free()  # close() gave up waiting for us: ours to free now

    def _loop(self) -> None:
        timeout = self._safe_tick()
        while not self._closing:
            self._register_pending()
            for key, _ in self._selector.select(timeout):
                if self._closing:  # close() waits for one callback at most, not a batch
                    return
                if key.data is None:
                    try:
                        while os.read(self._wake_read, 4096):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                self._selector.unregister(key.fd)
                self._call(key.data)
            if self._closing:
                break
            timeout = self._safe_tick()

    def _safe_tick(self) -> float | None:
        try:
            timeout = self._tick()
        except Exception:
            log.exception("watcher tick failed")
            return 1.0
        return None if timeout is None else max(timeout, 0.0)
