"""R3M (Nair et al. 2022): torchvision ResNet-18/34/50 trained on Ego4D; embedding = average-pooled last stage."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from .base import FrozenEncoder
from .registry import register_encoder
from .weights import weight_spec


class ResNetEncoder(FrozenEncoder):
    """torchvision ResNet without its classifier: forward -> last stage map (B, C, h, w), h = w = native / 32."""

    def forward_backbone(self, x: torch.Tensor) -> torch.Tensor:
        net = self.backbone
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def _r3m(name: str, depth: int, embed_dim: int) -> ResNetEncoder:
    spec = weight_spec(name)
    # weights=None: architecture only; torchvision must never download its own ImageNet weights here.
    backbone = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    backbone.fc = nn.Identity()  # R3M replaces fc by Identity, so the file has no fc keys
    return ResNetEncoder(
        backbone, name=name, native_size=spec.input_size, embed_dim=embed_dim, output_shape="bchw",
        num_prefix_tokens=0, mean=spec.mean, std=spec.std, channels_last=True,
    )  # fmt: skip


@register_encoder
def r3m_resnet18() -> ResNetEncoder:
    """R3M ResNet-18: (B, 512, 7, 7) at 224; embed 512."""
    return _r3m("r3m_resnet18", 18, 512)


@register_encoder
def r3m_resnet34() -> ResNetEncoder:
    """R3M ResNet-34: (B, 512, 7, 7) at 224; embed 512."""
    return _r3m("r3m_resnet34", 34, 512)


@register_encoder
def r3m_resnet50() -> ResNetEncoder:
    """R3M ResNet-50: (B, 2048, 7, 7) at 224; embed 2048."""
    return _r3m("r3m_resnet50", 50, 2048)
