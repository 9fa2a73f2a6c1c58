"""The HTTP server: uvicorn, with the slow-client limits it does not have built in.

uvicorn's own settings are used where it has them: `timeout_keep_alive` closes an idle
keep-alive connection, `limit_concurrency` caps connections for the whole server (503
beyond it). What uvicorn 0.54 cannot do (read in its source: `HttpToolsProtocol` arms
no timer until a response has completed, and nothing counts connections per peer):

- close a connection that has not sent complete request headers in time: a client that
  opens 600 connections and trickles a header byte now and then held them for as long as
  it liked;
- limit how long a request body may take to arrive once its headers are in;
- cap the connections one client address holds, so the limit is a setting and not the
  process's file descriptors.

`GuardedHttpToolsProtocol` adds exactly these to uvicorn's httptools protocol (the one
`--http auto` picks), through uvicorn's `http=` setting (which takes a protocol class),
so the server, its performance and every other behaviour stay uvicorn's. Another server
was not adopted: none is installed here, and a second HTTP stack is more to trust than
three timers and a counter on the protocol uvicorn already runs.

A header timeout answers 408 and closes; a body timeout answers 408 (when no response
has started) and closes, and the application sees the client as gone; a peer over its
cap gets a 429 and the connection closed, before any request is read.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from trainyard.config import Settings

PROTOCOL = "trainyard.api.server:GuardedHttpToolsProtocol"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The per-connection limits `GuardedHttpToolsProtocol` enforces."""

    header_seconds: float = 5.0
    body_seconds: float = 30.0
    per_client: int = 64

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            header_seconds=settings.header_timeout_seconds,
            body_seconds=settings.body_timeout_seconds,
            per_client=settings.max_connections_per_client,
        )


def _raw_response(status: int, reason: str, detail: str) -> bytes:
    body = json.dumps({"detail": detail, "errors": []}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline, a body deadline and a cap of
    connections per client address (limits from `config.trainyard_limits`)."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits: ConnectionLimits = getattr(config, "trainyard_limits", ConnectionLimits())
        # One count per server (all its connections share its state object).
        if not hasattr(server_state, "trainyard_peers"):
            server_state.trainyard_peers = Counter()
        self._peers: Counter[str] = server_state.trainyard_peers
        self._peer: str | None = None
        self._deadline: asyncio.TimerHandle | None = None

    # -- connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.client is not None:
            self._peer = self.client[0]
            self._peers[self._peer] += 1
            if self._peers[self._peer] > self._limits.per_client:
                detail = (
                    f"more than {self._limits.per_client} open connections from {self._peer} "
                    "(TRAINYARD_MAX_CONNECTIONS_PER_CLIENT); close some first"
                )
                transport.write(_raw_response(429, "Too Many Requests", detail))
                transport.close()
                return
        self._arm(self._limits.header_seconds, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._peer is not None:
            self._peers[self._peer] -= 1
            if self._peers[self._peer] <= 0:
                del self._peers[self._peer]
            self._peer = None
        super().connection_lost(exc)

    # -- parser callbacks (httptools looks them up on this object)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self._limits.body_seconds, self._body_late)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            # The next request on this connection must send its headers in time too
            # (uvicorn's keep-alive timer closes it sooner if it sends nothing at all).
            self._arm(self._limits.header_seconds, self._headers_late)

    # -- deadlines

    def _arm(self, seconds: float, expired: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being answered; its own deadlines apply
        detail = f"request headers not complete within {self._limits.header_seconds:g}s"
        self.transport.write(_raw_response(408, "Request Timeout", detail))
        self.transport.close()

    def _body_late(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            detail = f"request body not complete within {self._limits.body_seconds:g}s"
            self.transport.write(_raw_response(408, "Request Timeout", detail))
            cycle.response_complete = True  # nothing else may be written
        if cycle is not None:
            # For the application the client is gone: its receive() answers http.disconnect
            # now, and its send() is a no-op. uvicorn only marks a cycle disconnected when
            # the connection is lost before the response completed, which the 408 above
            # just did; without this the application's own answer went to the closed
            # transport, and uvloop raises there (an ERROR traceback per slow client).
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()


def serve(app: Any, settings: Settings, *, workers: int = 1, **options: Any) -> bool:
    """Run uvicorn (like `uvicorn.run`, with `uvicorn_config`) until it is stopped.

    With `workers` > 1, `app` must be an import string of a factory. Returns whether the
    server started.
    """
    from uvicorn.supervisors import Multiprocess

    if workers > 1:
        config = uvicorn_config(app, settings, factory=True, workers=workers, **options)
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return True
    server = uvicorn.Server(uvicorn_config(app, settings, **options))
    server.run()
    return server.started


def uvicorn_config(app: Any, settings: Settings, **options: Any) -> uvicorn.Config:
    """A uvicorn Config serving `app` (an app, or an import string with factory=True)
    with Trainyard's connection limits from `settings`; `options` are passed on."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=PROTOCOL,
        timeout_keep_alive=settings.keep_alive_seconds,
        limit_concurrency=settings.max_connections,
        **options,
    )
    config.trainyard_limits = ConnectionLimits.from_settings(settings)  # type: ignore[attr-defined]
    return config
