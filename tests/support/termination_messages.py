"""Termination messages as the worker's own code writes them, for tests of the parsing side
(kwok runs no containers, so a test writes what a pod's container would leave)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainyard.worker import termination


def energy_termination_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ranks: dict[int, float], failure: str = ""
) -> str:
    """What a pod whose ranks measured `ranks` (joules) leaves in its termination log."""
    log = tmp_path / f"termination-log-{min(ranks)}"
    log.unlink(missing_ok=True)
    monkeypatch.setenv(termination.ENV, str(log))
    for rank, joules in ranks.items():
        termination.report_energy(rank, joules)
    if failure:
        termination.record_failure(failure)
    monkeypatch.delenv(termination.ENV)
    return log.read_text()
