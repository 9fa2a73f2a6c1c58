"""The registry of what a worker can train: `gpt`, `cnn`, or user code as `module:function`.

User-code contract: `module:function` names a callable taking no arguments that returns
`(model, dataset, loss_fn)`:

* `model`: a `torch.nn.Module`; called as `model(inputs)`;
* `dataset`: a map-style `torch.utils.data.Dataset` whose items are `(inputs, target)`;
* `loss_fn(outputs, targets) -> scalar tensor`, the mean loss of a batch.

The worker supplies everything else (DDP, sharding, precision, checkpoints, metrics). The same
callable is called again at inference time to rebuild the model before loading its weights.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from trainyard.worker.data import ByteWindows, load_corpus
from trainyard.worker.models.cnn import CNN, CNNConfig, SyntheticImages, classification_loss
from trainyard.worker.models.gpt import GPT, GPTConfig, flops_per_token, lm_loss

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BUILTIN = ("gpt", "cnn")


@dataclass
class Workload:
    """A model, its data and loss, plus what the loop needs to report throughput and MFU."""

    spec: str
    model: nn.Module
    dataset: Dataset[Any]
    loss_fn: LossFn
    model_config: dict[str, Any] = field(default_factory=dict)
    tokens_per_sample: int | None = None
    flops_per_token: float | None = None


def gpt_config_from(options: dict[str, Any]) -> GPTConfig:
    known = GPTConfig.__dataclass_fields__
    return GPTConfig(**{k: v for k, v in options.items() if k in known and v is not None})


def build_model(spec: str, model_config: dict[str, Any]) -> nn.Module:
    """Rebuild a workload's model (untrained) from the config stored in its checkpoint."""
    if spec == "gpt":
        return GPT(GPTConfig(**model_config))
    if spec == "cnn":
        return CNN(CNNConfig(**model_config))
    return load_user_workload(spec).model


def build_workload(spec: str, options: dict[str, Any] | None = None) -> Workload:
    """The workload named by `spec`; `options` override GPT shape fields for `gpt`."""
    options = options or {}
    if spec == "gpt":
        config = gpt_config_from(options)
        model = GPT(config)
        return Workload(
            spec=spec,
            model=model,
            dataset=ByteWindows(load_corpus(), config.block_size),
            loss_fn=lm_loss,
            model_config=config.to_dict(),
            tokens_per_sample=config.block_size,
            flops_per_token=flops_per_token(config, model.num_params()),
        )
    if spec == "cnn":
        cnn_config = CNNConfig()
        return Workload(
            spec=spec,
            model=CNN(cnn_config),
            dataset=SyntheticImages(cnn_config),
            loss_fn=classification_loss,
            model_config=cnn_config.to_dict(),
        )
    return load_user_workload(spec)


def load_user_workload(spec: str) -> Workload:
    """Import `module:function`, call it, and check it honours the contract above."""
    module_name, sep, func_name = spec.partition(":")
    if not sep or not module_name or not func_name:
        raise ValueError(
            f"--workload: {spec!r} is not one of {', '.join(BUILTIN)} "
            "nor of the form module:function"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--workload: cannot import module {module_name!r}: {exc}") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ValueError(f"--workload: {module_name!r} has no callable {func_name!r}")
    result = func()
    if not (isinstance(result, tuple) and len(result) == 3):
        raise ValueError(f"--workload: {spec} must return (model, dataset, loss_fn)")
    model, dataset, loss_fn = result
    if not isinstance(model, nn.Module):
        raise ValueError(f"--workload: {spec} returned a model that is not a torch.nn.Module")
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise ValueError(f"--workload: {spec} returned a dataset without __getitem__/__len__")
    if not callable(loss_fn):
        raise ValueError(f"--workload: {spec} returned a loss_fn that is not callable")
    return Workload(spec=spec, model=model, dataset=dataset, loss_fn=loss_fn)
