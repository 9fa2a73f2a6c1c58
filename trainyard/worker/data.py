"""Data for the built-in workloads and a resumable, rank-sharded batch stream.

The stream records (epoch, batches consumed) so a checkpoint can say exactly where the data
was, and a resumed run continues with the very next batch instead of replaying an epoch.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

CORPUS_FILE = "yard_chronicle.txt"


def load_corpus() -> bytes:
    """The byte corpus shipped in the package (see trainyard/worker/corpus/)."""
    return resources.files("trainyard.worker.corpus").joinpath(CORPUS_FILE).read_bytes()


class ByteWindows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Overlapping windows of a byte string: input bytes and the same bytes shifted by one."""

    def __init__(self, data: bytes, block_size: int, stride: int | None = None) -> None:
        self.data = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
        self.block_size = block_size
        self.stride = stride or max(1, block_size // 2)
        if len(self.data) <= block_size:
            raise ValueError(f"corpus of {len(self.data)} bytes is shorter than block_size")
        self.count = (len(self.data) - block_size - 1) // self.stride + 1

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = i * self.stride
        chunk = self.data[start : start + self.block_size + 1]
        return chunk[:-1], chunk[1:]


class ResumableDistributedSampler(DistributedSampler):
    """A DistributedSampler that can start part-way through an epoch (after `skip` samples)."""

    def __init__(self, dataset: Dataset[Any], skip: int = 0, **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.skip :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)


class BatchStream:
    """An endless stream of this rank's batches, epoch after epoch, with a resumable position."""

    def __init__(
        self,
        dataset: Dataset[Any],
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        epoch: int = 0,
        batches_done: int = 0,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.epoch = epoch
        self.batches_done = batches_done
        self._iter: Iterator[Any] | None = None
        per_rank = len(dataset) // world_size  # type: ignore[arg-type]
        if per_rank < batch_size:
            raise ValueError(
                f"--batch-size: {batch_size} is more than the {per_rank} samples per rank "
                f"({len(dataset)} samples over {world_size} ranks)"  # type: ignore[arg-type]
            )

    def position(self) -> dict[str, int]:
        """Where the next batch comes from; saved in checkpoints."""
        return {"epoch": self.epoch, "batches_done": self.batches_done}

    def _start_epoch(self) -> None:
        sampler = ResumableDistributedSampler(
            self.dataset,
            skip=self.batches_done * self.batch_size,
            num_replicas=self.world_size,
            rank=self.rank,
            shuffle=True,
            seed=self.seed,
            drop_last=True,
        )
        sampler.set_epoch(self.epoch)
        # A private generator: otherwise creating the iterator draws from the global RNG, and a
        # resumed run (new iterator mid-epoch) would shift every later dropout mask.
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=False,
            generator=generator,
        )
        self._iter = iter(loader)

    def next(self) -> Any:
        """The next batch, rolling over to a new (reshuffled) epoch when one runs out."""
        for _ in range(2):
            if self._iter is None:
                self._start_epoch()
            try:
                batch = next(self._iter)  # type: ignore[arg-type]
            except StopIteration:
                self._iter = None
                self.epoch += 1
                self.batches_done = 0
                continue
            self.batches_done += 1
            return batch
        raise RuntimeError("data stream produced no batch in a fresh epoch")
