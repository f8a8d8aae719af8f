"""Training data: per-step proprio/actions of a split, per-step features (cached or encoded on the fly), and the
window gather that turns step indices into head inputs and targets.

A batch for step indices i (B,) with head history T and horizon H:
    features (B, T, F), proprio (B, T, P), prev_actions (B, T, A), targets (B, T, H, A)   (all normalised)
Window positions before a demo's first step repeat that step (with a zero previous action), and targets past its
last step repeat the last action: exactly what `Policy.act` sees at the start of an episode.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ..data import open_episodes
from ..device import autocast
from ..errors import ConfigError, DatasetError
from ..features import FeatureCache, frames_to_tensor
from ..look_closer import embed_frames, needs_points, selector_points


@dataclass
class StepTable:
    """Concatenated steps of some demos: proprio (N, P), actions (N, A), and per step its demo's [start, end)."""

    demos: list[str]
    proprio: torch.Tensor
    actions: torch.Tensor
    start: torch.Tensor
    end: torch.Tensor

    @property
    def num_steps(self) -> int:
        return int(self.actions.shape[0])

    def locate(self, idx: torch.Tensor) -> list[tuple[str, int]]:
        """(demo, step within demo) of flat indices."""
        starts = self.start[idx].tolist()
        demo_of = np.searchsorted(self._demo_starts, starts)
        return [(self.demos[d], int(i) - s) for d, i, s in zip(demo_of, idx.tolist(), starts)]

    @functools.cached_property
    def _demo_starts(self) -> np.ndarray:
        return np.unique(self.start.numpy())


def load_steps(path: str, demos: Sequence[str], proprio_keys: Sequence[str]) -> StepTable:
    """Read proprio (the `proprio_keys` concatenated) and actions of `demos` (any dataset format); a missing key ->
    ConfigError listing the available ones."""
    proprio, actions, start, end = [], [], [], []
    offset = 0
    with open_episodes(path) as ds:
        for demo in demos:
            try:
                obs = ds.read_lowdim(demo, proprio_keys)
            except DatasetError as e:
                raise ConfigError(f"{e} (task.proprio_keys={list(proprio_keys)})") from e
            acts = ds.read_actions(demo)
            n = len(acts)
            for key, values in obs.items():
                if len(values) != n:
                    raise DatasetError(f"{path}: episode {demo}, key {key!r}: {len(values)} steps but {n} actions")
            proprio.append(np.concatenate([obs[k].reshape(n, -1) for k in proprio_keys], axis=1))
            actions.append(acts)
            start.append(np.full(n, offset))
            end.append(np.full(n, offset + n))
            offset += n
    return StepTable(
        list(demos),
        torch.as_tensor(np.concatenate(proprio), dtype=torch.float32),
        torch.as_tensor(np.concatenate(actions), dtype=torch.float32),
        torch.as_tensor(np.concatenate(start)),
        torch.as_tensor(np.concatenate(end)),
    )


class StepFeatures(Protocol):
    """Per-step visual features: `gather(idx (M,)) -> float32 (M, F)`."""

    dim: int

    def gather(self, idx: torch.Tensor) -> torch.Tensor: ...


class CachedFeatures:
    """Features of every step held in memory (cache dtype), concatenated over cameras in the configured order
    (no cameras: zero-width features)."""

    def __init__(self, caches: Sequence[FeatureCache], steps: StepTable, device: torch.device | str = "cpu"):
        per_camera = [np.concatenate([c.embeddings(d) for d in steps.demos]) for c in caches]
        # float16 zero-width start: never widens the cache dtype
        table = np.concatenate([np.zeros((steps.num_steps, 0), np.float16), *per_camera], axis=1)
        # On a GPU the whole table moves once: batches are then gathered without host-to-device copies.
        self.table = torch.from_numpy(table).to(device)
        self.dim = int(self.table.shape[1])

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx.to(self.table.device)].float()


class EncodedFeatures:
    """No-cache mode: read the frames of the requested steps and run the frozen S2 encoder on every call, as
    robomimic and LeRobot do (what the cache saves is measured against this)."""

    def __init__(self, path: str, steps: StepTable, cameras: Sequence[str], encoder: torch.nn.Module,
                 device: torch.device, precision: str = "auto"):
        self.dataset = open_episodes(path)
        videos = [cam for cam in cameras if self.dataset.frame_shape(cam) is not None
                  and not self.dataset.frames_random_access(cam)]
        if videos:
            self.dataset.close()
            raise ConfigError(f"{path}: features.cache=false reads frames at random steps, which the video camera(s) "
                              f"{videos} can only do by decoding whole episodes per batch; use features.cache=true")
        self.steps, self.cameras, self.encoder = steps, list(cameras), encoder
        self.device, self.precision = device, precision
        self.dim = int(encoder.out_dim) * len(self.cameras)
        for cam in self.cameras:
            if self.dataset.frame_shape(cam) is None:
                self.dataset.close()
                raise ConfigError(f"{path}: no stored frames {self.dataset.camera_key_expected(cam)} for camera "
                                  f"{cam!r}; image keys present: {sorted(self.dataset.camera_keys.values())}")

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        unique, inverse = torch.unique(idx, return_inverse=True)
        where = self.steps.locate(unique)
        feats = [torch.zeros(len(where), 0, device=self.device)]
        points = self._points(where)
        for cam in self.cameras:
            frames = np.stack([self.dataset.read_frames(d, cam, [t])[0] for d, t in where])
            with torch.inference_mode(), autocast(self.device, self.precision):
                feats.append(embed_frames(self.encoder, frames_to_tensor(frames, self.device), cam, points).float())
        return torch.cat(feats, dim=1).clone()[inverse.to(self.device)]

    def _points(self, where: Sequence[tuple[str, int]]) -> torch.Tensor | None:
        """The stored end-effector positions (M, 3) a look-closer gripper selector reads at these steps, or None."""
        if not needs_points(self.encoder):
            return None
        key = self.encoder.look_closer.point_key
        episodes = {d: self.dataset.read_lowdim(d, [key])[key] for d in {d for d, _ in where}}
        return selector_points(self.encoder, [{key: episodes[d][t]} for d, t in where], self.device)

    def close(self) -> None:
        self.dataset.close()


def gather_windows(steps: StepTable, features: StepFeatures, idx: torch.Tensor, history: int, horizon: int,
                   device: torch.device) -> dict[str, torch.Tensor]:
    """Head inputs and targets for step indices `idx` (B,) -- see the module docstring for shapes.

    `steps.proprio` / `steps.actions` must already be normalised.
    """
    start, end = steps.start[idx, None], steps.end[idx, None]
    pos = (idx[:, None] - history + 1 + torch.arange(history)).clamp_min(start)  # (B, T)
    prev = (pos - 1).clamp_min(0)
    prev_actions = steps.actions[prev] * (pos > start).unsqueeze(-1)  # zero before a demo's first step
    fut = torch.minimum(pos[..., None] + torch.arange(horizon), end[..., None] - 1)  # (B, T, H)
    b = idx.shape[0]
    return {
        "features": features.gather(pos.reshape(-1)).reshape(b, history, -1).to(device),
        "proprio": steps.proprio[pos].to(device),
        "prev_actions": prev_actions.to(device),
        "targets": steps.actions[fut].to(device),
    }


def batch_indices(step: int, batch_size: int, num_steps: int, seed: int) -> torch.Tensor:
    """Indices of the global batch of optimisation step `step`: epoch-wise shuffles of all steps, a pure function
    of (step, seed), so a resumed or a distributed run draws exactly the batches of an uninterrupted single one."""
    positions = step * batch_size + torch.arange(batch_size)
    epochs, offsets = positions // num_steps, positions % num_steps
    out = torch.empty(batch_size, dtype=torch.long)
    for e in torch.unique(epochs).tolist():
        g = torch.Generator().manual_seed(seed * 1_000_003 + e)
        perm = torch.randperm(num_steps, generator=g)
        sel = epochs == e
        out[sel] = perm[offsets[sel]]
    return out
