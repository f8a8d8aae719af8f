"""Counted (not estimated) compute: multiply-accumulates of one forward pass, via torch's FLOP counter.

We report GMACs because that is what timm, the S2 paper ("GFLOPs" 17.5 for ViT-B/16) and R3M call model cost;
`gflops = 2 * gmacs`. Counting runs on the meta device when the module allows it, so even ViT-L costs no compute.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """FLOPs (2 per multiply-accumulate) of `fn(*args, **kwargs)` for matmuls and convolutions, counted by torch."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def count_gmacs(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    """Giga multiply-accumulates of one call, e.g. `count_gmacs(encoder, torch.zeros(1, 3, 224, 224))`."""
    return count_flops(fn, *args, **kwargs) / 2e9


def count_params(module: torch.nn.Module) -> int:
    """Number of parameters (frozen ones included: they are what a deployment has to hold)."""
    return sum(p.numel() for p in module.parameters())
