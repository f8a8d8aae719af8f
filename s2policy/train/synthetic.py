"""Tiny synthetic robomimic-format datasets for tests and benchmarks: random-but-learnable demos, no simulator.

Actions are a fixed smooth function of proprio and of the mean colour of the camera frames, so a head trained on
frozen features + proprio can lower its loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..data import DemoWriter


def write_synthetic_demos(
    path: str | Path,
    num_demos: int = 4,
    length: int = 12,
    image_size: int | tuple[int, int] = 32,
    cameras: Sequence[str] = ("agentview",),
    proprio_dim: int = 5,
    action_dim: int = 3,
    seed: int = 0,
    store_states: bool = True,
) -> Path:
    """Write `num_demos` demos of `length` steps with uint8 frames obs/<camera>_image (T, H, W, 3), obs/proprio,
    obs/object, actions in [-1, 1], states, and a mask/train + mask/valid split. Returns `path`."""
    rng = np.random.default_rng(seed)
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    mix = rng.normal(size=(proprio_dim + 3, action_dim)) / np.sqrt(proprio_dim + 3)
    with DemoWriter(path) as writer:
        for _ in range(num_demos):
            proprio = np.cumsum(rng.normal(scale=0.1, size=(length, proprio_dim)), axis=0).astype(np.float32)
            colour = rng.uniform(0.2, 0.8, size=3)
            drift = np.linspace(0, 0.2, length)[:, None]
            obs = {"proprio": proprio, "object": rng.normal(size=(length, 3)).astype(np.float32)}
            for cam in cameras:
                base = (colour + drift) * 255
                noise = rng.integers(0, 40, size=(length, h, w, 3))
                obs[f"{cam}_image"] = np.clip(base[:, None, None, :] + noise, 0, 255).astype(np.uint8)
            actions = np.tanh(np.concatenate([proprio, np.broadcast_to(colour + drift, (length, 3))], 1) @ mix)
            writer.add_demo(actions.astype(np.float32), obs, states=rng.normal(size=(length, 8)).astype(np.float32))
        writer.finish({"env_name": "synthetic", "env_type": 2, "env_kwargs": {}})
    return Path(path)
