"""DINOv2 (Oquab et al. 2023) and DINOv2 with registers (Darcet et al. 2024), ViT-S/B/L/g with patch 14.

Embedding = CLS token after the final norm (what the torch-hub model returns). Tokens: CLS, then the 4 registers
(register variants), then the 16 x 16 patch grid at 224, all after the final norm: 1 + 256 or 5 + 256 tokens.
LayerScale (`ls1`, `ls2`) on every residual branch; ViT-g uses a fused SwiGLU MLP.

The weights were trained up to 518 px (a 37 x 37 patch grid); the position table is resampled once, at load, to the
native grid exactly as the official code does it at run time for that input size: bicubic with a 0.1 offset on the
scale factor and no antialiasing for the original models, bicubic to the exact size with antialiasing for the
register models (the two differ; transformers' Dinov2Model uses neither for the first).
"""

from __future__ import annotations

import logging
import math
from typing import ClassVar, Mapping

import torch
import torch.nn.functional as F

from ..errors import CheckpointError
from .layouts import DINOV2_HUB, DINOV2_TRANSFORMERS, TIMM, KeyMap
from .registry import register_encoder
from .timm_vit import TimmViTEncoder, make_timm_vit

log = logging.getLogger(__name__)


class DINOv2Encoder(TimmViTEncoder):
    """DINOv2 on timm's `vit_*_patch14[_reg4]_dinov2`: forward -> (B, P + (native/14)^2, C), P = 1 or 5."""

    layouts: ClassVar[Mapping[str, KeyMap]] = {
        "torch_hub": DINOV2_HUB,
        "transformers": DINOV2_TRANSFORMERS,
        "timm": TIMM,
    }

    @property
    def has_registers(self) -> bool:
        return self.num_prefix_tokens > 1

    def finish_state(self, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
        pos = state.get("pos_embed")
        if pos is None or pos.ndim != 3 or "cls_token" not in state:
            return state  # the strict check names what is missing
        state = dict(state)
        if self.has_registers and not _is_square(pos.shape[1]):
            # Official layout: the table covers CLS + patches (registers get none). timm's register model adds
            # positions to patches only, so the CLS position is folded into the CLS token (an exact rewrite).
            state["cls_token"] = state["cls_token"] + pos[:, :1]
            pos = pos[:, 1:]
        prefix = 0 if self.has_registers else 1
        state["pos_embed"] = self._resample(pos, prefix, source)
        return state

    def _resample(self, pos: torch.Tensor, prefix: int, source: str) -> torch.Tensor:
        tokens = pos.shape[1] - prefix
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise CheckpointError(f"{source}: pos_embed has {pos.shape[1]} positions, not {prefix} + a square grid")
        grid = self.backbone.patch_embed.grid_size[0]
        if side == grid:
            return pos
        log.info("%s: resampling DINOv2 positions from %dx%d to %dx%d patches", source, side, side, grid, grid)
        table = pos[:, prefix:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
        if self.has_registers:
            table = F.interpolate(table, size=(grid, grid), mode="bicubic", antialias=True)
        else:
            scale = (grid + 0.1) / side  # the official "interpolate_offset" kludge, kept for identical outputs
            table = F.interpolate(table, scale_factor=(scale, scale), mode="bicubic", antialias=False)
        table = table.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(pos.dtype)
        return torch.cat([pos[:, :prefix], table], dim=1)


def _is_square(n: int) -> bool:
    return math.isqrt(n) ** 2 == n


def make_dinov2(name: str, size: str, registers: bool, **arch) -> DINOv2Encoder:
    """`dinov2_vit{s,b,l,g}14[_reg]` on timm's matching DINOv2 architecture (`arch`: see `make_timm_vit`)."""
    timm_name = f"vit_{size}_patch14_{'reg4_' if registers else ''}dinov2"
    return make_timm_vit(DINOv2Encoder, name, timm_name, **arch)


@register_encoder
def dinov2_vits14() -> DINOv2Encoder:
    """DINOv2 ViT-S/14: tokens (B, 1 + 256, 384) at 224."""
    return make_dinov2("dinov2_vits14", "small", registers=False)


@register_encoder
def dinov2_vitb14() -> DINOv2Encoder:
    """DINOv2 ViT-B/14: tokens (B, 1 + 256, 768) at 224."""
    return make_dinov2("dinov2_vitb14", "base", registers=False)


@register_encoder
def dinov2_vitl14() -> DINOv2Encoder:
    """DINOv2 ViT-L/14: tokens (B, 1 + 256, 1024) at 224."""
    return make_dinov2("dinov2_vitl14", "large", registers=False)


@register_encoder
def dinov2_vitg14() -> DINOv2Encoder:
    """DINOv2 ViT-g/14 (SwiGLU): tokens (B, 1 + 256, 1536) at 224."""
    return make_dinov2("dinov2_vitg14", "giant", registers=False)


@register_encoder
def dinov2_vits14_reg() -> DINOv2Encoder:
    """DINOv2 ViT-S/14 with 4 registers: tokens (B, 5 + 256, 384) at 224."""
    return make_dinov2("dinov2_vits14_reg", "small", registers=True)


@register_encoder
def dinov2_vitb14_reg() -> DINOv2Encoder:
    """DINOv2 ViT-B/14 with 4 registers: tokens (B, 5 + 256, 768) at 224."""
    return make_dinov2("dinov2_vitb14_reg", "base", registers=True)


@register_encoder
def dinov2_vitl14_reg() -> DINOv2Encoder:
    """DINOv2 ViT-L/14 with 4 registers: tokens (B, 5 + 256, 1024) at 224."""
    return make_dinov2("dinov2_vitl14_reg", "large", registers=True)


@register_encoder
def dinov2_vitg14_reg() -> DINOv2Encoder:
    """DINOv2 ViT-g/14 (SwiGLU) with 4 registers: tokens (B, 5 + 256, 1536) at 224."""
    return make_dinov2("dinov2_vitg14_reg", "giant", registers=True)
