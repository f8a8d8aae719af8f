"""SigLIP 2 (Tschannen et al. 2025) image towers, fixed-resolution ViT-B/16 and ViT-L/16.

No CLS token: tokens are the patch grid after the final norm (B, N, C), N = (native/16)^2. The family's pooled
embedding is its attention-pooling ("MAP") head: a learned probe attends over the tokens, then an MLP -- that is
`embed`, and S2's default per-crop pooling for these encoders ("map", averaged over crops).
"""

from __future__ import annotations

from typing import ClassVar, Mapping

import torch

from .layouts import SIGLIP_OPENCLIP, SIGLIP_TRANSFORMERS, TIMM, KeyMap
from .registry import register_encoder
from .timm_vit import TimmViTEncoder, make_timm_vit


class SigLIPEncoder(TimmViTEncoder):
    """SigLIP on timm's `vit_*_patch16_siglip_*`: forward -> (B, (native/16)^2, C); embed -> MAP head (B, C)."""

    layouts: ClassVar[Mapping[str, KeyMap]] = {
        "transformers": SIGLIP_TRANSFORMERS,
        "openclip": SIGLIP_OPENCLIP,
        "timm": TIMM,
    }
    default_pool = "map"

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """(B, N, C) tokens -> (B, C) through the attention-pooling head."""
        return self.backbone.pool(features)


def make_siglip(name: str, timm_name: str, **arch) -> SigLIPEncoder:
    # SigLIP's MLPs use the tanh approximation of GELU (flax's default; transformers' gelu_pytorch_tanh); timm's
    # siglip architectures default to the exact GELU, which differs by ~1e-3 per activation.
    return make_timm_vit(SigLIPEncoder, name, timm_name, **{"act_layer": "gelu_tanh", **arch})


@register_encoder
def siglip2_vitb16_224() -> SigLIPEncoder:
    """SigLIP 2 ViT-B/16 at 224: tokens (B, 196, 768)."""
    return make_siglip("siglip2_vitb16_224", "vit_base_patch16_siglip_224")


@register_encoder
def siglip2_vitb16_256() -> SigLIPEncoder:
    """SigLIP 2 ViT-B/16 at 256: tokens (B, 256, 768)."""
    return make_siglip("siglip2_vitb16_256", "vit_base_patch16_siglip_256")


@register_encoder
def siglip2_vitl16_256() -> SigLIPEncoder:
    """SigLIP 2 ViT-L/16 at 256: tokens (B, 256, 1024)."""
    return make_siglip("siglip2_vitl16_256", "vit_large_patch16_siglip_256")
