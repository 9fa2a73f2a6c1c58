"""The training loop in one process (no torchrun): workloads, precisions, summary, resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from trainyard.worker.__main__ import main
from trainyard.worker.checkpoint import list_checkpoints, load_valid

sys.path.insert(0, str(Path(__file__).parent))
SUMMARY_KEYS = {
    "world_size",
    "precision",
    "steps",
    "first_loss",
    "last_loss",
    "samples_per_s",
    "tokens_per_s",
    "resumed_from_step",
    "peak_memory_bytes",
}


@pytest.fixture(autouse=True)
def _no_torchrun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TRAINYARD_PRECISION"):
        monkeypatch.delenv(name, raising=False)


def _train(out: Path, *args: str) -> dict[str, object]:
    code = main(["train", "--output-dir", str(out), "--metrics-port", "0", *args])
    assert code == 0
    return json.loads((out / "summary.json").read_text())


def test_cnn_learns_in_bf16(tmp_path: Path) -> None:
    summary = _train(tmp_path, "--workload", "cnn", "--steps", "15", "--batch-size", "32")
    assert summary.keys() >= SUMMARY_KEYS
    assert summary["world_size"] == 1 and summary["precision"] == "bf16"
    assert summary["last_loss"] < 0.8 * summary["first_loss"]
    assert summary["tokens_per_s"] is None  # not a token workload
    assert summary["samples_per_s"] > 0 and summary["peak_memory_bytes"] > 0
    assert [s for s, _ in list_checkpoints(tmp_path)] == [15]


def test_fp16_uses_a_grad_scaler_and_checkpoints_its_state(tmp_path: Path) -> None:
    summary = _train(tmp_path, "--precision", "fp16", "--steps", "3", "--batch-size", "4")
    assert summary["precision"] == "fp16"
    state = load_valid(tmp_path / "checkpoint-3.pt", 3)
    assert state["scaler"]["scale"] > 1.0, "an enabled GradScaler keeps a loss scale"


def test_user_workload_trains(tmp_path: Path) -> None:
    summary = _train(
        tmp_path,
        "--workload",
        "user_workload:regression",
        "--precision",
        "fp32",
        "--steps",
        "30",
        "--lr",
        "0.05",
        "--batch-size",
        "32",
    )
    assert summary["last_loss"] < 0.5 * summary["first_loss"]


def test_finished_run_resumes_without_training(tmp_path: Path) -> None:
    _train(tmp_path, "--steps", "2", "--batch-size", "4")
    before = (tmp_path / "checkpoint-2.pt").read_bytes()
    summary = _train(tmp_path, "--steps", "2", "--batch-size", "4")
    assert summary["resumed_from_step"] == 2 and summary["steps"] == 2
    assert (tmp_path / "checkpoint-2.pt").read_bytes() == before


def test_checkpoint_of_another_workload_is_refused(tmp_path: Path, capsys) -> None:
    _train(tmp_path, "--steps", "1", "--batch-size", "4")
    code = main(["train", "--workload", "cnn", "--output-dir", str(tmp_path),
                 "--metrics-port", "0", "--steps", "2"])  # fmt: skip
    assert code == 2
    assert "holds checkpoints of 'gpt'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "--steps: must be at least 1"),
        (["--grad-accum", "0"], "--grad-accum: must be at least 1"),
        (["--lr", "-1"], "--lr: must be positive"),
    ],
)
def test_bad_options_exit_2_naming_the_flag(tmp_path: Path, capsys, args, message) -> None:
    assert main(["train", "--output-dir", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err


def test_gpt_loss_matches_uniform_guess_at_init(tmp_path: Path) -> None:
    """Sanity of the model and loss: an untrained byte model is close to ln(256)."""
    summary = _train(tmp_path, "--steps", "1", "--batch-size", "4", "--precision", "fp32")
    assert abs(summary["first_loss"] - torch.log(torch.tensor(256.0)).item()) < 0.1


def test_resume_may_change_precision(tmp_path: Path) -> None:
    """A run checkpointed in fp16 (scaler state) continues in bf16 (no scaler), and back."""
    _train(tmp_path, "--precision", "fp16", "--steps", "2", "--batch-size", "4")
    assert (
        _train(tmp_path, "--precision", "bf16", "--steps", "3", "--batch-size", "4")["steps"] == 3
    )
    assert (
        _train(tmp_path, "--precision", "fp16", "--steps", "4", "--batch-size", "4")["steps"] == 4
    )


def test_batch_larger_than_the_data_is_explained(tmp_path: Path, capsys) -> None:
    code = main(["train", "--output-dir", str(tmp_path), "--metrics-port", "0",
                 "--batch-size", "1000000"])  # fmt: skip
    assert code == 2
    assert "--batch-size: 1000000 is more than the" in capsys.readouterr().err
