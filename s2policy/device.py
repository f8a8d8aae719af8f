"""Device and precision selection: the one place that decides where tensors live and which dtype autocast uses."""

from __future__ import annotations

import contextlib
import os
from typing import ContextManager

import torch

from .errors import ConfigError


def select_device(device: str | torch.device | None = "auto") -> torch.device:
    """Resolve "auto" (CUDA if present -> MPS -> CPU), or validate an explicit device string such as "cuda:1".

    Under torchrun, "auto" picks the GPU of this process's LOCAL_RANK.
    """
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"unknown device {device!r}: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available on this machine (use device=auto)")
    return dev


_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str = "auto") -> ContextManager:
    """Mixed-precision context for `device`. "auto" = bf16 on CUDA, fp32 elsewhere (CPU autocast is slower here)."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision not in _PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}: expected one of auto, {', '.join(_PRECISIONS)}")
    dtype = _PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
