"""Mixed precision as one decision: which dtype autocast uses and whether a GradScaler runs.

nanoGPT's pattern: one autocast context plus `GradScaler(enabled=fp16)`, so fp32, bf16 and fp16
share a single code path. `auto` picks bf16 where it is native (Ampere+ GPUs, CPU) and fp16
with loss scaling on older GPUs.
"""

from __future__ import annotations

import contextlib
import os
from typing import Literal

import torch

from trainyard.worker.config import PRECISION_CHOICES as CHOICES

Precision = Literal["bf16", "fp16", "fp32"]
ENV_VAR = "TRAINYARD_PRECISION"
DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
}


def _cuda_is_ampere_or_newer(device: torch.device) -> bool:
    return torch.cuda.get_device_capability(device)[0] >= 8


def resolve_precision(requested: str | None, device: torch.device) -> Precision:
    """The concrete precision for `requested` (flag, else $TRAINYARD_PRECISION, else auto)."""
    source = "--precision"
    if requested is None:
        requested, source = os.environ.get(ENV_VAR, "auto"), ENV_VAR
    value = requested.strip().lower()
    if value not in CHOICES:
        raise ValueError(f"{source}: {requested!r} is not one of {', '.join(CHOICES)}")
    if device.type == "cuda":
        bf16_native = _cuda_is_ampere_or_newer(device)
        if value == "auto":
            return "bf16" if bf16_native else "fp16"
        if value == "bf16" and not bf16_native:
            name = torch.cuda.get_device_name(device)
            raise ValueError(f"{source}: bf16 needs an Ampere or newer GPU, {name} is older")
        return value  # type: ignore[return-value]
    return "bf16" if value == "auto" else value  # type: ignore[return-value]


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    """The forward-pass context: autocast to bf16/fp16, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def grad_scaler(device: torch.device, precision: Precision) -> torch.amp.GradScaler:
    """Loss scaling is only needed for fp16 (narrow exponent); a disabled scaler is a no-op."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def enable_tf32(device: torch.device) -> bool:
    """TF32 matmuls/convolutions on Ampere+: fp32 range, ~10x faster tensor-core math."""
    if device.type != "cuda" or not _cuda_is_ampere_or_newer(device):
        return False
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    return True
