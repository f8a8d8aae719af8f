"""OpenAI CLIP (Radford et al. 2021) image towers: ViT-B/16 and ViT-L/14 at 224, QuickGELU, pre-norm (`ln_pre`).

Embedding = CLS token after the final norm (`ln_post`), 768 / 1024-d: the input of CLIP's projection into the joint
text-image space. The projection itself (`visual.proj`, `visual_projection`) is ignored on purpose: a trained head on
top subsumes a fixed linear map. Tokens: CLS + patch grid, all after `ln_post` (as OpenCLIP applies it; transformers'
`last_hidden_state` is before it).
"""

from __future__ import annotations

from typing import ClassVar, Mapping

from .layouts import CLIP_OPENCLIP, CLIP_TRANSFORMERS, TIMM_CLIP, KeyMap
from .registry import register_encoder
from .timm_vit import TimmViTEncoder, make_timm_vit


class CLIPEncoder(TimmViTEncoder):
    """CLIP on timm's `vit_*_clip_quickgelu_224`: forward -> (B, 1 + (224/patch)^2, C)."""

    layouts: ClassVar[Mapping[str, KeyMap]] = {
        "transformers": CLIP_TRANSFORMERS,
        "openclip": CLIP_OPENCLIP,
        "timm": TIMM_CLIP,
    }


def make_clip(name: str, timm_name: str, **arch) -> CLIPEncoder:
    return make_timm_vit(CLIPEncoder, name, timm_name, **arch)


@register_encoder
def clip_vitb16() -> CLIPEncoder:
    """OpenAI CLIP ViT-B/16: tokens (B, 1 + 196, 768) at 224."""
    return make_clip("clip_vitb16", "vit_base_patch16_clip_quickgelu_224")


@register_encoder
def clip_vitl14() -> CLIPEncoder:
    """OpenAI CLIP ViT-L/14: tokens (B, 1 + 256, 1024) at 224."""
    return make_clip("clip_vitl14", "vit_large_patch14_clip_quickgelu_224")
