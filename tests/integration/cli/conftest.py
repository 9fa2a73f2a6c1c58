"""CLI tests drive `trainyard` against a real uvicorn server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import ApiServer, running_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ApiServer]:
    with running_server(
        home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'trainyard.db'}"
    ) as running:
        yield running
