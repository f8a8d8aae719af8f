"""Per-dimension mean/std normalisation of proprio and actions, fitted on the training split only."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Normalizer(nn.Module):
    """x -> (x - mean) / std and back. Statistics are buffers, so they travel with the policy's weights.

    Dimensions that never vary in the training split (std below `eps`) get std 1: they pass through centred instead
    of being blown up by a near-zero divisor.
    """

    def __init__(self, dim: int, eps: float = 1e-4):
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @classmethod
    def fit(cls, data: np.ndarray | torch.Tensor, eps: float = 1e-4) -> "Normalizer":
        """Statistics of `data` (N, dim), computed in float64 so long datasets do not lose precision."""
        x = torch.as_tensor(np.asarray(data), dtype=torch.float64).reshape(-1, np.shape(data)[-1])
        norm = cls(x.shape[1], eps)
        std = x.std(dim=0, unbiased=False)
        norm.mean.copy_(x.mean(dim=0).float())
        norm.std.copy_(torch.where(std < eps, torch.ones_like(std), std).float())
        return norm

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean
