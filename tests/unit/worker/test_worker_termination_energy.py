"""The worker's side of the energy report in a pod's termination message
(trainyard.worker.termination + trainyard.energy_report): every rank of a pod adds its
figure, the checkpoint report and a failure's summary keep theirs, and what the kubelet
keeps (the last 4096 bytes) still holds both reports.

The ranks are real processes writing one real file. NVML is mocked in one test only
(`FakeNvml`: this machine has no GPU; it stands in for pynvml's energy counter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainyard.checkpoint_index import MAX_REPORTED, REPORT_MARKER, parse_report
from trainyard.energy_report import ENERGY_MARKER, energy_line, parse_energy
from trainyard.worker import termination
from trainyard.worker.checkpoint import CheckpointManager

KUBELET_LIMIT = 4096  # bytes of the message the kubelet keeps (the last ones)


def _state() -> dict[str, object]:
    return {"workload": "gpt", "model": {"w": torch.zeros(4)}, "optimizer": {}, "scaler": {},
            "rng": [], "data": {}}  # fmt: skip


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "termination-log"
    monkeypatch.setenv(termination.ENV, str(path))
    return path


def test_each_rank_adds_its_energy_and_the_line_round_trips(log: Path) -> None:
    termination.report_energy(0, 1500.25)
    termination.report_energy(1, 250.5)
    termination.report_energy(0, 1600.0)  # a later reading of rank 0 replaces its first
    assert log.read_text() == energy_line({0: 1600.0, 1: 250.5}) + "\n"
    assert parse_energy(log.read_text()) == ({0: 1600.0, 1: 250.5}, "")


def test_checkpoints_and_a_failure_keep_the_energy_and_it_stays_last(
    log: Path, tmp_path: Path
) -> None:
    manager = CheckpointManager(tmp_path / "out", keep_latest=2, attempt=3)
    manager.save(_state(), step=10)
    termination.report_energy(2, 99.0)
    manager.save(_state(), step=20)  # rewrites the checkpoint report: the energy stays
    termination.record_failure("Traceback ...\nRuntimeError: CUDA error: out of memory\n")
    lines = log.read_text().splitlines()
    assert lines[-1] == energy_line({2: 99.0})
    assert lines[-2].startswith(REPORT_MARKER)
    assert lines[-3] == "RuntimeError: CUDA error: out of memory"
    checkpoints, rest = parse_report(log.read_text())
    assert [(c["step"], c["attempt"]) for c in checkpoints or []] == [(20, 3), (10, 3)]
    energy, rest = parse_energy(rest)
    assert energy == {2: 99.0}
    assert rest == "Traceback ...\nRuntimeError: CUDA error: out of memory"


def test_a_failure_before_any_report_leaves_the_kubelet_its_log_fallback(log: Path) -> None:
    termination.record_failure("boom")
    assert not log.exists()
    termination.report_energy(0, 1.0)
    termination.record_failure("boom")  # now there is a report to keep: say why first
    assert log.read_text().splitlines() == ["boom", energy_line({0: 1.0})]


def test_no_energy_line_outside_a_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(termination.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    termination.report_energy(0, 5.0)
    assert list(tmp_path.iterdir()) == []


RANK = """
import sys
from trainyard.worker import termination
rank = int(sys.argv[1])
for reading in range(1, 41):
    termination.report_energy(rank, float(rank * 1000 + reading))
"""


def test_the_ranks_of_a_pod_writing_at_once_lose_nothing(log: Path) -> None:
    """Eight real processes, as torchrun's local ranks would, each rewriting the shared
    file 40 times: without the lock, one rank's rewrite drops another's figure."""
    ranks = [subprocess.Popen([sys.executable, "-c", RANK, str(rank)]) for rank in range(8)]
    assert [p.wait(timeout=120) for p in ranks] == [0] * 8
    energy, rest = parse_energy(log.read_text())
    assert energy == {rank: float(rank * 1000 + 40) for rank in range(8)}
    assert rest == ""


def test_what_the_kubelet_keeps_of_a_full_message_holds_both_reports(
    log: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    manager = CheckpointManager(out, keep_latest=MAX_REPORTED + 5, attempt=12)
    for step in range(10**8, 10**8 + MAX_REPORTED + 5):
        manager.save(_state(), step=step)
    for rank in range(8):
        termination.report_energy(10_000 + rank, 123456789.123)
    termination.record_failure("x" * 5000)
    kept = log.read_bytes()[-KUBELET_LIMIT:].decode()
    checkpoints, rest = parse_report(kept)
    assert checkpoints is not None and len(checkpoints) == MAX_REPORTED
    energy, _ = parse_energy(rest)
    assert energy == {10_000 + rank: 123456789.123 for rank in range(8)}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (ENERGY_MARKER + "not json", None),
        (ENERGY_MARKER + "[1, 2]", None),
        (ENERGY_MARKER + '{"0": -1, "1": "x", "2": true, "-3": 5, "x": 5, "4": 7.5}', {4: 7.5}),
        (ENERGY_MARKER + '{"0": 1e400, "1": NaN, "2": 1e16, "3": 0}', {3: 0.0}),
        (ENERGY_MARKER + '{"\u00b2": 1, "99999999999": 1, " 5": 1, "6": 2}', {6: 2.0}),
    ],
)
def test_a_malformed_energy_report_is_never_trusted(
    line: str, expected: dict[int, float] | None
) -> None:
    energy, rest = parse_energy(f"last words\n{line}")
    assert energy == expected
    assert rest == "last words"


class FakeNvml:
    """Stands in for pynvml (no GPU on this machine): its energy counter in millijoules."""

    def __init__(self) -> None:
        self.millijoules = 7_000_000

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: object) -> int:
        return self.millijoules


def test_a_measuring_rank_writes_its_file_and_its_termination_line(
    log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainyard.worker.metrics import WorkerMetrics

    monkeypatch.setenv("TRAINYARD_ATTEMPT", "2")
    nvml = FakeNvml()
    metrics = WorkerMetrics("job", 5, queue="q")
    metrics._watch_energy(nvml, handle=None)
    nvml.millijoules += 2_500_000
    assert metrics.write_energy(tmp_path / "out") == tmp_path / "out/energy/attempt-2-rank-5.json"
    assert parse_energy(log.read_text()) == ({5: 2500.0}, "")
    silent = WorkerMetrics("job", 6, queue="q")  # no NVML: nothing, not a zero
    assert silent.write_energy(tmp_path / "out") is None
    assert parse_energy(log.read_text()) == ({5: 2500.0}, "")
