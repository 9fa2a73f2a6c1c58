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


class _SignFlip(nn.Module):
    """Branches on a tensor's value in Python: torch.export cannot capture that."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.linear(x)
        return -self.linear(x)


def data_dependent() -> tuple[nn.Module, TensorDataset, nn.MSELoss]:
    """A model that trains and serves eagerly but cannot be exported to ONNX."""
    _, dataset, loss = regression()
    return _SignFlip(), dataset, loss
