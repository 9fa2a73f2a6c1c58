from __future__ import annotations

import pytest
import torch

from trainyard.worker.precision import autocast, grad_scaler, resolve_precision

CPU = torch.device("cpu")


def test_auto_is_bf16_on_cpu() -> None:
    assert resolve_precision("auto", CPU) == "bf16"


def test_flag_wins_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINYARD_PRECISION", "fp32")
    assert resolve_precision("bf16", CPU) == "bf16"
    assert resolve_precision(None, CPU) == "fp32"


def test_invalid_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINYARD_PRECISION", "fp8")
    with pytest.raises(ValueError, match="TRAINYARD_PRECISION: 'fp8' is not one of"):
        resolve_precision(None, CPU)


def test_autocast_runs_matmul_in_bf16_and_fp32_does_not() -> None:
    a = torch.randn(4, 4)
    with autocast(CPU, "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    with autocast(CPU, "fp32"):
        assert (a @ a).dtype == torch.float32


def test_grad_scaler_only_enabled_for_fp16() -> None:
    assert grad_scaler(CPU, "fp16").is_enabled()
    assert not grad_scaler(CPU, "bf16").is_enabled()
    assert not grad_scaler(CPU, "fp32").is_enabled()
