"""A clean database per test, on SQLite and on the real PostgreSQL server.

The `database_url` fixture is parametrized over both. PostgreSQL comes from
TRAINYARD_TEST_DATABASE_URL (hack/test.sh sets it after hack/postgres/up.sh); without it
the postgres cases FAIL, because CI always provides it, unless TRAINYARD_SKIP_POSTGRES=1
says on purpose to skip them. Each PostgreSQL test gets its own fresh schema (selected via
the connection's search_path), dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import Engine, create_engine, text

POSTGRES_ENV = "TRAINYARD_TEST_DATABASE_URL"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def postgres_base_url() -> str:
    """The test server's URL; fails (or skips, only when asked to) if it is not configured."""
    url = os.environ.get(POSTGRES_ENV)
    if url:
        return url
    if os.environ.get("TRAINYARD_SKIP_POSTGRES") == "1":
        pytest.skip("TRAINYARD_SKIP_POSTGRES=1: PostgreSQL cases deliberately skipped")
    pytest.fail(
        f"{POSTGRES_ENV} is not set: run hack/postgres/up.sh and export "
        f"{POSTGRES_ENV}=$(cat .postgres/url), or set TRAINYARD_SKIP_POSTGRES=1 to skip"
    )


def with_search_path(url: str, schema: str) -> str:
    """`url` with its connections confined to `schema`."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-csearch_path={schema}')}"


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    engine = create_engine(postgres_base_url(), isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_schema(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty schema on the PostgreSQL test server; its URL is returned."""
    admin: Engine = request.getfixturevalue("postgres_admin")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield with_search_path(postgres_base_url(), schema)
    with admin.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'trainyard.db'}"
    return request.getfixturevalue("postgres_schema")
