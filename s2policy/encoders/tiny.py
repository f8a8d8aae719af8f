"""Two tiny random-weight encoders with the full FrozenEncoder contract, so every test suite runs in milliseconds."""

from __future__ import annotations

import torch
from torch import nn

from .base import FrozenEncoder
from .registry import register_encoder
from .vit import ViTEncoder, make_vit
from .weights import weight_spec


class TinyCNNEncoder(FrozenEncoder):
    """Three 3x3 convs with BatchNorm: (B, 3, 32, 32) -> (B, 16, 8, 8)."""

    def forward_backbone(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


@register_encoder
def tiny_cnn() -> TinyCNNEncoder:
    """Test encoder: native 32, 'bchw' (B, 16, 8, 8), embed 16 (average pool)."""
    spec = weight_spec("tiny_cnn")
    backbone = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
    )  # fmt: skip
    return TinyCNNEncoder(
        backbone, name="tiny_cnn", native_size=spec.input_size, embed_dim=16, output_shape="bchw",
        num_prefix_tokens=0, mean=spec.mean, std=spec.std, channels_last=True,
    )  # fmt: skip


@register_encoder
def tiny_vit() -> ViTEncoder:
    """Test encoder: native 32, patch 8, 'bnc' (B, 1 + 16, 16), 1 CLS token, dim 16, 2 blocks, 2 heads."""
    return make_vit("tiny_vit", (16, 2, 2), patch_size=8)
