"""Waking the scheduling loop after a submit or a cancel, from any API process.

The loop's leader publishes a UDP address in its lease row (`leases.wake_address`); one
datagram makes it run a cycle at once instead of at its next period, which is what
keeps submit -> RUNNING well under a second. The address is read from the store in a
background thread (at most every few seconds), never on the request path, and a
datagram that goes nowhere costs nothing: the loop's period is the safety net.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from sqlalchemy import Engine

from trainyard.store import read_transaction
from trainyard.store.scheduling import lease_holder

LEASE_NAME = "scheduler"
REFRESH_SECONDS = 3.0


class LoopWaker:
    """`wake()`: a non-blocking datagram to the loop leader's published address."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._address: tuple[str, int] | None = None
        self._refreshed = -REFRESH_SECONDS
        self._refreshing = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def wake(self) -> None:
        if time.monotonic() - self._refreshed > REFRESH_SECONDS:
            self._refresh_soon()
        address = self._address
        if address is None:
            return
        # The loop may be restarting or elsewhere: its period covers a lost datagram.
        with contextlib.suppress(OSError):
            self._sock.sendto(b"w", address)

    def _refresh_soon(self) -> None:
        if not self._refreshing.acquire(blocking=False):
            return
        self._refreshed = time.monotonic()
        threading.Thread(target=self._refresh, name="waker-refresh", daemon=True).start()

    def _refresh(self) -> None:
        try:
            with read_transaction(self._engine) as conn:
                row = lease_holder(conn, name=LEASE_NAME)
            raw = row.get("wake_address") if row else None
            if raw:
                host, port = str(raw).rsplit(":", 1)
                address = (host, int(port))
                learned, self._address = address != self._address, address
                if learned:
                    # A refresh is started by a wake: when it finds a new address (the
                    # first one, or a new leader's), that wake went nowhere; send it
                    # now instead of leaving the job to the loop's period.
                    with contextlib.suppress(OSError):
                        self._sock.sendto(b"w", address)
        except Exception:
            pass  # a store hiccup: try again at the next refresh
        finally:
            self._refreshing.release()
