from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from trainyard.worker.checkpoint import CheckpointManager, list_checkpoints


def _state(value: float) -> dict[str, object]:
    return {
        "workload": "gpt",
        "model": {"w": torch.full((4,), value)},
        "optimizer": {},
        "scaler": {},
        "rng": [{"torch": torch.get_rng_state()}],
        "data": {"epoch": 0, "batches_done": 3},
    }


def test_save_then_load_newest(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_latest=5)
    manager.save(_state(1.0), step=10)
    manager.save(_state(2.0), step=20)
    state = manager.load_latest()
    assert state is not None
    assert state["step"] == 20
    assert torch.equal(state["model"]["w"], torch.full((4,), 2.0))
    assert not list(tmp_path.glob("*.tmp")), "no temporary file may remain after a save"


def test_truncated_newest_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager = CheckpointManager(tmp_path, keep_latest=5)
    manager.save(_state(1.0), step=10)
    good = (tmp_path / "checkpoint-10.pt").read_bytes()
    (tmp_path / "checkpoint-30.pt").write_bytes(good[: len(good) // 2])
    (tmp_path / "checkpoint-40.pt").write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING):
        state = manager.load_latest()
    assert state is not None and state["step"] == 10
    assert "checkpoint-40.pt is unreadable" in caplog.text
    assert "checkpoint-30.pt is unreadable" in caplog.text


def test_a_renamed_checkpoint_is_rejected(tmp_path: Path) -> None:
    """The step inside must match the name, or resume would restart at the wrong step."""
    manager = CheckpointManager(tmp_path)
    manager.save(_state(1.0), step=10)
    (tmp_path / "checkpoint-10.pt").rename(tmp_path / "checkpoint-99.pt")
    assert manager.load_latest() is None


def test_keep_latest_k(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_latest=2)
    for step in (1, 2, 3, 4):
        manager.save(_state(float(step)), step=step)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 3]


def test_stale_temporaries_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".checkpoint-5.pt.abc.tmp").write_bytes(b"half written")
    CheckpointManager(tmp_path).remove_stale_temporaries()
    assert not list(tmp_path.iterdir())


def test_keep_zero_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--keep-checkpoints"):
        CheckpointManager(tmp_path, keep_latest=0)
