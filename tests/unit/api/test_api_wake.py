"""The API's wake-up of the scheduling loop (trainyard/api/wake.py), against a real store
and a real UDP socket standing in for the loop's."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from tests.support.databases import database_url, postgres_admin, postgres_schema  # noqa: F401
from tests.support.servers import wait_for
from trainyard.api.wake import LEASE_NAME, LoopWaker
from trainyard.store import make_engine, migrate
from trainyard.store import write_transaction as wt
from trainyard.store.scheduling import try_acquire_lease


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:  # noqa: F811
    engine = make_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


def test_the_first_wake_reaches_the_loop_although_its_address_was_not_known_yet(
    engine: Engine,
) -> None:
    """The first submit after a start (or after a new leader took over) wakes the loop:
    the address is looked up in the background, and the wake that started the lookup is
    delivered once the address is known instead of being dropped (which left the first
    jobs waiting for the loop's period)."""
    loop_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    loop_socket.bind(("127.0.0.1", 0))
    loop_socket.setblocking(False)
    host, port = loop_socket.getsockname()
    with wt(engine) as conn:
        assert try_acquire_lease(
            conn, name=LEASE_NAME, holder="loop", ttl_us=60 * 10**6, wake_address=f"{host}:{port}"
        )
    waker = LoopWaker(engine)
    waker.wake()  # nothing known yet: this one starts the lookup

    received: list[bytes] = []

    def datagram() -> bool:
        try:
            received.append(loop_socket.recv(64))
        except BlockingIOError:
            return False
        return True

    try:
        wait_for(datagram, timeout=10, interval=0.01, what="the first wake-up datagram")
    finally:
        loop_socket.close()
    assert received == [b"w"]
