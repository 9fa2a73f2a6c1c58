"""Turn a training output directory into a ready Predictor (newest valid checkpoint)."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from trainyard.worker.checkpoint import CheckpointManager, checkpoint_path
from trainyard.worker.inference.predictors import (
    CNNPredictor,
    GPTPredictor,
    Predictor,
    TensorPredictor,
)
from trainyard.worker.precision import ENV_VAR as PRECISION_ENV
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


RUNTIMES = ("torch", "onnx")


def load_predictor(
    checkpoint_dir: Path,
    device: torch.device,
    precision: str | None = None,
    quantize: bool = False,
    runtime: str = "torch",
    onnx_dir: Path | None = None,
) -> tuple[Predictor, dict[str, object]]:
    """The predictor for the newest valid checkpoint in `checkpoint_dir`, plus facts about it.

    `runtime` torch runs the model eagerly (dynamic int8 Linear layers with `quantize`, CPU
    only); onnx exports it once into `onnx_dir` (default: beside the checkpoints) and runs
    it with onnxruntime in fp32 (int8 MatMul weights with `quantize`).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"--runtime: {runtime!r} is not one of {', '.join(RUNTIMES)}")
    state = CheckpointManager(checkpoint_dir).load_latest()
    if state is None:
        raise ValueError(f"--checkpoint-dir: no valid checkpoint-<step>.pt in {checkpoint_dir}")
    spec = state["workload"]
    model = build_model(spec, state.get("model_config") or {})
    model.load_state_dict(state["model"])
    if runtime == "onnx":
        return _onnx_predictor(
            model.eval(), spec, state, checkpoint_dir, precision, quantize, onnx_dir
        )
    resolved: Precision = resolve_precision(precision, device)
    if quantize:
        if device.type != "cpu":
            raise ValueError("--quantize: dynamic int8 quantization runs on CPU only")
        model = quantize_int8(model.eval())
        resolved = "fp32"  # int8 kernels take fp32 activations; autocast would fight them
    model = model.to(device)
    cls = _predictor_class(spec)
    info = {
        "workload": spec,
        "step": state["step"],
        "precision": resolved,
        "quantized": quantize,
        "runtime": runtime,
    }
    log.info("loaded %s checkpoint at step %d (%s)", spec, state["step"], resolved)
    return cls(model, device, resolved), info


def _predictor_class(spec: str) -> type[Predictor]:
    return {"gpt": GPTPredictor, "cnn": CNNPredictor}.get(spec, TensorPredictor)


def _onnx_predictor(
    model: nn.Module,
    spec: str,
    state: dict[str, object],
    checkpoint_dir: Path,
    precision: str | None,
    quantize: bool,
    onnx_dir: Path | None,
) -> tuple[Predictor, dict[str, object]]:
    """The exported graph under onnxruntime; inputs and outputs are CPU tensors."""
    from trainyard.worker.inference.onnx_runtime import OnnxModule, exported_model

    requested = precision if precision is not None else os.environ.get(PRECISION_ENV, "auto")
    if requested.strip().lower() not in ("auto", "fp32"):
        raise ValueError(
            f"--precision: runtime onnx runs the exported fp32 graph, not {requested} "
            "(use fp32 or auto; int8 with --quantize)"
        )
    step = int(state["step"])  # type: ignore[call-overload]
    path = exported_model(
        model,
        spec,
        checkpoint_path(checkpoint_dir, step),
        step,
        onnx_dir or checkpoint_dir / "onnx",
        quantize,
    )
    onnx_model = OnnxModule(path, getattr(model, "config", None))
    info = {
        "workload": spec,
        "step": step,
        "precision": "fp32",
        "quantized": quantize,
        "runtime": "onnx",
        "providers": onnx_model.session.get_providers(),
    }
    log.info("loaded %s checkpoint at step %d as ONNX (%s)", spec, step, path)
    cpu = torch.device("cpu")  # onnxruntime takes host arrays and moves them itself
    return _predictor_class(spec)(onnx_model, cpu, "fp32"), info
