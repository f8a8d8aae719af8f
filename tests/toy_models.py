"""Tiny deterministic backbones for S2 tests: a CNN returning maps and a ViT-like model returning tokens."""

import torch
from torch import nn


class ToyCNN(nn.Module):
    """(B, 3, s, s) -> (B, 6, s/4, s/4); BatchNorm in eval mode so batch composition cannot matter."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 6, 3, 2, 1))
        self.eval()

    def forward(self, x):
        return self.net(x)


class ToyViT(nn.Module):
    """(B, 3, s, s) -> (B, P + (s/4)^2, 5) tokens; P learned prefix tokens mixed with the patch mean so they vary."""

    def __init__(self, num_prefix: int = 1) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.patch = nn.Conv2d(3, 5, 4, 4)
        self.prefix = nn.Parameter(torch.randn(1, num_prefix, 5))
        self.mix = nn.Linear(5, 5)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        p = self.prefix.expand(x.shape[0], -1, -1) + t.mean(1, keepdim=True)
        return self.mix(torch.cat([p, t], dim=1))


class PatchCNN(nn.Module):
    """A strictly patch-local CNN (4x4 stride-4 conv, then 1x1): tiling the input cannot change its output."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.net = nn.Sequential(nn.Conv2d(3, 6, 4, 4), nn.ReLU(), nn.Conv2d(6, 6, 1))

    def forward(self, x):
        return self.net(x)
