"""Cluster fixtures for this package (defined in fixtures.py, shared with others)."""

from __future__ import annotations

import pytest

from tests.integration.cluster.fixtures import (  # noqa: F401  (fixtures used by name)
    SKIP_MESSAGE,
    kube_cluster,
    namespace,
    skip_requested,
)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Repeat the skip notice at the very end, where nobody can miss it."""
    if skip_requested():
        terminalreporter.write_line(SKIP_MESSAGE, red=True, bold=True)
