"""Peak FLOP/s of the accelerator, for the model-FLOPs-utilisation estimate.

MFU = achieved model FLOP/s / peak FLOP/s. Peaks are the dense (no sparsity) tensor-core
figures from vendor datasheets; an unknown device gives no MFU unless the peak is supplied
with --peak-flops / $TRAINYARD_PEAK_FLOPS (e.g. a measured matmul peak on CPU).
"""

from __future__ import annotations

import torch

# (substring of torch.cuda.get_device_name, precision) -> dense peak FLOP/s per GPU. Ordered:
# the first matching substring wins, so longer names come before their prefixes.
_GPU_PEAKS: dict[tuple[str, str], float] = {
    ("H200", "bf16"): 989e12,
    ("H100", "bf16"): 989e12,
    ("H100", "fp16"): 989e12,
    ("H100", "fp32"): 494e12,  # TF32
    ("A100", "bf16"): 312e12,
    ("A100", "fp16"): 312e12,
    ("A100", "fp32"): 156e12,  # TF32
    ("L40S", "bf16"): 362e12,  # before "L4": matching is by substring, first hit wins
    ("L40S", "fp16"): 362e12,
    ("L4", "bf16"): 121e12,
    ("L4", "fp16"): 121e12,
    ("A10G", "bf16"): 70e12,
    ("A10", "bf16"): 125e12,
    ("V100", "fp16"): 125e12,
    ("T4", "fp16"): 65e12,
}


def peak_flops(device: torch.device, precision: str, override: float | None) -> float | None:
    """Peak FLOP/s per rank, or None when unknown (MFU is then not reported)."""
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for (needle, prec), value in _GPU_PEAKS.items():
        if needle in name and prec == precision:
            return value
    return None
