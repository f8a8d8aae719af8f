"""Write robomimic-format HDF5 files atomically, one demo at a time (so big image demos never pile up in memory)."""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping, Sequence

import h5py
import numpy as np

from ..errors import DatasetError
from ..fileio import atomic_path

logger = logging.getLogger(__name__)


def split_train_valid(keys: Sequence[str], valid_fraction: float = 0.1, seed: int = 0) -> dict[str, list[str]]:
    """Random train/valid split of demo names: ~valid_fraction valid, at least one. A single demo goes to both."""
    keys = list(keys)
    if len(keys) <= 1:
        return {"train": keys, "valid": keys}
    num_valid = min(len(keys) - 1, max(1, round(valid_fraction * len(keys))))
    order = np.random.default_rng(seed).permutation(len(keys))
    valid = {keys[i] for i in order[:num_valid]}
    return {"train": [k for k in keys if k not in valid], "valid": [k for k in keys if k in valid]}


class DemoWriter:
    """Context manager that streams demos into a temporary file and renames it over `path` only on success.

    Images (uint8 (T, H, W, 3) observations) are gzip-compressed in one-frame chunks so readers can fetch single
    frames cheaply; everything else is stored uncompressed.
    """

    def __init__(self, path: str | os.PathLike, image_compression_level: int = 4):
        self.path = path
        self.compression_level = image_compression_level
        self.keys: list[str] = []
        self.total = 0

    def __enter__(self) -> "DemoWriter":
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        try:
            self.file = h5py.File(tmp, "w")
            self.data = self.file.create_group("data")
        except BaseException as e:
            self._atomic.__exit__(type(e), e, e.__traceback__)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool | None:
        self.file.close()  # close before the atomic rename (or removal) so the file is complete on disk
        return self._atomic.__exit__(exc_type, exc, tb)

    def add_demo(
        self,
        actions: np.ndarray,
        obs: Mapping[str, np.ndarray],
        states: np.ndarray | None = None,
        rewards: np.ndarray | None = None,
        dones: np.ndarray | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> str:
        """Append demo_<n>. actions (T, A) float in [-1, 1]; obs key -> (T, ...); states (T, D); rewards/dones (T,)."""
        actions = np.asarray(actions, dtype=np.float32)
        length = actions.shape[0]
        key = f"demo_{len(self.keys)}"
        if length == 0:
            raise DatasetError(f"{self.path}: refusing to write empty demo {key}")
        if not np.isfinite(actions).all():  # NaN compares False with everything: check it before the range
            raise DatasetError(f"{self.path}: refusing to write demo {key}, key 'actions': NaN/inf values")
        if np.abs(actions).max() > 1 + 1e-6:
            raise DatasetError(f"{self.path}: demo {key}, key 'actions': values outside [-1, 1]")
        group = self.data.create_group(key)
        group.create_dataset("actions", data=actions)
        for name, values in (("states", states), ("rewards", rewards), ("dones", dones)):
            if values is not None:
                group.create_dataset(name, data=np.asarray(values))
        obs_group = group.create_group("obs")
        for obs_key, values in obs.items():
            values = np.asarray(values)
            if values.shape[0] != length:
                raise DatasetError(f"{self.path}: demo {key}, key 'obs/{obs_key}': length {values.shape[0]} != {length}")
            if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
                raise DatasetError(f"{self.path}: refusing to write demo {key}, key 'obs/{obs_key}': NaN/inf values")
            if values.dtype == np.uint8 and values.ndim == 4:
                obs_group.create_dataset(
                    obs_key, data=values, chunks=(1, *values.shape[1:]),
                    compression="gzip", compression_opts=self.compression_level,
                )
            else:
                obs_group.create_dataset(obs_key, data=values)
        group.attrs["num_samples"] = length
        for name, value in (attrs or {}).items():
            group.attrs[name] = value
        self.keys.append(key)
        self.total += length
        return key

    def finish(self, env_args: Mapping[str, Any], masks: Mapping[str, Sequence[str]] | None = None) -> None:
        """Write /data attrs (total, env_args JSON) and mask/<name> byte-string lists (default: a train/valid split)."""
        self.data.attrs["total"] = self.total
        self.data.attrs["env_args"] = json.dumps(dict(env_args))
        masks = split_train_valid(self.keys) if masks is None else masks
        mask_group = self.file.require_group("mask")
        for name, keys in masks.items():
            mask_group.create_dataset(name, data=np.array([k.encode() for k in keys], dtype="S"))
        logger.info("wrote %d demos (%d samples) to %s", len(self.keys), self.total, self.path)
