"""Read robomimic-format HDF5 demonstration files (ours and other tools'), with lazy access to large image arrays."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np

from ..errors import DatasetError

#: Per-demo datasets other than obs that robomimic files may carry; all optional except actions.
OPTIONAL_ARRAYS = ("states", "rewards", "dones")


def sorted_demo_keys(keys: Iterable[str]) -> list[str]:
    """Sort demo names numerically (demo_2 before demo_10); names without a number go last, alphabetically."""

    def order(key: str) -> tuple[int, int, str]:
        match = re.search(r"(\d+)$", key)
        return (0, int(match.group(1)), key) if match else (1, 0, key)

    return sorted(keys, key=order)


def is_image_dataset(ds: h5py.Dataset) -> bool:
    """Image observations are stored as uint8 (T, H, W, C)."""
    return ds.dtype == np.uint8 and ds.ndim == 4


def read_rows(ds: h5py.Dataset, start: int, stop: int, path: str | os.PathLike) -> np.ndarray:
    """`ds[start:stop]`, with HDF5's reaction to a damaged chunk (a failed decompression filter, a truncated file)
    turned into a DatasetError naming the file, the array and the rows."""
    try:
        return ds[start:stop]
    except (OSError, RuntimeError) as e:
        raise DatasetError(f"{path}: key '{ds.name}': rows {start}..{min(stop, ds.shape[0]) - 1} are unreadable ({e}); "
                           "the file is damaged") from e


def open_hdf5(path: str | os.PathLike) -> h5py.File:
    """Open an HDF5 file read-only, turning h5py's low-level errors into a DatasetError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    if not h5py.is_hdf5(path):
        raise DatasetError(f"{path}: not an HDF5 file (expected a robomimic-format .hdf5 dataset)")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise DatasetError(f"{path}: cannot open HDF5 file: {e}") from e


@dataclass
class Demo:
    """One demonstration, fully loaded.

    actions: (T, A) float32. obs: key -> (T, ...) array (images uint8 (T, H, W, 3)). states: (T, D) flattened
    simulator states, rewards: (T,), dones: (T,), each None when the file has none. attrs: the demo's HDF5 attributes
    (num_samples, seed, model_file, ...).
    """

    key: str
    actions: np.ndarray
    obs: dict[str, np.ndarray]
    states: np.ndarray | None = None
    rewards: np.ndarray | None = None
    dones: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.actions.shape[0])


class DemoDataset:
    """An open robomimic-format file. Use as a context manager (or call close()).

    demo_keys are in numeric order and restricted to mask/<filter_key> when one is given.
    """

    def __init__(self, path: str | os.PathLike, filter_key: str | None = None):
        self.path = Path(path)
        self.file = open_hdf5(self.path)
        try:
            self.demo_keys = self._select_demos(filter_key)
        except BaseException:
            self.file.close()
            raise
        self.filter_key = filter_key

    def _select_demos(self, filter_key: str | None) -> list[str]:
        if "data" not in self.file or not isinstance(self.file["data"], h5py.Group):
            raise DatasetError(f"{self.path}: missing group /data (not a robomimic-format dataset)")
        keys = sorted_demo_keys(k for k in self.file["data"] if isinstance(self.file["data"][k], h5py.Group))
        if filter_key is None:
            return keys
        masks = self.file.get("mask")
        if masks is None or filter_key not in masks:
            known = sorted(masks.keys()) if masks is not None else []
            raise DatasetError(f"{self.path}: unknown filter key {filter_key!r} (mask/ holds {known})")
        wanted = {k.decode() if isinstance(k, bytes) else str(k) for k in masks[filter_key][()]}
        missing = wanted - set(keys)
        if missing:
            raise DatasetError(f"{self.path}: mask/{filter_key} names demos not in /data: {sorted(missing)[:5]}")
        return [k for k in keys if k in wanted]

    # ---- context manager ----
    def __enter__(self) -> "DemoDataset":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()

    def __len__(self) -> int:
        return len(self.demo_keys)

    # ---- file-level metadata ----
    @property
    def env_args(self) -> dict[str, Any]:
        """The /data env_args attribute parsed from JSON ({} when absent)."""
        raw = self.file["data"].attrs.get("env_args")
        if raw is None:
            return {}
        try:
            return json.loads(raw)
        except (TypeError, ValueError) as e:
            raise DatasetError(f"{self.path}: data attr env_args is not valid JSON: {e}") from e

    def _first_demo(self) -> h5py.Group:
        if not self.demo_keys:
            raise DatasetError(f"{self.path}: /data holds no demos")
        return self.demo_group(self.demo_keys[0])

    @property
    def obs_keys(self) -> list[str]:
        """Observation keys of the first demo (low-dim and image), sorted."""
        obs = self._first_demo().get("obs")
        return sorted(obs.keys()) if obs is not None else []

    @property
    def image_keys(self) -> list[str]:
        """Observation keys holding uint8 (T, H, W, 3) images."""
        obs = self._first_demo().get("obs")
        return [k for k in self.obs_keys if is_image_dataset(obs[k])]

    @property
    def action_dim(self) -> int:
        return int(self._first_demo()["actions"].shape[1])

    @property
    def num_samples(self) -> int:
        """Total transitions over the selected demos."""
        return sum(self.demo_length(k) for k in self.demo_keys)

    # ---- per-demo access ----
    def demo_group(self, key: str) -> h5py.Group:
        try:
            return self.file["data"][key]
        except KeyError:
            raise DatasetError(f"{self.path}: no demo data/{key}") from None

    def demo_length(self, key: str) -> int:
        group = self.demo_group(key)
        if "num_samples" in group.attrs:
            return int(group.attrs["num_samples"])
        return int(group["actions"].shape[0])

    def obs_array(self, key: str, obs_key: str) -> h5py.Dataset:
        """The on-disk dataset of one observation key (lazy: slice it to read frames, e.g. `[t]` -> (H, W, 3))."""
        obs = self.demo_group(key).get("obs")
        if obs is None or obs_key not in obs:
            raise DatasetError(f"{self.path}: demo {key} has no obs/{obs_key}")
        return obs[obs_key]

    def load_demo(self, key: str, obs_keys: Iterable[str] | None = None, load_images: bool = True) -> Demo:
        """Read one demo into memory. obs_keys selects observations (default all); load_images=False skips
        image keys (read them lazily with obs_array)."""
        group = self.demo_group(key)
        if "actions" not in group:
            raise DatasetError(f"{self.path}: demo {key} has no actions")
        obs_group = group.get("obs")
        keys = list(obs_keys) if obs_keys is not None else (sorted(obs_group.keys()) if obs_group else [])
        obs = {}
        for obs_key in keys:
            ds = self.obs_array(key, obs_key)
            if load_images or not is_image_dataset(ds):
                obs[obs_key] = ds[()]
        optional = {name: (group[name][()] if name in group else None) for name in OPTIONAL_ARRAYS}
        return Demo(
            key=key,
            actions=np.asarray(group["actions"][()], dtype=np.float32),
            obs=obs,
            attrs={k: (v.item() if isinstance(v, np.generic) else v) for k, v in group.attrs.items()},
            **optional,
        )


def open_dataset(path: str | os.PathLike, filter_key: str | None = None) -> DemoDataset:
    """Open a robomimic-format HDF5 file for reading; see DemoDataset. Raises DatasetError on a malformed file."""
    return DemoDataset(path, filter_key=filter_key)
