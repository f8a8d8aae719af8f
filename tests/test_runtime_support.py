"""Shared helpers for the runtime and export tests (no tests here): a real tiny policy checkpoint built with the
training code's own classes, fake controllers and a fake robot."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from s2policy import build_s2_encoder
from s2policy.features.maps import map_shape
from s2policy.policy import Normalizer, Policy, PolicyConfig, SpatialOptions
from s2policy.runtime import EPISODE_KEY, TIMESTAMP_KEY, StageTimes

PROPRIO_DIM, ACTION_DIM = 5, 3
TRANSFORMER = {"history": 4, "horizon": 4, "d_model": 16, "layers": 1, "heads": 2, "dropout": 0.0}


def write_tiny_checkpoint(path: Path, head: str = "mlp", execution: str = "receding", n_action_steps: int = 2,
                          encoder: str = "tiny_cnn", scales: tuple[int, ...] = (1, 2), seed: int = 0,
                          proprio_dim: int = PROPRIO_DIM, action_dim: int = ACTION_DIM, task: str | None = None,
                          grid: int = 0, s2_options: dict[str, Any] | None = None) -> Path:
    """A tiny random-weight policy (tiny encoder with S2, random head, fitted normalisers) saved as a checkpoint;
    encoder="none" gives a camera-free one. A spatial head sees the S2 map of 64 x 64 frames merged to the grid of
    scale `grid` (resize_output_to_idx). `s2_options`: further s2 config keys (e.g. look-closer's)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    s2 = {"scales": list(scales)} | ({"resize_output_to_idx": grid} if head == "spatial" else {}) | (s2_options or {})
    enc = build_s2_encoder(encoder, "random", s2)
    feature_dim, head_kwargs = enc.out_dim, dict(TRANSFORMER) if head == "transformer" else {}
    if head == "spatial":
        shape = (1, *map_shape(enc, (64, 64)))
        feature_dim, head_kwargs = math.prod(shape), SpatialOptions(num_keypoints=4, hidden=(16,),
                                                                    horizon=3).head_kwargs(shape)
    config = PolicyConfig(
        encoder=encoder, weights="random", s2=s2, cameras=[] if encoder == "none" else ["agentview"],
        proprio_keys=["proprio"],
        proprio_dim=proprio_dim, action_dim=action_dim, feature_dim=feature_dim, head=head, task=task,
        head_kwargs=head_kwargs, camera_size=64, execution=execution,
        n_action_steps=n_action_steps if head != "mlp" else 1,
    )
    policy = Policy.create(config, enc, Normalizer.fit(rng.normal(size=(64, proprio_dim))),
                           Normalizer.fit(rng.normal(scale=0.5, size=(64, action_dim))))
    # fresh BatchNorm statistics would make every output ~equal; give them some spread
    for bn in policy.head.modules():
        if isinstance(bn, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
    return policy.save(path)


def observation(rng: np.random.Generator, frame_shape: tuple[int, int] = (48, 64), episode: int | None = None,
                stamp: bool = False) -> dict[str, Any]:
    """A raw observation: uint8 camera frame of `frame_shape` + proprio (+ bookkeeping keys if asked)."""
    obs: dict[str, Any] = {
        "agentview": rng.integers(0, 256, size=(*frame_shape, 3), dtype=np.uint8),
        "proprio": rng.normal(size=PROPRIO_DIM).astype(np.float32),
    }
    if episode is not None:
        obs[EPISODE_KEY] = episode
    if stamp:
        obs[TIMESTAMP_KEY] = time.monotonic()
    return obs


class FakeController:
    """Returns `action_fn(observation)` after sleeping `delay` seconds; counts calls and resets."""

    def __init__(self, delay: float = 0.0, action_fn: Callable[[dict], np.ndarray] | None = None,
                 action_dim: int = ACTION_DIM):
        self.delay, self.action_dim = delay, action_dim
        self.action_fn = action_fn or (lambda obs: np.full(action_dim, 0.1, np.float32))
        self.calls = self.resets = 0
        self.last_times = StageTimes()

    def act(self, observation: dict) -> np.ndarray:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        self.last_times = StageTimes(encode=self.delay)
        return self.action_fn(observation)

    def reset(self) -> None:
        self.resets += 1


class FakeRobot:
    """Serves `make_obs(tick)` (timestamped now unless it sets its own), records every action sent."""

    def __init__(self, make_obs: Callable[[int], dict] | None = None, fail_at: int | None = None):
        rng = np.random.default_rng(0)
        self.make_obs = make_obs or (lambda i: {"proprio": rng.normal(size=PROPRIO_DIM).astype(np.float32)})
        self.fail_at = fail_at
        self.sent: list[np.ndarray] = []
        self.observations = 0
        self.closed = False

    def get_observation(self) -> dict:
        if self.fail_at is not None and self.observations == self.fail_at:
            raise OSError("camera unplugged")
        obs = self.make_obs(self.observations)
        obs.setdefault(TIMESTAMP_KEY, time.monotonic())
        self.observations += 1
        return obs

    def send_action(self, action: np.ndarray) -> None:
        assert not self.closed, "action sent after close()"
        self.sent.append(np.array(action, copy=True))

    def close(self) -> None:
        self.closed = True
