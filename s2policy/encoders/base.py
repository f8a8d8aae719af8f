"""`FrozenEncoder`: the one shape every encoder in the zoo has, whatever its family.

An encoder owns its input normalisation (so callers always pass float RGB in [0, 1]), is frozen, and stays in eval
mode even when a parent module calls `.train()`: the backbones hold BatchNorm statistics from pretraining that a
training loop must never update.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

OutputShape = Literal["bnc", "bchw"]


class FrozenEncoder(nn.Module):
    """A frozen pretrained backbone with its normalisation and its canonical pooling.

    Attributes (the DESIGN contract):
        name: registry name, e.g. "r3m_resnet18".
        native_size: square input size in pixels the weights were trained at (what S2 tiles into).
        embed_dim: channels per scale, C.
        output_shape: "bnc" (tokens, ViTs) or "bchw" (feature maps, CNNs) -- the layout of `forward`.
        num_prefix_tokens: P, tokens before the patch tokens (1 = CLS) in a "bnc" output; 0 for CNNs.
        channels_last: hint for callers: run this encoder in channels_last memory format (faster for CNNs on CPU).
        weights_id: sha256 of the loaded weight file, or "random"; identifies the features in cache keys.

    `backbone` is the module whose `state_dict()` a weight file is checked against, key for key.
    Subclasses implement `forward_backbone` on normalised input.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        name: str,
        native_size: int,
        embed_dim: int,
        output_shape: OutputShape,
        num_prefix_tokens: int,
        mean: Sequence[float],
        std: Sequence[float],
        channels_last: bool,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.name = name
        self.native_size = int(native_size)
        self.embed_dim = int(embed_dim)
        self.output_shape: OutputShape = output_shape
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.channels_last = bool(channels_last)
        self.weights_id = "random"
        self._normalisation = (tuple(map(float, mean)), tuple(map(float, std)))
        # Not persistent: they come from the weight spec, not from the weight file, so they never enter key matching.
        self.register_buffer("mean", torch.empty(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.empty(1, 3, 1, 1), persistent=False)
        self.reset_normalisation()
        self.freeze()

    def reset_normalisation(self) -> None:
        """(Re)fill the mean/std buffers, e.g. after a meta-device model was materialised with `to_empty`."""
        mean, std = self._normalisation
        with torch.no_grad():
            self.mean.copy_(torch.tensor(mean).view(1, 3, 1, 1))
            self.std.copy_(torch.tensor(std).view(1, 3, 1, 1))

    def freeze(self) -> "FrozenEncoder":
        """No gradients, eval mode. Called at construction and again after weights are loaded."""
        self.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "FrozenEncoder":
        """Always eval: a frozen encoder's BatchNorm / dropout must behave the same inside a training loop."""
        return super().train(False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> the backbone's input distribution."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name} expects float RGB images (B, 3, H, W) in [0, 1], got shape {tuple(x.shape)}")
        return (x - self.mean) / self.std

    def forward_backbone(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised (B, 3, H, W) -> tokens (B, P + N, C) or feature map (B, C, h, w)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, native, native) in [0, 1] -> tokens (B, P + N, C) after the final norm ("bnc") or the last
        feature map (B, C, h, w) ("bchw"). This is the function S2 wraps."""
        return self.forward_backbone(self.normalize(x))

    @property
    def default_pool(self) -> str:
        """How `pool` reduces one output: "cls" (first prefix token), "mean" (spatial average) or "map" (the family's
        attention-pooling head). S2Encoder pools every crop the same way by default."""
        return "cls" if self.output_shape == "bnc" and self.num_prefix_tokens > 0 else "mean"

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """The canonical embedding of a `forward` output: CLS token for "bnc" with a prefix (mean of patch tokens
        without one); global average pool for "bchw". Returns (B, C)."""
        if self.output_shape == "bchw":
            return features.mean(dim=(2, 3))
        if self.num_prefix_tokens > 0:
            return features[:, 0]
        return features.mean(dim=1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, native, native) in [0, 1] -> (B, embed_dim)."""
        return self.pool(self.forward(x))

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, native_size={self.native_size}, embed_dim={self.embed_dim}, "
            f"output_shape={self.output_shape!r}, num_prefix_tokens={self.num_prefix_tokens}, "
            f"weights_id={self.weights_id[:12]!r}"
        )

    def adapt_state_dict(self, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
        """Family-specific translation of an unwrapped weight file's tensors into `backbone` keys (renaming,
        position-embedding resampling). Default: unchanged. `source` names the file for error messages."""
        return state
