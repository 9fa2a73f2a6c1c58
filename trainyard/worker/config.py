"""Command-line options of `python -m trainyard.worker train|infer`, with env fallbacks.

Environment variables let a job spec set options without rewriting the command: each flag has
a TRAINYARD_* twin (listed in --help) that is used when the flag is absent.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

# Kept here, not in precision.py, so parsing options never imports torch.
PRECISION_CHOICES = ("auto", "bf16", "fp16", "fp32")


@dataclass
class TrainConfig:
    """Everything `train` needs; field names match the CLI flags."""

    workload: str = "gpt"
    output_dir: Path = Path("out")
    steps: int = 100
    precision: str | None = None  # None: $TRAINYARD_PRECISION, else auto
    batch_size: int = 16  # per rank, per micro-step
    grad_accum: int = 1
    lr: float = 3e-3
    warmup_steps: int = 5
    weight_decay: float = 0.1
    clip: float = 1.0
    compile: bool = False
    checkpoint_every: int = 50
    keep_checkpoints: int = 3
    seed: int = 1337
    deterministic: bool = False
    num_workers: int = 0
    log_every: int = 10
    job: str = "local"
    metrics_port: int = 9400  # base; each rank serves on base + local rank; 0 disables
    metrics_addr: str = "0.0.0.0"
    peak_flops: float | None = None
    # gpt shape overrides (None keeps GPTConfig's default)
    block_size: int | None = None
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    vocab_size: int | None = None
    dropout: float | None = None
    # test/diagnostic hooks (hidden from --help)
    debug_param_checksums: bool = False
    debug_dump_grads_step: int | None = None
    debug_crash_at_step: int | None = None

    def model_options(self) -> dict[str, Any]:
        keys = ("block_size", "n_layer", "n_head", "n_embd", "vocab_size", "dropout")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


@dataclass
class InferConfig:
    """Everything `infer` needs (batch mode or --serve)."""

    checkpoint_dir: Path
    input: Path | None = None
    output: Path | None = None
    serve: bool = False
    host: str = "127.0.0.1"
    port: int = 8000
    precision: str | None = None
    batch_size: int = 32
    max_wait_ms: float = 5.0
    quantize: bool = False
    runtime: str = "torch"
    onnx_dir: Path | None = None
    summary: Path | None = None
    job: str = "local"
    metrics_port: int = 9400
    metrics_addr: str = "0.0.0.0"


def _env(name: str, default: Any, cast: Any = str) -> Any:
    raw = os.environ.get(f"TRAINYARD_{name.upper()}")
    if raw is None:
        return default
    if cast is bool:
        return raw.strip().lower() in ("1", "true", "yes", "on")
    return cast(raw)


def _add(parser: argparse.ArgumentParser, name: str, default: Any, cast: Any, doc: str) -> None:
    env_name = f"TRAINYARD_{name.upper()}"
    flag = "--" + name.replace("_", "-")
    if cast is bool:
        parser.add_argument(
            flag,
            action=argparse.BooleanOptionalAction,
            default=_env(name, default, bool),
            help=f"{doc} (env {env_name})",
        )
    else:
        parser.add_argument(
            flag, type=cast, default=_env(name, default, cast), help=f"{doc} (env {env_name})"
        )


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument(
        "--workload",
        default=_env("workload", d.workload),
        help="gpt, cnn, or module:function (env TRAINYARD_WORKLOAD)",
    )
    _add(p, "output_dir", d.output_dir, Path, "checkpoints and summary.json go here")
    _add(p, "steps", d.steps, int, "total optimizer steps of the run (a resumed run continues)")
    p.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default=None,
        help="auto|bf16|fp16|fp32; default $TRAINYARD_PRECISION, else auto",
    )
    _add(p, "batch_size", d.batch_size, int, "samples per rank per micro-step")
    _add(p, "grad_accum", d.grad_accum, int, "micro-steps per optimizer step")
    _add(p, "lr", d.lr, float, "peak learning rate (linear warmup, then constant)")
    _add(p, "warmup_steps", d.warmup_steps, int, "learning-rate warmup steps")
    _add(p, "weight_decay", d.weight_decay, float, "AdamW weight decay (matrices only)")
    _add(p, "clip", d.clip, float, "gradient-norm clipping threshold; 0 disables")
    _add(p, "compile", d.compile, bool, "torch.compile the model before wrapping it in DDP")
    _add(p, "checkpoint_every", d.checkpoint_every, int, "steps between checkpoints")
    _add(p, "keep_checkpoints", d.keep_checkpoints, int, "how many newest checkpoints to keep")
    _add(p, "seed", d.seed, int, "random seed")
    _add(p, "deterministic", d.deterministic, bool, "deterministic algorithms (exact resume)")
    _add(p, "num_workers", d.num_workers, int, "DataLoader worker processes per rank")
    _add(p, "log_every", d.log_every, int, "steps between log lines")
    _add(p, "job", d.job, str, "job name, the `job` label of metrics")
    _add(p, "metrics_port", d.metrics_port, int, "metrics port base (+ local rank); 0: off")
    _add(p, "metrics_addr", d.metrics_addr, str, "metrics listen address")
    _add(p, "peak_flops", d.peak_flops, float, "peak FLOP/s per rank for MFU (auto on known GPUs)")
    for name in ("block_size", "n_layer", "n_head", "n_embd", "vocab_size"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None, help=f"gpt {name}")
    p.add_argument("--dropout", type=float, default=None, help="gpt dropout")
    p.add_argument("--debug-param-checksums", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--debug-dump-grads-step", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--debug-crash-at-step", type=int, default=None, help=argparse.SUPPRESS)


def add_infer_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint-dir", type=Path, required=True, help="a train --output-dir")
    p.add_argument("--input", type=Path, help="JSONL records to predict (batch mode)")
    p.add_argument("--output", type=Path, help="JSONL results, one per input line")
    p.add_argument(
        "--serve",
        action="store_true",
        default=_env("serve", False, bool),
        help="serve HTTP POST /predict instead (env TRAINYARD_SERVE)",
    )
    p.add_argument("--host", default=_env("serve_host", "127.0.0.1"), help="service listen address")
    p.add_argument(
        "--port",
        type=int,
        default=_env("serve_port", 8000, int),
        help="service port (env TRAINYARD_SERVE_PORT); equal to --metrics-port: /metrics "
        "is served by the service itself",
    )
    p.add_argument("--precision", choices=PRECISION_CHOICES, default=None)
    p.add_argument("--batch-size", type=int, default=32, help="max records per batch")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="service batching window")
    p.add_argument("--quantize", action="store_true", help="dynamic int8 Linear layers (CPU)")
    p.add_argument(
        "--runtime",
        choices=("torch", "onnx"),
        default=_env("runtime", "torch"),
        help="torch: eager; onnx: exported once, run with onnxruntime (env TRAINYARD_RUNTIME)",
    )
    p.add_argument(
        "--onnx-dir",
        type=Path,
        default=None,
        help="runtime onnx: where the exported model is cached (default: CHECKPOINT_DIR/onnx)",
    )
    p.add_argument(
        "--summary",
        type=Path,
        default=None,
        help="batch mode: write {predicted, errors} as JSON here when done",
    )
    p.add_argument("--job", default=_env("job", "local"))
    p.add_argument("--metrics-port", type=int, default=_env("metrics_port", 9400, int))
    p.add_argument("--metrics-addr", default=_env("metrics_addr", "0.0.0.0"))


def to_config(cls: type, ns: argparse.Namespace) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in vars(ns).items() if k in names})


def validate_train(cfg: TrainConfig) -> None:
    """Reject nonsensical values up front, naming the flag and the rule."""
    positive = ("steps", "batch_size", "grad_accum", "checkpoint_every", "keep_checkpoints")
    for name in positive:
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')}: must be at least 1")
    if cfg.lr <= 0:
        raise ValueError("--lr: must be positive")
    if cfg.vocab_size is not None and cfg.vocab_size < 256:
        raise ValueError("--vocab-size: must be at least 256 (the corpus is bytes)")
    if cfg.num_workers < 0 or cfg.clip < 0 or cfg.warmup_steps < 0:
        raise ValueError("--num-workers, --clip and --warmup-steps must not be negative")
