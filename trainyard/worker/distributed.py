"""Process-group setup from torchrun's environment, and the few collectives the loop needs.

Under torchrun (RANK/WORLD_SIZE/LOCAL_RANK set) the worker joins a process group: NCCL when
CUDA is available, gloo otherwise. Run plainly (`python -m trainyard.worker ...`) it is a
single process with no process group, so the same loop serves laptops and pods.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str | None  # None: single process, no process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.backend is not None


def init_distributed(timeout_s: float = 600.0) -> DistContext:
    """Join the process group torchrun describes, or run as a single process."""
    use_cuda = torch.cuda.is_available()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        device = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(device)
        return DistContext(rank=0, local_rank=0, world_size=1, device=device, backend=None)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world_size = int(os.environ["WORLD_SIZE"])
    if use_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s), device_id=device)
    else:
        device = torch.device("cpu")
        backend = "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return DistContext(rank, local_rank, world_size, device, backend)


def shutdown_distributed(ctx: DistContext) -> None:
    """Leave the process group so torchrun sees a clean exit on every rank."""
    if ctx.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank; used before a clean exit so no rank tears down its connections
    while a peer is still finishing (gloo reports that as "Connection closed by peer")."""
    if ctx.is_distributed:
        dist.barrier()


def all_reduce_sum(ctx: DistContext, values: list[float]) -> list[float]:
    """Sum a few floats across ranks in one collective (identity when single-process)."""
    if not ctx.is_distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_reduce_max(ctx: DistContext, value: float) -> float:
    if not ctx.is_distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def all_gather_objects(ctx: DistContext, obj: object) -> list[object]:
    """Every rank's `obj`, indexed by rank (used to checkpoint each rank's RNG state)."""
    if not ctx.is_distributed:
        return [obj]
    out: list[object] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(ctx: DistContext, obj: object) -> object:
    """Rank 0's `obj` on every rank (used so all ranks resume from the checkpoint rank 0 chose)."""
    if not ctx.is_distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
