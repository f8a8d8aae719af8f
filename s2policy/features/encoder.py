"""Build the frozen S2 encoder from config values, and fingerprint it for cache keys and checkpoints."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

import torch

from ..errors import ConfigError

# S2Encoder keyword arguments a config may set; anything else is a typo we should report, not ignore.
S2_OPTIONS = ("scales", "img_sizes", "pool", "resize_output_to_idx", "antialias", "crop_batch_size", "max_split_size")


def build_s2_encoder(encoder: str, weights: str = "pretrained", s2: Mapping[str, Any] | None = None) -> Any:
    """`build_encoder(encoder, weights)` wrapped in `S2Encoder(**s2)`; every bad value -> one ConfigError.

    `s2` keys are S2Encoder keyword arguments (`scales`, `img_sizes`, `pool`, ...); None values are dropped so
    config files can list every option. With `s2.selector` set it builds a look-closer encoder
    (s2policy.look_closer; its options: LOOK_CLOSER_KEYS).
    """
    from .. import S2Encoder
    from ..encoders import build_encoder
    from ..look_closer import LOOK_CLOSER_KEYS, LookCloserEncoder, split_s2_options

    s2 = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in (s2 or {}).items() if v is not None}
    unknown = sorted(set(s2) - set(S2_OPTIONS) - set(LOOK_CLOSER_KEYS))
    if unknown:
        raise ConfigError(f"unknown s2 option(s) {unknown}: expected some of {list(S2_OPTIONS + LOOK_CLOSER_KEYS)}")
    s2, look_closer = split_s2_options(s2)  # checks the look-closer options before any weights are loaded
    try:
        enc = build_encoder(encoder, weights=weights)
    except ConfigError:
        raise
    except (KeyError, ValueError) as e:
        raise ConfigError(f"cannot build encoder {encoder!r} (weights={weights!r}): {e}") from e
    try:
        if look_closer is not None:
            return LookCloserEncoder(enc, **s2, **{k: v for k, v in vars(look_closer).items() if v is not None})
        return S2Encoder(enc, **s2)
    except ConfigError:
        raise
    except (ValueError, AssertionError, TypeError) as e:
        raise ConfigError(f"bad S2 settings {s2} for encoder {encoder!r} (native {enc.native_size}px): {e}") from e


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
