"""Modern ViTs built by timm from its registered architectures: the shared encoder of dinov2.py, siglip.py, clip.py.

The architecture always comes from a timm model name (`timm.create_model(..., pretrained=False)`: timm never
downloads here), at the encoder's native size; weights come from weights.py, whose file is translated from whichever
official layout it is in (layouts.py) and then checked strictly against the timm model.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import timm
import torch

from .layouts import KeyMap, detect_layout
from .vit import ViTEncoder
from .weights import weight_spec


class TimmViTEncoder(ViTEncoder):
    """A timm VisionTransformer whose weight file may be in any of its family's official layouts.

    forward -> every token after the final norm (B, P + N, C): P prefix tokens (CLS, registers), N = (native/patch)^2.
    """

    layouts: ClassVar[Mapping[str, KeyMap]] = {}

    def adapt_state_dict(self, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
        """Detect the file's layout, rename its tensors into timm keys, then let the family finish (`finish_state`)."""
        layout = detect_layout(list(state), self.layouts, source)
        return self.finish_state(layout.apply(state, source), source)

    def finish_state(self, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
        """Family-specific last step on timm-named tensors (e.g. position-embedding resampling). Default: none."""
        return state


def make_timm_vit(
    cls: type[TimmViTEncoder], name: str, timm_name: str, native_size: int | None = None, **arch: Any
) -> TimmViTEncoder:
    """Build `cls` around `timm.create_model(timm_name)` at the encoder's native size, without a classifier.

    `arch` overrides timm's architecture arguments (depth, embed_dim, num_heads...): tests use it to build small
    models whose files have exactly the official key names.
    """
    spec = weight_spec(name)
    size = native_size or spec.input_size
    backbone = timm.create_model(timm_name, pretrained=False, img_size=size, num_classes=0, **arch)
    return cls(
        backbone, name=name, native_size=size, embed_dim=backbone.embed_dim, output_shape="bnc",
        num_prefix_tokens=backbone.num_prefix_tokens, mean=spec.mean, std=spec.std, channels_last=False,
    )  # fmt: skip
