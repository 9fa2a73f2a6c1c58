"""A user workload, as documented in the README: `module:function` returning the triple."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset


def regression() -> tuple[nn.Module, TensorDataset, nn.MSELoss]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, 8, generator=gen)
    y = x @ torch.randn(8, 1, generator=gen)
    return nn.Linear(8, 1), TensorDataset(x, y), nn.MSELoss()


def not_a_triple() -> int:
    return 3
