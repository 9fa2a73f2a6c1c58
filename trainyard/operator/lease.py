"""Leader election through a row in the store: one loop acts on a store at a time.

`serve --workers N` starts one loop per `serve`, and two servers may share a database;
whichever holds the `scheduler` lease row runs cycles, the others wait (their API keeps
serving). The holder renews every `ttl/4`; it considers itself leader only until
`ttl - margin` after its last successful renewal (measured on its own monotonic clock),
so it stops acting before anyone else may take over, even if its renewals start failing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from trainyard.store import write_transaction
from trainyard.store.scheduling import release_lease, try_acquire_lease

log = logging.getLogger("trainyard.lease")
LEASE_NAME = "scheduler"


class StoreLease:
    """Leadership (see trainyard.operator.backend.Leadership) held in the `leases` table."""

    def __init__(
        self,
        engine: Engine,
        *,
        ttl_seconds: float = 10.0,
        name: str = LEASE_NAME,
        wake_address: str | None = None,
        on_change: object = None,
    ) -> None:
        self.engine = engine
        self.name = name
        self.ttl_seconds = ttl_seconds
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.wake_address = wake_address
        self._valid_until = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_change = on_change

    def try_acquire(self) -> bool:
        """One acquire-or-renew attempt; updates the local validity window."""
        started = time.monotonic()
        try:
            with write_transaction(self.engine) as conn:
                held = try_acquire_lease(
                    conn,
                    name=self.name,
                    holder=self.holder,
                    ttl_us=int(self.ttl_seconds * 1_000_000),
                    wake_address=self.wake_address,
                )
        except IntegrityError:  # another process inserted the first row at the same time
            held = False
        except DBAPIError as exc:
            log.warning("lease renewal failed: %s", exc.__class__.__name__)
            held = False
        was = self.is_leader()
        if held:
            # Stop acting a quarter of the ttl before the row could be taken over.
            self._valid_until = started + self.ttl_seconds * 0.75
        if held != was and callable(self._on_change):
            self._on_change(held)
        return held

    def is_leader(self) -> bool:
        return time.monotonic() < self._valid_until

    def start(self) -> None:
        self.try_acquire()
        self._thread = threading.Thread(target=self._renew, name="lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_seconds / 4):
            self.try_acquire()

    def stop(self) -> None:
        """Stop renewing and give the lease up, so a successor need not wait for expiry."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.release()

    def release(self) -> None:
        """Give the lease up now (if held); a later try_acquire may take it again."""
        if self._valid_until:
            self._valid_until = 0.0
            try:
                with write_transaction(self.engine) as conn:
                    release_lease(conn, name=self.name, holder=self.holder)
            except DBAPIError:
                pass
