"""The spatial head: where things are in the merged S2 feature map, not only what a global average says.

Pooled heads see one vector per S2 scale, so a few-pixel detail that the 448 view resolves is averaged away with
everything else. This head keeps the map: per camera a 1x1 convolution makes K keypoint maps, a softmax over all
positions turns each into a distribution, and its expected (x, y) is a keypoint (robomimic's VisualCore ends the
same way; Levine et al. 2016). The keypoints of every camera and the proprio go through an MLP that predicts the
next `horizon` actions.

Inputs follow the head contract of `heads.py`, with each step's maps flattened so the windows, the policy's history
and the exported graphs stay the same for every head:
    features (B, T, n_cameras * C * h * w), proprio (B, T, P), prev_actions (B, T, A) -> actions (B, T, horizon, A)
where (C, h, w) is the merged S2 map of one camera (`features.maps.camera_feature_map`). The head sees one step
(history 1); a chunk of `horizon` > 1 actions is executed like the transformer's (receding horizon or temporal
ensembling). A history of maps would multiply the map cache reads per training sample by the history length; the
transformer on pooled features is the history head.

The grid of the map is S2's `resize_output_to_idx` (`s2.resize_output_to_idx`): 0 = the base scale's grid
(EfficientNet-Lite0 at 224 + 448: 7 x 7), -1 = the largest scale's grid (14 x 14, the 448 view's own resolution).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

#: Heads that consume merged S2 maps instead of pooled embeddings.
MAP_HEADS = ("spatial",)
# Policy-group keys read elsewhere (execution of chunks) or not options at all.
_NOT_HEAD_OPTIONS = ("name", "execution", "n_action_steps", "ensemble_decay")


def uses_maps(head: str) -> bool:
    """True when head `head` consumes merged S2 feature maps (the map cache) rather than pooled embeddings."""
    return head in MAP_HEADS


@dataclass(frozen=True)
class SpatialOptions:
    """configs/policy/spatial.yaml, checked: the head's own options (the map shape comes from the data)."""

    num_keypoints: int = 32
    hidden: tuple[int, ...] = (256, 256)
    horizon: int = 1
    temperature: float = 1.0
    learnable_temperature: bool = True

    @classmethod
    def from_config(cls, policy: Mapping[str, Any]) -> SpatialOptions:
        """The `policy` config group (name spatial) -> options; one ConfigError naming any bad or unknown key."""
        given = {k: v for k, v in policy.items() if k not in _NOT_HEAD_OPTIONS}
        unknown = sorted(set(given) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"policy=spatial has no option(s) {unknown} (history is always 1: the head sees one "
                              f"step); options: {sorted(cls.__dataclass_fields__)}")
        opts = cls(**{**given, **({"hidden": tuple(given["hidden"])} if "hidden" in given else {})})
        checks = {
            "num_keypoints": isinstance(opts.num_keypoints, int) and opts.num_keypoints >= 1,
            "hidden": all(isinstance(h, int) and h >= 1 for h in opts.hidden),
            "horizon": isinstance(opts.horizon, int) and opts.horizon >= 1,
            "temperature": isinstance(opts.temperature, (int, float)) and 0 < opts.temperature < math.inf,
            "learnable_temperature": isinstance(opts.learnable_temperature, bool),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            k = bad[0]
            raise ConfigError(f"policy.{k}={getattr(opts, k)!r}: expected " + {
                "num_keypoints": "a positive int", "hidden": "a list of positive ints", "horizon": "an int >= 1",
                "temperature": "a positive number", "learnable_temperature": "true or false"}[k])
        return opts

    def head_kwargs(self, map_shape: Sequence[int]) -> dict[str, Any]:
        """Keyword arguments of `SpatialHead` (JSON-able: they are stored in the policy checkpoint)."""
        return {**asdict(self), "hidden": list(self.hidden), "map_shape": [int(v) for v in map_shape]}


class SpatialSoftmax(nn.Module):
    """(N, C, h, w) map -> (N, K, 2) keypoints: expected (x, y) in [-1, 1] of K softmax maps over the positions.

    The map is first normalised per channel (BatchNorm, as the MLP head does with its embedding: frozen features'
    scales differ by encoder and by S2 scale), then projected to K maps by a 1x1 convolution. Positions are pixel
    centres, so a 1 x 1 grid sits at (0, 0).
    """

    def __init__(self, channels: int, grid: tuple[int, int], num_keypoints: int, temperature: float = 1.0,
                 learnable_temperature: bool = True):
        super().__init__()
        h, w = grid
        self.norm = nn.BatchNorm2d(channels)
        self.proj = nn.Conv2d(channels, num_keypoints, kernel_size=1)
        ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h * 2 - 1
        xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w * 2 - 1
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        self.register_buffer("positions", torch.stack([xx.flatten(), yy.flatten()], dim=-1))  # (h*w, 2)
        log_t = torch.tensor(math.log(temperature))
        if learnable_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.proj(self.norm(x)).flatten(2) / self.log_temperature.exp()  # (N, K, h*w)
        return logits.softmax(dim=-1) @ self.positions


class SpatialHead(nn.Module):
    """Spatial-softmax keypoints of every camera's merged S2 map + proprio -> MLP -> the next `horizon` actions.

    map_shape: (n_cameras, C, h, w) of one step's maps; `feature_dim` must be their product.
    """

    history = 1

    def __init__(self, feature_dim: int, proprio_dim: int, action_dim: int, map_shape: Sequence[int],
                 num_keypoints: int = 32, hidden: Sequence[int] = (256, 256), horizon: int = 1,
                 temperature: float = 1.0, learnable_temperature: bool = True):
        super().__init__()
        if len(map_shape) != 4 or math.prod(map_shape) != feature_dim or feature_dim == 0:
            raise ConfigError(f"the spatial head needs camera maps: map_shape {list(map_shape)} (cameras, C, h, w) "
                              f"does not give feature_dim {feature_dim}"
                              + (" (policy=spatial needs at least one camera)" if feature_dim == 0 else ""))
        self.map_shape = tuple(int(v) for v in map_shape)
        self.feature_dim, self.action_dim, self.horizon = feature_dim, action_dim, int(horizon)
        cams, channels, h, w = self.map_shape
        self.keypoints = nn.ModuleList(SpatialSoftmax(channels, (h, w), num_keypoints, temperature,
                                                      learnable_temperature) for _ in range(cams))
        dims = [cams * num_keypoints * 2 + proprio_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(dims[-1], self.horizon * action_dim))

    def keypoints_of(self, features: torch.Tensor) -> torch.Tensor:
        """(N, feature_dim) flattened maps -> (N, n_cameras, K, 2) keypoints (x, y) in [-1, 1]."""
        if features.shape[-1] != self.feature_dim:
            cams, c, h, w = self.map_shape
            raise ValueError(f"the spatial head was trained on {cams} camera map(s) of {c} x {h} x {w} "
                             f"({self.feature_dim} values per step) but got {features.shape[-1]}: frames must give "
                             "the training grid (same frame size and s2.resize_output_to_idx as in training)")
        maps = features.reshape(features.shape[0], *self.map_shape)
        return torch.stack([net(maps[:, i]) for i, net in enumerate(self.keypoints)], dim=1)

    def forward(self, features: torch.Tensor, proprio: torch.Tensor, prev_actions: torch.Tensor) -> torch.Tensor:
        b, t = features.shape[:2]
        kp = self.keypoints_of(features.reshape(b * t, -1)).flatten(1)
        out = self.mlp(torch.cat([kp, proprio.reshape(b * t, -1)], dim=-1))
        return out.reshape(b, t, self.horizon, self.action_dim)
