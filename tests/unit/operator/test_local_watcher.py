"""The watcher thread: a callback per ready descriptor, and ticks when asked for."""

from __future__ import annotations

import os
import threading

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
