"""Turn a training output directory into a ready Predictor (newest valid checkpoint)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from trainyard.worker.checkpoint import CheckpointManager
from trainyard.worker.inference.predictors import (
    CNNPredictor,
    GPTPredictor,
    Predictor,
    TensorPredictor,
)
from trainyard.worker.precision import Precision, resolve_precision
from trainyard.worker.workloads import build_model

log = logging.getLogger(__name__)


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of Linear layers (weights int8, activations quantized on the fly).

    torch 2.15 still ships `torch.ao.quantization.quantize_dynamic` but marks it deprecated in
    favour of torchao's `quantize_`; it is used here as the issue asks, with the warning muted.
    """
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def load_predictor(
    checkpoint_dir: Path,
    device: torch.device,
    precision: str | None = None,
    quantize: bool = False,
) -> tuple[Predictor, dict[str, object]]:
    """The predictor for the newest valid checkpoint in `checkpoint_dir`, plus facts about it."""
    state = CheckpointManager(checkpoint_dir).load_latest()
    if state is None:
        raise ValueError(f"--checkpoint-dir: no valid checkpoint-<step>.pt in {checkpoint_dir}")
    spec = state["workload"]
    model = build_model(spec, state.get("model_config") or {})
    model.load_state_dict(state["model"])
    resolved: Precision = resolve_precision(precision, device)
    if quantize:
        if device.type != "cpu":
            raise ValueError("--quantize: dynamic int8 quantization runs on CPU only")
        model = quantize_int8(model.eval())
        resolved = "fp32"  # int8 kernels take fp32 activations; autocast would fight them
    model = model.to(device)
    cls = {"gpt": GPTPredictor, "cnn": CNNPredictor}.get(spec, TensorPredictor)
    info = {"workload": spec, "step": state["step"], "precision": resolved, "quantized": quantize}
    log.info("loaded %s checkpoint at step %d (%s)", spec, state["step"], resolved)
    return cls(model, device, resolved), info
