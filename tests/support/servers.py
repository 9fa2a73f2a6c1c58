"""A real uvicorn server on loopback, serving the Trainyard app, for API and CLI tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine

from trainyard.api.app import create_app
from trainyard.api.auth import create_token
from trainyard.api.inventory import NodeInventory
from trainyard.api.server import uvicorn_config
from trainyard.config import Settings


def free_port() -> int:
    """A free loopback port chosen by the kernel.

    Not a scan of a fixed range: servers started one after another (or by another suite
    running on the same machine) would be handed the same first free port, and a test could
    end up talking to someone else's server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], object],
    *,
    timeout: float = 30.0,
    interval: float = 0.02,
    what: str = "",
) -> None:
    """Poll `condition` until true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


@dataclass
class ApiServer:
    """A running server: its URL, app, store engine and admin token."""

    url: str
    app: FastAPI
    home: Path
    admin_token: str

    @property
    def engine(self) -> Engine:
        return self.app.state.engine

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTP client authenticated as `token` (the admin's by default; "" for none)."""
        token = self.admin_token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def token(self, user: str, *, admin: bool = False) -> str:
        return create_token(self.engine, user=user, admin=admin)


@contextmanager
def running_server(
    *, home: Path, database_url: str, inventory: NodeInventory | None = None, **settings: object
) -> Iterator[ApiServer]:
    """Serve a fresh app over real HTTP on loopback until the block exits."""
    port = free_port()
    config = Settings(home=home, database_url=database_url, admin_token=None, port=port, **settings)
    app = create_app(config, inventory=inventory)
    # The same uvicorn settings and connection limits as `trainyard serve`.
    server = uvicorn.Server(uvicorn_config(app, config, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: server.started or not thread.is_alive(), timeout=30, what="uvicorn to start"
        )
        if not server.started:
            raise RuntimeError(f"uvicorn did not start on port {port}")
        token = (home / "admin-token").read_text().strip()
        yield ApiServer(url=f"http://127.0.0.1:{port}", app=app, home=home, admin_token=token)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        app.state.engine.dispose()
