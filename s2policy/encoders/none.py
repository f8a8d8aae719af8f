"""`none`: the encoder of a policy that sees no image (the study's proprio-only and privileged-state controls).

It has no weights, zero-width features and costs 0 GMACs, so every stage handles an image-free policy through its
normal path: a run with `encoder=none` lists no cameras, caches nothing, and acts on proprio alone.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import FrozenEncoder
from .registry import register_encoder
from .weights import weight_spec


class NoImageEncoder(FrozenEncoder):
    """(B, 3, 1, 1) -> an empty feature map (B, 0, 1, 1): embed_dim 0, no parameters."""

    def __init__(self) -> None:
        spec = weight_spec("none")
        super().__init__(nn.Identity(), name="none", native_size=spec.input_size, embed_dim=0, output_shape="bchw",
                         num_prefix_tokens=0, mean=spec.mean, std=spec.std, channels_last=False)
        self.weights_id = "none"  # nothing to load: no file and no random draw determine its (empty) output

    def forward_backbone(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], 0, *x.shape[2:])


@register_encoder
def none() -> NoImageEncoder:
    """No image: native 1, embed 0, 0 parameters, 0 GMACs."""
    return NoImageEncoder()
