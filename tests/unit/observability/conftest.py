"""Store tests run against SQLite and the real PostgreSQL server (see tests.support)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from tests.support.databases import database_url, postgres_admin, postgres_schema  # noqa: F401
from trainyard.store import make_engine, migrate


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:  # noqa: F811
    engine = make_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()
