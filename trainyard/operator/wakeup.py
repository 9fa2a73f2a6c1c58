"""Waking the loop: a datagram socket it listens on, and a debounced event it waits on.

The API (possibly another process or replica) sends one UDP datagram to the address the
loop published in its lease row after a submit or a cancel; the backend's watcher calls
`Wakeup.set` when a worker changes. The loop runs a cycle at once instead of waiting
for its period. Lost datagrams cost at most one period: waking is an optimisation,
correctness comes from the periodic, level-triggered cycle.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class Wakeup:
    """A threading.Event fed by a loopback UDP socket and by in-process callers."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._event = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, 0))
        self.address = "{}:{}".format(*self._sock.getsockname())
        self._closed = False
        self._thread = threading.Thread(target=self._listen, name="wakeup", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._closed:
            try:
                self._sock.recv(64)
            except OSError:
                return
            self._event.set()

    def set(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """Wait until woken or `timeout` passes; clears the event. True when woken."""
        woken = self._event.wait(timeout)
        self._event.clear()
        return woken

    def close(self) -> None:
        self._closed = True
        # Unblock recv: a datagram to ourselves.
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"x", self._parse(self.address))
        self._sock.close()

    @staticmethod
    def _parse(address: str) -> tuple[str, int]:
        host, port = address.rsplit(":", 1)
        return host, int(port)
