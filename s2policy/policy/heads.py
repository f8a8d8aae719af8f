"""Behaviour-cloning heads: the trainable model that maps (features, proprio, past actions) to action chunks.

Every head takes a window of the last `history` steps and predicts the next `horizon` actions, all normalised:
    features (B, T, F), proprio (B, T, P), prev_actions (B, T, A) -> actions (B, T, horizon, A)
Position t predicts actions t .. t+horizon-1 from steps <= t (causal), so one window trains every position; at act
time only the last position is used. `prev_actions[:, t]` is the action executed before step t (zeros at the start).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .spatial import SpatialHead


class MLPHead(nn.Module):
    """R3M's BC protocol: BatchNorm1d on [embedding, proprio], MLP 256-256 with ReLU, one action, MSE."""

    history = 1
    horizon = 1

    def __init__(self, feature_dim: int, proprio_dim: int, action_dim: int, hidden: tuple[int, ...] = (256, 256)):
        super().__init__()
        self.action_dim = action_dim
        dims = [feature_dim + proprio_dim, *hidden]
        layers: list[nn.Module] = [nn.BatchNorm1d(dims[0])]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], action_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor, proprio: torch.Tensor, prev_actions: torch.Tensor) -> torch.Tensor:
        b, t = features.shape[:2]
        x = torch.cat([features, proprio], dim=-1).reshape(b * t, -1)
        return self.net(x).reshape(b, t, 1, self.action_dim)


class TransformerHead(nn.Module):
    """The S2 paper's robot head: a causal transformer over the last `history` steps of (visual feature, proprio,
    previous action), predicting the next `horizon` actions (an action chunk) at every position."""

    def __init__(
        self,
        feature_dim: int,
        proprio_dim: int,
        action_dim: int,
        history: int = 16,
        horizon: int = 16,
        d_model: int = 256,
        layers: int = 4,
        heads: int = 4,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.history, self.horizon, self.action_dim = history, horizon, action_dim
        # LayerNorm on the frozen features: their scale differs by encoder and by S2 scale. No cameras: no features.
        self.feature_in = (nn.Sequential(nn.LayerNorm(feature_dim), nn.Linear(feature_dim, d_model))
                           if feature_dim else None)
        self.proprio_in = nn.Linear(proprio_dim, d_model)
        self.action_in = nn.Linear(action_dim, d_model)
        self.pos = nn.Parameter(torch.zeros(1, history, d_model))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, dim_feedforward=4 * d_model, dropout=dropout, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, horizon * action_dim))
        # bool (True = may not attend): same attention as a -inf float mask, and every saved tensor stays finite, so
        # checkpoints can be refused for any NaN/inf. Older files' float masks load into it unchanged (-inf -> True).
        self.register_buffer("causal_mask", torch.ones(history, history, dtype=torch.bool).triu(1))

    def forward(self, features: torch.Tensor, proprio: torch.Tensor, prev_actions: torch.Tensor) -> torch.Tensor:
        b, t = features.shape[:2]
        x = self.proprio_in(proprio) + self.action_in(prev_actions) + self.pos[:, :t]
        if self.feature_in is not None:
            x = x + self.feature_in(features)
        x = self.blocks(x, mask=self.causal_mask[:t, :t], is_causal=True)
        return self.out(x).reshape(b, t, self.horizon, self.action_dim)


HEADS = {"mlp": MLPHead, "transformer": TransformerHead, "spatial": SpatialHead}


def build_head(kind: str, feature_dim: int, proprio_dim: int, action_dim: int, **kwargs: Any) -> nn.Module:
    """`kind` in HEADS; kwargs are the head's own options (hidden sizes, history, horizon, ...)."""
    from ..errors import ConfigError

    if kind not in HEADS:
        raise ConfigError(f"unknown policy head {kind!r}: expected one of {sorted(HEADS)}")
    if kind in ("mlp", "spatial") and "hidden" in kwargs:
        kwargs["hidden"] = tuple(kwargs["hidden"])
    try:
        return HEADS[kind](feature_dim, proprio_dim, action_dim, **kwargs)
    except TypeError as e:
        raise ConfigError(f"bad options for policy head {kind!r}: {e}") from e
