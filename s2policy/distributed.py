"""Distributed helpers for torchrun (DDP), used by training and feature extraction: nccl on CUDA, gloo on CPU; every
helper is a no-op in a single process."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .device import select_device

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
    if world > 1 and not _active():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
        log.info("rank %d/%d on %s (%s)", dist.get_rank(), world, dev, backend)
    return DistInfo(*rank_and_world(), dev)


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, number of processes); (0, 1) outside torchrun."""
    return (dist.get_rank(), dist.get_world_size()) if _active() else (0, 1)


def barrier() -> None:
    if _active():
        dist.barrier()


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over processes (identity in a single process)."""
    if _active():
        x = x.clone()
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


def cleanup_distributed() -> None:
    if _active():
        dist.destroy_process_group()
