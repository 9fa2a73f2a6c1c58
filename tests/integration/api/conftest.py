"""API tests talk HTTP to a real uvicorn server on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.databases import database_url, postgres_admin, postgres_schema  # noqa: F401
from tests.support.servers import ApiServer, running_server


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[ApiServer]:  # noqa: F811
    with running_server(home=tmp_path / "home", database_url=database_url) as running:
        yield running


class LogRecords(logging.Handler):
    """Every record it is given, in order."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server_log() -> Iterator[LogRecords]:
    """What the server logs (it runs in this process), debug lines included."""
    handler = LogRecords()
    loggers = [logging.getLogger(name) for name in ("trainyard.api", "uvicorn.error")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)
