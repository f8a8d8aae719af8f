"""Distributed setup for torchrun (DDP): nccl on CUDA, gloo on CPU; a no-op in a single process."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..device import select_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 and pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = select_device(device)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
        log.info("rank %d/%d on %s (%s)", dist.get_rank(), world, dev, backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    return DistInfo(rank, dist.get_world_size() if dist.is_initialized() else 1, dev)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over processes (identity in a single process)."""
    if dist.is_initialized():
        x = x.clone()
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
