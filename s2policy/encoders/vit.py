"""MAE-pretrained ViTs for robotics: MVP (Xiao/Radosavovic et al. 2022) and VC-1 (Majumdar et al. 2023).

Both ship timm-style ViT state dicts; the embedding is the CLS token after the final LayerNorm. MVP's ViT-S has
12 heads of 32 channels, where timm's vit_small has 6 of 64: same keys and shapes, different outputs, so the head
count must come from here, never from a timm model name.
"""

from __future__ import annotations

import logging
from functools import partial

import torch
from timm.models.vision_transformer import VisionTransformer, resample_abs_pos_embed
from torch import nn

from ..errors import CheckpointError
from .base import FrozenEncoder
from .registry import register_encoder
from .weights import weight_spec

log = logging.getLogger(__name__)

# (embed_dim, depth, num_heads) of the published checkpoints.
VIT_SMALL = (384, 12, 12)
VIT_BASE = (768, 12, 12)
VIT_LARGE = (1024, 24, 16)


class ViTEncoder(FrozenEncoder):
    """timm VisionTransformer: forward -> all tokens after the final norm (B, 1 + N, C), N = (native / patch)^2."""

    def forward_backbone(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def adapt_state_dict(self, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
        """Resample `pos_embed` (bicubic, prefix tokens kept) when the file was trained on another patch grid."""
        pos = state.get("pos_embed")
        ours = self.backbone.pos_embed
        if pos is None or pos.ndim != 3 or pos.shape == ours.shape or pos.shape[-1] != ours.shape[-1]:
            return state  # absent or incompatible: the strict check reports it
        grid = self.backbone.patch_embed.grid_size
        old_tokens = pos.shape[1] - self.num_prefix_tokens
        old_side = int(round(old_tokens**0.5))
        if old_side * old_side != old_tokens:
            raise CheckpointError(f"{source}: pos_embed has {pos.shape[1]} tokens, not 1 + a square grid")
        log.info("%s: resampling pos_embed from %dx%d to %dx%d patches", source, old_side, old_side, *grid)
        # Bicubic without antialiasing: what VC-1's own loader (timm's resize_pos_embed) does.
        resampled = resample_abs_pos_embed(
            pos.float(), new_size=list(grid), old_size=[old_side, old_side],
            num_prefix_tokens=self.num_prefix_tokens, antialias=False,
        )  # fmt: skip
        return {**state, "pos_embed": resampled}


def make_vit(
    name: str, dims: tuple[int, int, int], *, patch_size: int = 16, native_size: int | None = None
) -> ViTEncoder:
    """A ViTEncoder with the MAE-robotics recipe: qkv_bias, mlp_ratio 4, LayerNorm eps 1e-6, CLS token, no head."""
    spec = weight_spec(name)
    size = native_size or spec.input_size
    embed_dim, depth, num_heads = dims
    backbone = VisionTransformer(
        img_size=size, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=4.0,
        qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), num_classes=0, global_pool="token",
    )  # fmt: skip
    return ViTEncoder(
        backbone, name=name, native_size=size, embed_dim=embed_dim, output_shape="bnc", num_prefix_tokens=1,
        mean=spec.mean, std=spec.std, channels_last=False,
    )  # fmt: skip


@register_encoder
def mvp_vits(**kwargs) -> ViTEncoder:
    """MVP ViT-S/16 (vits-mae-hoi), 12 heads: tokens (B, 197, 384) at 224."""
    return make_vit("mvp_vits", VIT_SMALL, **kwargs)


@register_encoder
def mvp_vitb(**kwargs) -> ViTEncoder:
    """MVP ViT-B/16 (vitb-mae-egosoup): tokens (B, 197, 768) at 224."""
    return make_vit("mvp_vitb", VIT_BASE, **kwargs)


@register_encoder
def mvp_vitl(**kwargs) -> ViTEncoder:
    """MVP ViT-L/16 (vitl-256-mae-egosoup): tokens (B, 257, 1024) at 256."""
    return make_vit("mvp_vitl", VIT_LARGE, **kwargs)


@register_encoder
def vc1_vitb(**kwargs) -> ViTEncoder:
    """VC-1 ViT-B/16: tokens (B, 197, 768) at 224."""
    return make_vit("vc1_vitb", VIT_BASE, **kwargs)


@register_encoder
def vc1_vitl(**kwargs) -> ViTEncoder:
    """VC-1 ViT-L/16: tokens (B, 197, 1024) at 224."""
    return make_vit("vc1_vitl", VIT_LARGE, **kwargs)
