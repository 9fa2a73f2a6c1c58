"""API tests talk HTTP to a real uvicorn server on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.databases import database_url, postgres_admin, postgres_schema  # noqa: F401
from tests.support.servers import ApiServer, running_server


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[ApiServer]:  # noqa: F811
    with running_server(home=tmp_path / "home", database_url=database_url) as running:
        yield running
