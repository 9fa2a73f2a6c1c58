"""Locating the Prometheus tools the observability tests run for real.

hack/prometheus/up.sh installs Debian's `prometheus` package (server and promtool) and
starts a server on loopback; hack/test.sh exports where it is. Without the tools these
tests FAIL (CI always has them), unless TRAINYARD_SKIP_PROMETHEUS=1 says to skip them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

URL_ENV = "TRAINYARD_TEST_PROMETHEUS_URL"
CONFIG_ENV = "TRAINYARD_TEST_PROMETHEUS_CONFIG"
SKIP_ENV = "TRAINYARD_SKIP_PROMETHEUS"


def _missing(what: str) -> None:
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: {what} deliberately skipped")
    pytest.fail(f"{what}: run hack/prometheus/up.sh (see its header), or set {SKIP_ENV}=1 to skip")


def promtool() -> str:
    """The promtool binary."""
    found = shutil.which("promtool")
    if found is None:
        _missing("promtool is not installed")
    assert found is not None
    return found


def prometheus_server() -> tuple[str, Path]:
    """(URL, config file) of the test Prometheus that hack/prometheus/up.sh started.

    The config file is the test's to rewrite; POST /-/reload applies it.
    """
    url, config = os.environ.get(URL_ENV), os.environ.get(CONFIG_ENV)
    if not url or not config:
        _missing(f"{URL_ENV} / {CONFIG_ENV} are not set")
    assert url is not None and config is not None
    return url.rstrip("/"), Path(config)
