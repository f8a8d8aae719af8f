"""Optimisation pieces that are pure functions of the step (so resuming reproduces them): cosine schedule with
warm-up, EMA of the head's weights, per-step RNG seeding."""

from __future__ import annotations

import math

import torch
from torch import nn


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Linear warm-up to `base_lr` over `warmup_steps`, then cosine decay to `min_ratio * base_lr` at the end."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class EMA:
    """Exponential moving average of a module's parameters (buffers such as BatchNorm statistics are copied).

    The effective decay ramps up as min(decay, (1 + n) / (10 + n)) so early averages are not dominated by the
    random initialisation.
    """

    def __init__(self, module: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self._params = {k for k, _ in module.named_parameters()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in module.state_dict().items():
            if k in self._params:
                self.shadow[k].lerp_(v.detach(), 1 - d)
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, module: nn.Module) -> None:
        module.load_state_dict(self.shadow)


def seed_step(seed: int, step: int, rank: int) -> None:
    """Seed torch's RNG (dropout) from (seed, step, rank): the randomness of a step does not depend on history."""
    s = (seed * 1_000_003 + step) * 1009 + rank
    # Not torch.manual_seed: it queues lazy seeding of every uninitialised accelerator with a captured stack
    # trace on every call -- as costly as a whole MLP step on cached features.
    torch.default_generator.manual_seed(s)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.manual_seed(s)
