"""The watcher thread: a callback per ready descriptor, and ticks when asked for."""

from __future__ import annotations

import os
import threading

from tests.support.servers import wait_for
from trainyard.operator.local.watcher import FdWatcher


def test_a_readable_fd_runs_its_callback_once_and_ticks_come_when_asked() -> None:
    fired = threading.Event()
    ticks: list[int] = []
    ticked_twice = threading.Event()

    def tick() -> float | None:
        ticks.append(1)
        if len(ticks) >= 2:
            ticked_twice.set()
            return None
        return 0.05  # ask for a second tick with nothing else happening

    watcher = FdWatcher(tick)
    read, write = os.pipe()
    try:
        watcher.start()
        watcher.add(read, fired.set)
        assert not fired.wait(0.1)  # nothing to read yet
        os.write(write, b"x")
        assert fired.wait(10)
        assert ticked_twice.wait(10)
    finally:
        watcher.close()
        os.close(read)
        os.close(write)


def test_close_waits_for_the_running_callback_only_and_never_frees_under_it() -> None:
    """close() used to wait for a whole batch of ready callbacks, and after its join
    timed out it closed the selector and the wake pipe under the thread still using
    them. Now the thread stops after the callback it is in, a close() that times out
    leaves the descriptors alone, and the thread frees them itself when it ends."""
    entered = threading.Event()
    release = threading.Event()
    calls: list[str] = []

    def blocking() -> None:
        calls.append("blocking")
        entered.set()
        release.wait(30)

    watcher = FdWatcher(lambda: None)
    pipes = [os.pipe() for _ in range(3)]
    try:
        watcher.start()
        watcher.add(pipes[0][0], blocking)
        for read, _ in pipes[1:]:
            watcher.add(read, lambda: calls.append("later"))
        for _, write in pipes:  # all ready together: one batch
            os.write(write, b"x")
        assert entered.wait(10)
        wake_read = watcher._wake_read
        assert watcher.close(timeout=0.1) is False  # the callback still runs
        os.fstat(wake_read)  # still open: nothing was freed under the thread
        release.set()
        wait_for(lambda: not watcher._thread.is_alive(), timeout=10, what="the thread to end")
        assert watcher._freed
        assert watcher.close() is True  # and a second close is harmless
    finally:
        release.set()
        for read, write in pipes:
            os.close(read)
            os.close(write)
    # The batch's other callbacks were dropped once closing: 'later' never ran, or ran
    # before 'blocking' (the batch order is the kernel's); never after it.
    assert calls.index("blocking") == len(calls) - 1
