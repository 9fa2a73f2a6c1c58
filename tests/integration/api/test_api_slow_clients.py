"""Slow and greedy clients (issue 14, item 7): a connection that never completes its
headers, a body that never arrives, and one address opening connection after connection
were all held open for as long as the client liked (600 connections for 95 s)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.integration.api.conftest import LogRecords
from tests.support.servers import ApiServer, running_server, wait_for

GUARD_SECONDS = 20  # how long the test waits before calling the connection "held forever"


@pytest.fixture
def strict(database_url: str, tmp_path: Path) -> Iterator[ApiServer]:
    with running_server(
        home=tmp_path / "home",
        database_url=database_url,
        header_timeout_seconds=1,
        body_timeout_seconds=1,
    ) as running:
        yield running


@pytest.fixture
def capped(database_url: str, tmp_path: Path) -> Iterator[ApiServer]:
    """Three connections per address, and nothing else closing them during the test."""
    with running_server(
        home=tmp_path / "home",
        database_url=database_url,
        header_timeout_seconds=60,
        keep_alive_seconds=60,
        max_connections_per_client=3,
    ) as running:
        yield running


def _connect(server: ApiServer) -> socket.socket:
    address = urlsplit(server.url)
    sock = socket.create_connection((address.hostname, address.port))
    sock.settimeout(GUARD_SECONDS)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the test fails with a
    timeout if it never does)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_a_connection_without_complete_headers_is_closed_with_408(strict: ApiServer) -> None:
    with _connect(strict) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"headers not complete within 1s" in answer


def test_a_connection_that_sends_nothing_is_closed(strict: ApiServer) -> None:
    with _connect(strict) as sock:
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408") or answer == b""


def test_a_body_that_does_not_arrive_in_time_is_408(
    strict: ApiServer, server_log: LogRecords
) -> None:
    """The request is then over for the application too: it sees the client as gone and
    logs one debug line (its answer once went to the closed connection, and uvloop raised:
    a 60-line ERROR traceback per slow client)."""
    with _connect(strict) as sock:
        sock.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + strict.admin_token.encode() + b"\r\n"
            b'Content-Length: 100\r\n\r\n{"na'
        )
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"body not complete within 1s" in answer
    wait_for(
        lambda: any("went away" in r.getMessage() for r in server_log.records),
        timeout=30,
        what="the application to see the client as gone",
    )
    with strict.client() as client:
        assert client.get("/v1/jobs").json()["count"] == 0
    assert not [r.getMessage() for r in server_log.records if r.levelno >= logging.ERROR]


def test_connections_per_client_address_are_capped(capped: ApiServer) -> None:
    held = [_connect(capped) for _ in range(3)]
    try:
        # Each held connection has been accepted (a complete request answered on it).
        for sock in held:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        with _connect(capped) as extra:
            answer = _read_until_closed(extra)
        assert answer.startswith(b"HTTP/1.1 429"), answer
        assert b"more than 3 open connections from 127.0.0.1" in answer
    finally:
        held.pop().close()

    def fourth_is_served() -> bool:
        with _connect(capped) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return _read_until_closed(sock).startswith(b"HTTP/1.1 200")

    try:
        wait_for(fourth_is_served, timeout=30, what="a freed slot to be usable")
    finally:
        for sock in held:
            sock.close()


def test_keep_alive_and_ordinary_requests_are_unaffected(strict: ApiServer) -> None:
    with strict.client() as client:
        for _ in range(5):
            assert client.get("/healthz").status_code == 200
        submitted = client.post("/v1/jobs", json={"name": "j", "workload": {"builtin": "gpt"}})
    assert submitted.status_code == 201
