"""The training loop: DDP + mixed precision + checkpoints, for every workload.

    torchrun --standalone --nproc_per_node 2 -m trainyard.worker train --workload gpt \
        --precision bf16 --steps 40 --output-dir out/gpt

Shape of one optimizer step (nanoGPT's): `grad_accum` micro-steps under one autocast context,
gradients all-reduced only on the last micro-step (`no_sync` before it), loss scaled when fp16,
gradients unscaled before clipping, then the (fused) AdamW step. After every step the ranks
exchange loss and a stop vote in one all-reduce, which is also how a SIGTERM seen by any rank
becomes a checkpoint-and-exit on all of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from trainyard.worker.checkpoint import CheckpointManager, checkpoint_path, load_valid
from trainyard.worker.config import TrainConfig, validate_train
from trainyard.worker.data import BatchStream
from trainyard.worker.distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_max,
    all_reduce_sum,
    barrier,
    broadcast_object,
    init_distributed,
    shutdown_distributed,
)
from trainyard.worker.flops import peak_flops
from trainyard.worker.metrics import WorkerMetrics, peak_memory_bytes
from trainyard.worker.precision import autocast, enable_tf32, grad_scaler, resolve_precision
from trainyard.worker.preemption import PREEMPTED_EXIT_CODE, PreemptionFlag
from trainyard.worker.workloads import Workload, build_workload

log = logging.getLogger("trainyard.worker.train")


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with decay on matrices only (nanoGPT), fused where the device has the kernel."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=True)
    except RuntimeError as exc:  # no fused kernel for this device or dtype
        log.info(
            "fused AdamW unavailable on %s (%s); using the foreach implementation", device, exc
        )
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup then constant: a pure function of the step, so resume needs no state."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr


def rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_rank(seed: int, rank: int) -> None:
    """Per-rank streams (dropout differs across ranks, as it should), reproducible per seed."""
    torch.manual_seed(seed + rank)
    random.seed(seed + rank)


def param_checksum(model: nn.Module) -> str:
    """Exact fingerprint of every parameter's bytes; equal across ranks iff weights are equal."""
    digest = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(b, device) for b in batch)
    return batch


class Trainer:
    """One training run on one rank; `run()` returns the process exit code."""

    def __init__(self, cfg: TrainConfig, ctx: DistContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.out = Path(cfg.output_dir)
        self.precision = resolve_precision(cfg.precision, ctx.device)
        self.tf32 = enable_tf32(ctx.device)
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        # The same seed on every rank gives identical initial weights (DDP also broadcasts).
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.workload: Workload = build_workload(cfg.workload, cfg.model_options())
        self.raw_model = self.workload.model.to(ctx.device)
        self.optimizer = make_optimizer(self.raw_model, cfg, ctx.device)
        self.scaler = grad_scaler(ctx.device, self.precision)
        self.checkpoints = CheckpointManager(self.out, cfg.keep_checkpoints)
        self.step = 0
        self.resumed_from: int | None = None
        self.first_loss: float | None = None
        self.last_loss: float | None = None
        data_position = {"epoch": 0, "batches_done": 0}
        resumed = self._load_checkpoint()
        if resumed is not None:
            data_position = resumed
        else:
            seed_rank(cfg.seed, ctx.rank)
        model: nn.Module = self.raw_model
        if cfg.compile:
            model = torch.compile(model)  # type: ignore[assignment]
        if ctx.is_distributed:
            device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            model = DDP(model, device_ids=device_ids)
        self.model = model
        self.stream = BatchStream(
            self.workload.dataset,
            cfg.batch_size,
            ctx.rank,
            ctx.world_size,
            cfg.seed,
            num_workers=cfg.num_workers,
            pin_memory=ctx.device.type == "cuda",
            **data_position,
        )
        self.global_batch = cfg.batch_size * cfg.grad_accum * ctx.world_size
        self.peak = peak_flops(ctx.device, self.precision, cfg.peak_flops)
        self.metrics = WorkerMetrics(cfg.job, ctx.rank)
        self.last_checkpoint: Path | None = None

    # -- checkpoints -------------------------------------------------------------------

    def _load_checkpoint(self) -> dict[str, int] | None:
        """Resume from the newest valid checkpoint rank 0 finds; every rank loads that one."""
        chosen: int | None = None
        state: dict[str, Any] | None = None
        if self.ctx.is_main:
            self.checkpoints.remove_stale_temporaries()
            state = self.checkpoints.load_latest()
            chosen = None if state is None else int(state["step"])
        chosen = broadcast_object(self.ctx, chosen)  # type: ignore[assignment]
        if chosen is None:
            return None
        problem = ""
        if state is None:  # other ranks read the file rank 0 validated (shared output dir)
            try:
                state = load_valid(checkpoint_path(self.out, chosen), chosen)
            except (ValueError, OSError) as exc:
                problem = str(exc)
        # Agree before going on: a rank that cannot read the checkpoint must stop every rank,
        # not leave the others waiting in DDP's first collective until the timeout.
        if all_reduce_max(self.ctx, float(bool(problem))) > 0:
            raise ValueError(
                f"--output-dir: rank {self.ctx.rank} cannot read checkpoint-{chosen}.pt "
                f"({problem or 'another rank failed'}); is {self.out} shared by all nodes?"
            )
        assert state is not None
        if state["workload"] != self.workload.spec:
            raise ValueError(
                f"--workload: {self.workload.spec!r} but {self.out} holds checkpoints of "
                f"{state['workload']!r}; use another --output-dir"
            )
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler.is_enabled() and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])  # else: precision changed since then
        rng = state["rng"]
        if len(rng) == self.ctx.world_size:
            set_rng_state(rng[self.ctx.rank], self.ctx.device)
        else:
            log.warning(
                "checkpoint was written by %d ranks, now %d: reseeding RNGs (not bit-exact)",
                len(rng),
                self.ctx.world_size,
            )
            seed_rank(self.cfg.seed + chosen, self.ctx.rank)
        self.step = chosen
        self.resumed_from = chosen
        self.first_loss = state.get("first_loss")
        self.last_loss = state.get("last_loss")
        if self.ctx.is_main:
            log.info("resumed from %s", checkpoint_path(self.out, chosen))
        return {k: int(v) for k, v in state["data"].items()}

    def _save_checkpoint(self) -> None:
        """All ranks contribute their RNG state; rank 0 writes the file."""
        rngs = all_gather_objects(self.ctx, rng_state(self.ctx.device))
        if not self.ctx.is_main:
            return
        state = {
            "workload": self.workload.spec,
            "model_config": self.workload.model_config,
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rngs,
            "data": self.stream.position(),
            "world_size": self.ctx.world_size,
            "precision": self.precision,
            "first_loss": self.first_loss,
            "last_loss": self.last_loss,
        }
        path, seconds = self.checkpoints.save(state, self.step)
        self.metrics.checkpoint_seconds.observe(seconds)
        self.last_checkpoint = path
        log.info("checkpoint %s written in %.3fs", path.name, seconds)

    # -- debug hooks used by the tests -------------------------------------------------

    def _debug_dir(self) -> Path:
        path = self.out / "debug"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _dump_grads(self, params_before: dict[str, torch.Tensor], batches: list[Any]) -> None:
        grads = {
            name: p.grad.detach().cpu().clone()
            for name, p in self.raw_model.named_parameters()
            if p.grad is not None
        }
        payload = {"params": params_before, "batches": batches, "grads": grads}
        torch.save(payload, self._debug_dir() / f"grads-rank{self.ctx.rank}.pt")

    # -- the loop ----------------------------------------------------------------------

    def _micro_step(self, batch: Any, sync: bool) -> float:
        inputs, targets = _to_device(batch, self.ctx.device)
        no_sync = self.ctx.is_distributed and not sync
        with self.model.no_sync() if no_sync else contextlib.nullcontext():  # type: ignore[operator]
            with autocast(self.ctx.device, self.precision):
                loss = self.workload.loss_fn(self.model(inputs), targets) / self.cfg.grad_accum
            self.scaler.scale(loss).backward()
        return float(loss.detach())

    def _train_step(self) -> tuple[float, float]:
        """One optimizer step; returns (this rank's loss, seconds spent waiting for data)."""
        cfg = self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, cfg)
        dump = cfg.debug_dump_grads_step == self.step
        params_before = (
            {k: v.detach().cpu().clone() for k, v in self.raw_model.state_dict().items()}
            if dump
            else {}
        )
        batches: list[Any] = []
        loss = data_wait = 0.0
        for micro in range(cfg.grad_accum):
            waited = time.perf_counter()
            batch = self.stream.next()
            data_wait += time.perf_counter() - waited
            if dump:
                batches.append(batch)
            loss += self._micro_step(batch, sync=micro == cfg.grad_accum - 1)
        if cfg.debug_crash_at_step == self.step and self.ctx.is_main:
            log.error("debug: crashing hard (SIGKILL) in the middle of step %d", self.step)
            os.kill(os.getpid(), signal.SIGKILL)
        if dump:
            self._dump_grads(params_before, batches)
        if cfg.clip > 0:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not scaled ones
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), cfg.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss, data_wait

    def run(self) -> int:
        cfg, ctx = self.cfg, self.ctx
        self.out.mkdir(parents=True, exist_ok=True)
        if cfg.metrics_port > 0:
            self.metrics.serve(cfg.metrics_port + ctx.local_rank, cfg.metrics_addr)
        self.metrics.watch_gpu(ctx.device)
        preempt = PreemptionFlag().install()
        checksums = None
        if cfg.debug_param_checksums:
            checksums = (self._debug_dir() / f"param-checksums-rank{ctx.rank}.jsonl").open("a")
        timed_steps, timed_seconds, preempted = 0, 0.0, False
        started = time.perf_counter()
        tokens = self.workload.tokens_per_sample
        log.info(
            "rank %d/%d on %s (%s), precision %s, tf32 %s, global batch %d, steps %d -> %d",
            ctx.rank,
            ctx.world_size,
            ctx.device,
            ctx.backend or "single process",
            self.precision,
            self.tf32,
            self.global_batch,
            self.step,
            cfg.steps,
        )
        try:
            while self.step < cfg.steps:
                t0 = time.perf_counter()
                loss, data_wait = self._train_step()
                loss_sum, stop_votes = all_reduce_sum(ctx, [loss, float(preempt.requested)])
                step_seconds = time.perf_counter() - t0
                self.last_loss = loss_sum / ctx.world_size
                if self.first_loss is None:
                    self.first_loss = self.last_loss
                if self.step > (self.resumed_from or 0) + 1:  # first step pays warm-up/compile
                    timed_steps += 1
                    timed_seconds += step_seconds
                self._observe(step_seconds, data_wait)
                if checksums is not None:
                    line = {"step": self.step, "sha256": param_checksum(self.raw_model)}
                    checksums.write(json.dumps(line) + "\n")
                    checksums.flush()
                if ctx.is_main and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                    ms = step_seconds * 1e3
                    log.info("step %d loss %.4f %.0f ms", self.step, self.last_loss, ms)
                preempted = stop_votes > 0
                if preempted or self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self._save_checkpoint()
                if preempted:
                    log.warning("stopping at step %d after SIGTERM", self.step)
                    break
            else:
                if self.last_checkpoint is None and self.step == self.resumed_from:
                    log.info("already at step %d of %d: nothing to train", self.step, cfg.steps)
            peak = int(all_reduce_max(ctx, float(peak_memory_bytes(ctx.device))))
            if ctx.is_main:
                self._write_summary(timed_steps, timed_seconds, peak, preempted, started, tokens)
        finally:
            preempt.uninstall()
            if checksums is not None:
                checksums.close()
            self.metrics.write_energy(self.out)
            self.metrics.close()
        return PREEMPTED_EXIT_CODE if preempted else 0

    def _observe(self, step_seconds: float, data_wait: float) -> None:
        m = self.metrics
        samples_per_s = self.global_batch / step_seconds
        m.step.set(self.step)
        m.loss.set(self.last_loss)
        m.samples_per_second.set(samples_per_s)
        m.step_seconds.observe(step_seconds)
        m.data_wait_seconds.observe(data_wait)
        m.peak_memory.set(peak_memory_bytes(self.ctx.device))
        if self.workload.tokens_per_sample:
            tokens_per_s = samples_per_s * self.workload.tokens_per_sample
            m.tokens_per_second.set(tokens_per_s)
            mfu = self._mfu(tokens_per_s)
            if mfu is not None:
                m.mfu.set(mfu)

    def _mfu(self, tokens_per_s: float) -> float | None:
        if self.peak is None or self.workload.flops_per_token is None:
            return None
        return self.workload.flops_per_token * tokens_per_s / (self.peak * self.ctx.world_size)

    def _write_summary(
        self,
        timed_steps: int,
        timed_seconds: float,
        peak: int,
        preempted: bool,
        started: float,
        tokens: int | None,
    ) -> None:
        samples_per_s = self.global_batch * timed_steps / timed_seconds if timed_seconds else None
        tokens_per_s = samples_per_s * tokens if samples_per_s and tokens else None
        summary = {
            "workload": self.workload.spec,
            "world_size": self.ctx.world_size,
            "backend": self.ctx.backend,
            "device": str(self.ctx.device),
            "precision": self.precision,
            "tf32": self.tf32,
            "compile": self.cfg.compile,
            "steps": self.step,
            "steps_requested": self.cfg.steps,
            "global_batch_size": self.global_batch,
            "first_loss": self.first_loss,
            "last_loss": self.last_loss,
            "samples_per_s": samples_per_s,
            "tokens_per_s": tokens_per_s,
            "mfu": self._mfu(tokens_per_s) if tokens_per_s else None,
            "resumed_from_step": self.resumed_from,
            "preempted": preempted,
            "peak_memory_bytes": peak,
            "checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
            "wall_s": time.perf_counter() - started,
        }
        write_json_atomic(self.out / "summary.json", summary)


def configure_logging(rank: int) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s",
    )


def train(cfg: TrainConfig) -> int:
    """Entry point of `python -m trainyard.worker train`; returns the exit code."""
    validate_train(cfg)
    configure_logging(int(os.environ.get("RANK", "0")))
    ctx = init_distributed()
    try:
        code = Trainer(cfg, ctx).run()
        barrier(ctx)  # only on the orderly path: after a failure a peer may never arrive
        return code
    finally:
        shutdown_distributed(ctx)
