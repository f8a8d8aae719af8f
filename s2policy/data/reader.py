"""Read robomimic-format HDF5 demonstration files (ours and other tools'), with lazy access to large image arrays.

`DemoDataset` is the robomimic implementation of `EpisodeReader` (episodes.py); robomimic-only extras (HDF5 groups,
filter keys, simulator states for re-rendering) stay available to the code that needs them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import DatasetError
from .episodes import EpisodeReader, camera_of_image_key, image_key

log = logging.getLogger(__name__)

#: Frames hashed per read when fingerprinting image datasets.
_HASH_CHUNK = 64

#: Per-demo datasets other than obs that robomimic files may carry; all optional except actions.
OPTIONAL_ARRAYS = ("states", "rewards", "dones")


def sorted_demo_keys(keys: Iterable[str]) -> list[str]:
    """Sort demo names numerically (demo_2 before demo_10); names without a number go last, alphabetically."""

    def order(key: str) -> tuple[int, int, str]:
        match = re.search(r"(\d+)$", key)
        return (0, int(match.group(1)), key) if match else (1, 0, key)

    return sorted(keys, key=order)


#: Suffixes that mark an HDF5 observation as a camera's frames, in order of preference: robomimic / robosuite
#: `<camera>_image`, LIBERO `<camera>_rgb`. The camera is the name without it; the policy's key is `<camera>_image`.
CAMERA_SUFFIXES = ("_image", "_rgb")


def is_image_dataset(ds: h5py.Dataset) -> bool:
    """Image observations are stored as uint8 (T, H, W, C)."""
    return ds.dtype == np.uint8 and ds.ndim == 4


def read_rows(ds: h5py.Dataset, start: int, stop: int) -> np.ndarray:
    """`ds[start:stop]`, with HDF5's reaction to a damaged chunk (a failed decompression filter, a truncated file)
    turned into a DatasetError naming the file, the array and the rows."""
    try:
        return ds[start:stop]
    except (OSError, RuntimeError) as e:
        raise DatasetError(f"{ds.file.filename}: key '{ds.name}': rows {start}..{min(stop, ds.shape[0]) - 1} are "
                           f"unreadable ({e}); the file is damaged") from e


def open_hdf5(path: str | os.PathLike) -> h5py.File:
    """Open an HDF5 file read-only, turning h5py's low-level errors into a DatasetError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        if not h5py.is_hdf5(path):
            raise DatasetError(f"{path}: not an HDF5 file (expected a robomimic-format .hdf5 dataset)")
        return h5py.File(path, "r")
    except OSError as e:  # no read permission, a truncated file, ...
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


def demo_names(ds: h5py.Dataset) -> list[str]:
    """A filter key's demo names (mask/<name>: byte strings in robomimic's files, str in some others), in order."""
    return [k.decode() if isinstance(k, bytes) else str(k) for k in ds[()]]


def hash_h5_dataset(h: hashlib._Hash, ds: h5py.Dataset) -> None:
    """Feed an HDF5 dataset's name, dtype, shape and content into `h`, a few frames at a time."""
    h.update(f"{ds.name}|{ds.dtype}|{ds.shape}|".encode())
    if ds.ndim == 0:
        h.update(np.asarray(ds[()]).tobytes())
        return
    for i in range(0, ds.shape[0], _HASH_CHUNK):
        h.update(np.ascontiguousarray(read_rows(ds, i, i + _HASH_CHUNK)).tobytes())


class DemoDataset(EpisodeReader):
    """An open robomimic-format file. Use as a context manager (or call close()).

    demo_keys are in numeric order and restricted to mask/<filter_key> when one is given.
    """

    format = "robomimic"
    actions_in_unit_range = True

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
        keys = sorted_demo_keys(k for k in self.file["data"] if isinstance(self._data_member(k), h5py.Group))
        if filter_key is None:
            return keys
        masks = self.file.get("mask")
        if masks is None or filter_key not in masks:
            known = sorted(masks.keys()) if masks is not None else []
            raise DatasetError(f"{self.path}: unknown filter key {filter_key!r} (mask/ holds {known})")
        wanted = set(demo_names(masks[filter_key]))
        missing = wanted - set(keys)
        if missing:
            raise DatasetError(f"{self.path}: mask/{filter_key} names demos not in /data: {sorted(missing)[:5]}")
        return [k for k in keys if k in wanted]

    def _data_member(self, name: str) -> h5py.HLObject:
        """/data/<name>; a link HDF5 cannot follow (external file missing, dangling) is a DatasetError naming it."""
        try:
            return self.file["data"][name]
        except (KeyError, OSError) as e:
            raise DatasetError(f"{self.path}: /data/{name} cannot be opened ({e})") from e

    def close(self) -> None:
        self.file.close()

    # ---- file-level metadata ----
    @property
    def env_args(self) -> dict[str, Any]:
        """The /data env_args attribute parsed from JSON ({} when absent): an object whose env_kwargs, when present,
        is an object too (robomimic stores it as str or bytes)."""
        raw = self.file["data"].attrs.get("env_args")
        if raw is None:
            return {}
        try:
            env_args = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        except (TypeError, ValueError) as e:  # UnicodeDecodeError is a ValueError
            raise DatasetError(f"{self.path}: data attr env_args is not valid JSON: {e}") from e
        if not isinstance(env_args, dict):
            raise DatasetError(f"{self.path}: data attr env_args must be a JSON object, got {type(env_args).__name__} "
                               f"{str(raw)[:80]!r}")
        if not isinstance(env_args.get("env_kwargs", {}), dict):
            raise DatasetError(f"{self.path}: data attr env_args: 'env_kwargs' must be a JSON object, got "
                               f"{env_args['env_kwargs']!r:.80}")
        return env_args

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


    # ---- EpisodeReader ----
    @property
    def episodes(self) -> list[str]:
        return list(self.demo_keys)

    def episode_length(self, episode: str) -> int:
        return self.demo_length(episode)

    @property
    def lowdim_keys(self) -> list[str]:
        obs = self._first_demo().get("obs")
        return [k for k in self.obs_keys if not is_image_dataset(obs[k])]

    @property
    def cameras(self) -> list[str]:
        return sorted(self._stored_camera_keys())

    def _stored_camera_keys(self) -> dict[str, str]:
        """Camera -> the obs key holding its frames (`agentview` -> `agentview_image`, or LIBERO's `agentview_rgb`)."""
        found: dict[str, str] = {}
        for suffix in CAMERA_SUFFIXES:
            for key in self.image_keys:
                if key.endswith(suffix) and len(key) > len(suffix):
                    found.setdefault(key[:-len(suffix)], key)
        return found

    def _frame_key(self, camera: str) -> str:
        """The obs key of `camera` (given as `agentview` or `agentview_image`); `<camera>_image` when absent."""
        return self._stored_camera_keys().get(camera_of_image_key(camera), image_key(camera))

    def camera_key_expected(self, camera: str) -> str:
        return f"obs/{self._frame_key(camera)}"

    def frame_shape(self, camera: str) -> tuple[int, int] | None:
        obs = self._first_demo().get("obs")
        key = self._frame_key(camera)
        return tuple(int(n) for n in obs[key].shape[1:3]) if obs is not None and key in obs else None

    @property
    def has_states(self) -> bool:
        return "states" in self._first_demo()

    def read_lowdim(self, episode: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        missing = [k for k in keys if k not in self.demo_group(episode).get("obs", {})]
        if missing:
            raise DatasetError(f"{self.path}: demo {episode} has no obs key(s) {missing}; available: {self.obs_keys}")
        return self.load_demo(episode, obs_keys=keys, load_images=False).obs

    def read_actions(self, episode: str) -> np.ndarray:
        group = self.demo_group(episode)
        if "actions" not in group:
            raise DatasetError(f"{self.path}: demo {episode} has no actions")
        return np.asarray(group["actions"][()], dtype=np.float32)

    def iter_frames(self, episode: str, camera: str, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
        ds = self.obs_array(episode, self._frame_key(camera))
        for t0 in range(0, ds.shape[0], chunk):
            yield t0, read_rows(ds, t0, t0 + chunk)

    def read_frames(self, episode: str, camera: str, steps: Sequence[int]) -> np.ndarray:
        ds = self.obs_array(episode, self._frame_key(camera))
        return np.stack([read_rows(ds, t, t + 1)[0] for t in steps])

    def split(self) -> tuple[list[str], list[str]]:
        """mask/train and mask/valid; without mask/train every demo trains and none validates."""
        masks = self.file.get("mask")
        if masks is None or "train" not in masks:
            log.warning("%s has no mask/train: training on all %d demos, no validation loss", self.path,
                        len(self.demo_keys))
            return list(self.demo_keys), []
        return self._select_demos("train"), (self._select_demos("valid") if "valid" in masks else [])

    def seeds(self) -> dict[str, int]:
        attrs = {k: self.demo_group(k).attrs for k in self.demo_keys}
        return {k: int(a["seed"]) for k, a in attrs.items() if "seed" in a}

    def hash_frames(self, h: hashlib._Hash, camera: str) -> None:
        for demo in self.demo_keys:
            hash_h5_dataset(h, self.obs_array(demo, self._frame_key(camera)))

    def hash_render_inputs(self, h: hashlib._Hash) -> None:
        """What re-rendered frames depend on: env_args, and per demo its states and model file."""
        h.update(json.dumps(self.env_args, sort_keys=True).encode())
        for demo in self.demo_keys:
            group = self.demo_group(demo)
            hash_h5_dataset(h, group["states"])
            h.update(str(group.attrs.get("model_file", "")).encode())

    def modification_stamp(self) -> str:
        st = os.stat(self.path)
        return f"{self.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"


def open_dataset(path: str | os.PathLike, filter_key: str | None = None) -> DemoDataset:
    """Open a robomimic-format HDF5 file for reading; see DemoDataset. Raises DatasetError on a malformed file."""
    return DemoDataset(path, filter_key=filter_key)
