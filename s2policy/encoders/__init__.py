"""The frozen encoder zoo: `build_encoder(name, weights=...)` -> FrozenEncoder (see base.py for the contract).

Families: r3m.py (R3M ResNets), vit.py (MVP, VC-1), efficientnet_lite.py (offline ImageNet default), tiny.py (test
encoders), none.py (a policy that sees no image). Weight files, formats and hashes: weights.py.
"""

from . import efficientnet_lite, none, r3m, tiny, vit  # noqa: F401 -- importing a family registers its encoders
from .base import FrozenEncoder
from .registry import build_encoder, list_encoders, register_encoder

__all__ = ["FrozenEncoder", "build_encoder", "list_encoders", "register_encoder"]
