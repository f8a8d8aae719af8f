"""What identifies a frozen S2 encoder's features: its config plus, for random weights, a hash of the weights
(feature cache keys and policy files record it)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch


def state_fingerprint(module: torch.nn.Module) -> str:
    """sha256 of a module's parameters and buffers (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def encoder_identity(s2_encoder: Any) -> dict[str, Any]:
    """Everything that determines the features: `S2Encoder.config()`, plus a hash of the weights themselves when
    they are random (`weights_id == "random"` names no file, and two random draws give different features)."""
    cfg = json.loads(json.dumps(s2_encoder.config(), sort_keys=True, default=str))
    if _weights_id(s2_encoder) == "random":
        cfg["random_weights_sha256"] = state_fingerprint(s2_encoder)
    return cfg


def _weights_id(s2_encoder: Any) -> str | None:
    inner = getattr(s2_encoder, "encoder", None)
    if inner is not None and hasattr(inner, "weights_id"):
        return inner.weights_id
    return s2_encoder.config().get("weights_id")
