"""Check a dataset (robomimic file or LeRobot folder) thoroughly and report every problem in one DatasetError."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from ..errors import DatasetError
from .episodes import is_lerobot_path
from .reader import OPTIONAL_ARRAYS, open_dataset

#: Actions may overshoot [-1, 1] by float rounding only.
ACTION_TOLERANCE = 1e-6
#: Problems listed in the error message before "... and N more".
MAX_LISTED = 10


def _check_demo(group: h5py.Group, key: str) -> list[str]:
    """Problems of one demo, each naming demo and key."""
    where = f"demo {key}"
    if "actions" not in group:
        return [f"{where}: missing 'actions'"]
    actions = group["actions"]
    if actions.ndim != 2 or not np.issubdtype(actions.dtype, np.floating):
        return [f"{where}, key 'actions': expected float (T, A), got {actions.dtype} {actions.shape}"]
    length = int(group.attrs.get("num_samples", actions.shape[0]))
    if length == 0 or actions.shape[0] == 0:
        return [f"{where}: empty demo (num_samples 0)"]
    problems = []
    if actions.shape[0] != length:
        problems.append(f"{where}, key 'actions': length {actions.shape[0]} != num_samples {length}")
    values = actions[()]
    if not np.all(np.isfinite(values)):
        problems.append(f"{where}, key 'actions': contains NaN or inf")
    elif np.abs(values).max() > 1 + ACTION_TOLERANCE:
        problems.append(
            f"{where}, key 'actions': values outside [-1, 1] (min {values.min():.4g}, max {values.max():.4g})"
        )
    for name in OPTIONAL_ARRAYS:
        if name in group and group[name].shape[:1] != (length,):
            problems.append(f"{where}, key '{name}': length {group[name].shape[:1]} != num_samples {length}")
    for obs_group_name in ("obs", "next_obs"):
        for obs_key, ds in group.get(obs_group_name, {}).items():
            problems += _check_obs(ds, f"{where}, key '{obs_group_name}/{obs_key}'", length)
    return problems


def _check_obs(ds: h5py.Dataset, where: str, length: int) -> list[str]:
    if ds.shape[:1] != (length,):
        return [f"{where}: length {ds.shape[:1]} != num_samples {length}"]
    looks_like_image = ds.ndim >= 3 or ds.dtype == np.uint8
    if looks_like_image and not (ds.dtype == np.uint8 and ds.ndim == 4 and ds.shape[-1] == 3):
        return [f"{where}: images must be uint8 (T, H, W, 3), got {ds.dtype} {ds.shape}"]
    return []


def validate(path: str | os.PathLike, filter_key: str | None = None) -> None:
    """Raise one DatasetError listing every problem (file, episode and key named) or return None for a good dataset.

    A folder is checked as a LeRobot dataset (see `validate_lerobot`). A robomimic file is checked for: HDF5 with
    /data, at least one demo, each demo non-empty with float (T, A) actions in [-1, 1], every per-step array
    (states, rewards, dones, obs/*, next_obs/*) of length num_samples, images uint8 (T, H, W, 3), and the filter key
    (if given) present in mask/.
    """
    path = Path(path)
    if is_lerobot_path(path):
        if filter_key is not None:
            raise DatasetError(f"{path}: filter keys select robomimic demos; a LeRobot dataset has none")
        return validate_lerobot(path)
    with open_dataset(path, filter_key=filter_key) as dataset:
        if not dataset.demo_keys:
            raise DatasetError(f"{path}: /data holds no demos")
        problems = []
        for key in dataset.demo_keys:
            problems += _check_demo(dataset.demo_group(key), key)
        _ = dataset.env_args  # raises on malformed JSON
    _raise_problems(path, problems)


def _raise_problems(path: Path, problems: list[str]) -> None:
    if problems:
        listed = "\n  ".join(problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise DatasetError(f"{path}: {len(problems)} problem(s):\n  {listed}{more}")


def validate_lerobot(path: str | os.PathLike) -> None:
    """Check a LeRobot dataset folder without decoding any frame (one DatasetError listing every problem).

    On open (each its own error): meta/info.json present, supported codebase_version, one fps for every camera,
    episode metadata readable. Then: every episode's Parquet rows match its length and hold finite actions; every
    video stream runs at the dataset's fps and holds at least the frames its episodes' rows need. Actions may lie
    outside [-1, 1] (LeRobot stores raw joint positions or poses; training normalises from the data).
    """
    from .lerobot import ACTION_FEATURE, LeRobotReader
    from .video import stream_info

    path = Path(path)
    problems: list[str] = []
    with LeRobotReader(path) as reader:
        for name in reader.episodes:
            try:
                actions = reader.read_actions(name)
            except DatasetError as e:
                problems.append(str(e))
                continue
            if not np.all(np.isfinite(actions)):
                problems.append(f"episode {name}, feature {ACTION_FEATURE!r}: contains NaN or inf")
        needed: dict[Path, tuple[str, int, str]] = {}  # video file -> (feature, frames its episodes need, episode)
        for ep in (reader.episode(n) for n in reader.episodes):
            for feature, (video, start) in ep.videos.items():
                end = round(start * reader.fps) + ep.length
                if video not in needed or end > needed[video][1]:
                    needed[video] = (feature, end, ep.name)
        rates: dict[str, set[float]] = {}
        for video, (feature, end, episode) in sorted(needed.items()):
            if not video.is_file():
                problems.append(f"{feature}: video file {video.relative_to(path)} not found")
                continue
            fps, frames, _ = stream_info(video)
            rates.setdefault(feature, set()).add(round(fps, 3))
            if frames is not None and frames < end:
                problems.append(f"{video.relative_to(path)}: {frames} frames but episode {episode} needs {end} "
                                "(video shorter than its Parquet rows)")
        if any(r != {round(reader.fps, 3)} for r in rates.values()):
            listed = ", ".join(f"{k} {'/'.join(f'{r:g}' for r in sorted(v))}" for k, v in sorted(rates.items()))
            problems.append(f"cameras have mismatched fps ({listed}; dataset fps {reader.fps:g})")
    _raise_problems(path, problems)
