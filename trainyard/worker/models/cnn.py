"""A small convolutional image classifier and the synthetic images it learns.

The data needs no download: each class is a fixed random prototype image, and a sample is its
prototype plus Gaussian noise, so the classes are separable and accuracy visibly climbs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset


@dataclass(frozen=True)
class CNNConfig:
    """Image shape and width of the classifier."""

    channels: int = 3
    image_size: int = 16
    num_classes: int = 10
    width: int = 16

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class CNN(nn.Module):
    """Two conv-BN-ReLU stages, pooled to 4x4 (keeping coarse layout), and a linear head."""

    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.features = nn.Sequential(
            nn.Conv2d(config.channels, w, 3, padding=1),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Linear(2 * w * 16, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class SyntheticImages(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """`size` noisy copies of per-class prototype images; sample i is the same on every rank."""

    def __init__(self, config: CNNConfig, size: int = 4096, seed: int = 0, noise: float = 0.5):
        gen = torch.Generator().manual_seed(seed)
        shape = (config.channels, config.image_size, config.image_size)
        self.prototypes = torch.randn((config.num_classes, *shape), generator=gen)
        self.labels = torch.randint(0, config.num_classes, (size,), generator=gen)
        self.noise = torch.randn((size, *shape), generator=gen) * noise

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        label = self.labels[i]
        return self.prototypes[label] + self.noise[i], label


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy in fp32 whatever the autocast dtype."""
    return F.cross_entropy(logits.float(), labels)
