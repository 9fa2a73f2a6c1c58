"""GPU-only guarantees: fp16 with GradScaler, bf16 on Ampere+, NCCL. Skipped without CUDA.

These cannot run on the CPU-only CI machine; run them on any NVIDIA host with
`pytest -m gpu tests/integration/worker`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from worker_procs import run_torchrun, worker_env

from trainyard.worker.checkpoint import load_valid

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _ampere() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability(0)[0] >= 8


def _train_single(out: Path, *args: str) -> dict:
    subprocess.run(
        [sys.executable, "-m", "trainyard.worker", "train", "--output-dir", str(out),
         "--metrics-port", "0", "--steps", "30", *args],
        env=worker_env(), check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return json.loads((out / "summary.json").read_text())


def test_fp16_with_grad_scaler_learns(tmp_path: Path) -> None:
    summary = _train_single(tmp_path, "--precision", "fp16")
    assert summary["device"].startswith("cuda") and summary["precision"] == "fp16"
    assert summary["last_loss"] < 0.9 * summary["first_loss"]
    scaler = load_valid(tmp_path / "checkpoint-30.pt", 30)["scaler"]
    assert 1.0 <= scaler["scale"] < float("inf"), "GradScaler must hold a finite loss scale"
    assert summary["peak_memory_bytes"] > 0


@pytest.mark.skipif(not _ampere(), reason="bf16 autocast needs an Ampere or newer GPU")
def test_auto_picks_bf16_with_tf32_on_ampere(tmp_path: Path) -> None:
    summary = _train_single(tmp_path, "--precision", "auto")
    assert summary["precision"] == "bf16" and summary["tf32"] is True
    assert summary["last_loss"] < 0.9 * summary["first_loss"]


def test_nccl_ddp_learns(tmp_path: Path) -> None:
    nproc = min(2, torch.cuda.device_count())
    result = run_torchrun(
        "--steps", "30", "--output-dir", str(tmp_path), "--metrics-port", "0", nproc=nproc
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["backend"] == "nccl" and summary["world_size"] == nproc
    assert summary["last_loss"] < 0.9 * summary["first_loss"]


@pytest.mark.skipif(not _ampere(), reason="compile+bf16 path targets Ampere or newer")
def test_compile_bf16_learns(tmp_path: Path) -> None:
    summary = _train_single(tmp_path, "--precision", "bf16", "--compile")
    assert summary["compile"] is True
    assert summary["last_loss"] < 0.9 * summary["first_loss"]
