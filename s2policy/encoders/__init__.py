"""The frozen encoder zoo: `build_encoder(name, weights=...)` -> FrozenEncoder (see base.py for the contract).

Families: r3m.py (R3M ResNets), vit.py (MVP, VC-1), dinov2.py, siglip.py (SigLIP 2), clip.py (OpenAI CLIP),
efficientnet_lite.py (offline ImageNet default), tiny.py (test encoders), none.py (a policy that sees no image).
Weight files, formats and hashes: weights.py; official key layouts of the modern ViTs: layouts.py; the Hugging Face
Hub: hub.py.
"""

from . import clip, dinov2, efficientnet_lite, none, r3m, siglip, tiny, vit  # noqa: F401 -- importing a family registers its encoders
from .base import FrozenEncoder
from .registry import build_encoder, list_encoders, register_encoder

__all__ = ["FrozenEncoder", "build_encoder", "list_encoders", "register_encoder"]
