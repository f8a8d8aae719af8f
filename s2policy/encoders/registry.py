"""Name -> builder registry, and `build_encoder`: architecture from the family file, weights from `weights.py`."""

from __future__ import annotations

import contextlib
import inspect
import logging
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import torch

from ..errors import ConfigError
from .base import FrozenEncoder
from .weights import load_pretrained

log = logging.getLogger(__name__)

Builder = Callable[..., FrozenEncoder]
_B = TypeVar("_B", bound=Builder)

_BUILDERS: dict[str, Builder] = {}

# Random weights are drawn from a fixed seed so "random" means the same model in every process and test.
RANDOM_INIT_SEED = 0


def register_encoder(builder: _B) -> _B:
    """Decorator: register `builder` (a function returning a randomly initialised `FrozenEncoder`) under its name."""
    name = builder.__name__
    if name in _BUILDERS:
        raise RuntimeError(f"encoder {name!r} registered twice")
    _BUILDERS[name] = builder
    return builder


def list_encoders() -> list[str]:
    """Registered encoder names, sorted."""
    return sorted(_BUILDERS)


def _builder(name: str) -> Builder:
    try:
        return _BUILDERS[name]
    except KeyError:
        raise ConfigError(f"unknown encoder {name!r}; known encoders: {', '.join(list_encoders())}") from None


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    # fork_rng restores the caller's RNG state afterwards: building an encoder must not perturb anyone's randomness.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_encoder(name: str, weights: str | Path = "pretrained", **kwargs) -> FrozenEncoder:
    """Build a frozen encoder in eval mode.

    Args:
        name: one of `list_encoders()`, e.g. "efficientnet_lite0", "r3m_resnet18", "mvp_vits", "vc1_vitb".
        weights: "pretrained" (the official file: cache, known location or download), "random" (architecture only,
            deterministic seeded init; built on the current default device, so `with torch.device("meta")` gives a
            zero-cost model for shape and cost queries), or the path of an official-format file.
        kwargs: passed to the family builder.

    Raises:
        ConfigError: unknown name, or a `weights` value that is none of the above.
        CheckpointError: the weight file is missing, corrupt, or does not match the architecture key for key.
    """
    builder = _builder(name)
    try:
        inspect.signature(builder).bind(**kwargs)
    except TypeError as e:
        raise ConfigError(f"encoder {name!r} does not take options {sorted(kwargs)}: {e}") from None
    if isinstance(weights, str) and weights == "random":
        with _seeded(RANDOM_INIT_SEED):
            return builder(**kwargs).freeze()
    # Every tensor will come from the file, so skip the (slow, for ViT-L) random init: build on meta, then load.
    with torch.device("meta"):
        encoder = builder(**kwargs)
    if not encoder.state_dict():  # nothing to load (the "none" encoder): no weight file applies
        return builder(**kwargs).freeze()
    load_pretrained(encoder, weights)
    return encoder.freeze()
