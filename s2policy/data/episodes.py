"""One reader interface for demonstration datasets, whatever their format: episodes of (frames per camera, low-dim
observations, actions). Everything after it -- validation, frames -> feature cache, training, evaluation -- talks to
`EpisodeReader` and never asks which format the data came from.

Names follow the robomimic contract the rest of the package uses: a camera `front` has frames under the observation
key `front_image`, the proprio vector is `proprio`. Formats map their own names onto these (see docs/datasets.md).
"""

from __future__ import annotations

import abc
import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from ..errors import DatasetError


def image_key(camera: str) -> str:
    """Observation key holding a camera's frames (`agentview` -> `agentview_image`)."""
    return camera if camera.endswith("_image") else f"{camera}_image"


def camera_of_image_key(key: str) -> str:
    """Inverse of `image_key` (`agentview_image` -> `agentview`)."""
    return key.removesuffix("_image")


class EpisodeReader(abc.ABC):
    """An open dataset. Use as a context manager (or call close()).

    `episodes` are the episode names in order (`demo_0`, ... for robomimic; `episode_000000`, ... for LeRobot).
    """

    path: Path
    #: "robomimic" or "lerobot-v3.0" / "lerobot-v2.1".
    format: str
    #: Whether actions must lie in [-1, 1] (robomimic's convention; LeRobot's are raw joint positions or poses).
    actions_in_unit_range: bool

    @property
    @abc.abstractmethod
    def episodes(self) -> list[str]: ...

    @abc.abstractmethod
    def episode_length(self, episode: str) -> int: ...

    @property
    @abc.abstractmethod
    def lowdim_keys(self) -> list[str]:
        """Low-dimensional observation keys (our names), sorted."""

    @property
    @abc.abstractmethod
    def cameras(self) -> list[str]:
        """Cameras whose frames the dataset stores, sorted."""

    @property
    def camera_keys(self) -> dict[str, str]:
        """Camera -> where the dataset keeps its frames, spelled as the dataset spells it (for messages)."""
        return {c: self.camera_key_expected(c) for c in self.cameras}

    def camera_key_expected(self, camera: str) -> str:
        """Where this format keeps `camera`'s frames (robomimic: `obs/<camera>_image`)."""
        return f"obs/{image_key(camera)}"

    @abc.abstractmethod
    def frame_shape(self, camera: str) -> tuple[int, int] | None:
        """(H, W) of the stored frames of `camera`, None when the dataset stores none for it."""

    @property
    def has_states(self) -> bool:
        """Whether episodes carry flattened simulator states (frames can then be re-rendered)."""
        return False

    @property
    def env_args(self) -> dict[str, Any]:
        """The environment record ({"env_name", "env_type", "env_kwargs": {"task", "camera_size", ...}}) or {}."""
        return {}

    @abc.abstractmethod
    def read_lowdim(self, episode: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """key -> (T, ...) array; a key the dataset lacks raises DatasetError listing the available keys."""

    @abc.abstractmethod
    def read_actions(self, episode: str) -> np.ndarray:
        """(T, A) float32 actions."""

    @abc.abstractmethod
    def iter_frames(self, episode: str, camera: str, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first index, uint8 (n, H, W, 3)) chunks of one episode's frames, read sequentially."""

    @abc.abstractmethod
    def read_frames(self, episode: str, camera: str, steps: Sequence[int]) -> np.ndarray:
        """uint8 (len(steps), H, W, 3) frames at arbitrary steps (random access; may be slow for videos)."""

    def frames_random_access(self, camera: str) -> bool:
        """Whether `read_frames` reads single steps of `camera` cheaply (False: it decodes whole episodes)."""
        return True

    @abc.abstractmethod
    def split(self) -> tuple[list[str], list[str]]:
        """(train, valid) episode names: the dataset's own split when it has one."""

    def seeds(self) -> dict[str, int]:
        """Episode -> environment reset seed, for the episodes that record one."""
        return {}

    @abc.abstractmethod
    def hash_frames(self, h: hashlib._Hash, camera: str) -> None:
        """Feed everything `camera`'s stored frames depend on into `h` (the feature cache's content key)."""

    @abc.abstractmethod
    def modification_stamp(self) -> str:
        """A string that changes whenever any file of the dataset is written (memoises content hashes)."""

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.episodes)


def is_lerobot_path(path: str | os.PathLike) -> bool:
    """A LeRobot dataset is a folder (its meta/info.json is checked when it is opened); robomimic is one file."""
    return Path(path).is_dir()


def open_episodes(path: str | os.PathLike, filter_key: str | None = None) -> EpisodeReader:
    """Open a dataset by what `path` is: a folder -> LeRobot (v3.0 or v2.1), a file -> robomimic HDF5.

    filter_key restricts a robomimic file to mask/<filter_key>. Raises DatasetError naming the path when it is
    neither, or malformed.
    """
    p = Path(path)
    if is_lerobot_path(p):
        if filter_key is not None:
            raise DatasetError(f"{p}: filter keys select robomimic demos; a LeRobot dataset has none")
        from .lerobot import LeRobotReader

        return LeRobotReader(p)
    if not p.exists():
        raise DatasetError(f"{p}: no such file or folder (expected a robomimic .hdf5 file or a LeRobot dataset folder)")
    from .reader import DemoDataset

    return DemoDataset(p, filter_key=filter_key)
