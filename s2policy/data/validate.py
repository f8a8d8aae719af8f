"""Check a dataset (robomimic file or LeRobot folder) thoroughly and report every problem in one DatasetError."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from ..errors import DatasetError
from .episodes import is_lerobot_path
from .reader import OPTIONAL_ARRAYS, open_dataset, sorted_demo_keys

#: Actions may overshoot [-1, 1] by float rounding only.
ACTION_TOLERANCE = 1e-6
#: Problems listed in the error message before "... and N more".
MAX_LISTED = 10


def _check_demo(group: h5py.Group, key: str, reference: dict[str, tuple] | None) -> tuple[list[str], dict[str, tuple]]:
    """(problems of one demo, each naming demo and key; its layout: name -> (dtype kind, per-step shape) of the arrays
    readers stack). `reference`: the first good demo's layout, which every other demo must match."""
    where = f"demo {key}"
    actions = group.get("actions")
    if not isinstance(actions, h5py.Dataset):
        return [f"{where}: missing 'actions'"], {}
    dtype, shape = actions.dtype, actions.shape
    if len(shape) != 2 or not np.issubdtype(dtype, np.floating):
        return [f"{where}, key 'actions': expected float (T, A), got {dtype} {shape}"], {}
    length = int(group.attrs.get("num_samples", shape[0]))
    if length == 0 or shape[0] == 0:
        return [f"{where}: empty demo (num_samples 0)"], {}
    problems = []
    if shape[0] != length:
        problems.append(f"{where}, key 'actions': length {shape[0]} != num_samples {length}")
    values = actions[()]
    if not np.all(np.isfinite(values)):
        problems.append(f"{where}, key 'actions': {_nonfinite(values)}")
    elif np.abs(values).max() > 1 + ACTION_TOLERANCE:
        problems.append(
            f"{where}, key 'actions': values outside [-1, 1] (min {values.min():.4g}, max {values.max():.4g})"
        )
    layout = {"actions": (dtype.kind, shape[1:])}
    for name in OPTIONAL_ARRAYS:
        ds = group.get(name)
        if ds is not None:
            problems += _check_array(ds, f"{where}, key '{name}'", length, image_allowed=False)
    for obs_group_name in ("obs", "next_obs"):
        for obs_key, ds in group.get(obs_group_name, {}).items():
            name = f"{obs_group_name}/{obs_key}"
            problems += _check_array(ds, f"{where}, key '{name}'", length, image_allowed=True)
            if isinstance(ds, h5py.Dataset):
                layout[name] = (ds.dtype.kind, ds.shape[1:])
    if reference is not None:
        problems += _check_matches(layout, where, reference)
    return problems, layout


def _nonfinite(values: np.ndarray) -> str:
    """'NaN/inf at step(s) [3, 7] (2 values)' for a (T, ...) array."""
    bad = ~np.isfinite(values)
    steps = np.flatnonzero(bad.reshape(len(values), -1).any(axis=1))
    listed = steps[:5].tolist()
    return f"NaN/inf at step(s) {listed}{' ...' if len(steps) > 5 else ''} ({int(bad.sum())} values)"


def _check_array(ds: h5py.Dataset, where: str, length: int, image_allowed: bool) -> list[str]:
    """Length num_samples. Images (uint8 or >= 3-D, when allowed): uint8 (T, H, W, 3), from the metadata only, never
    read. Anything else: numbers, finite when floating point (read in full: low-dim arrays are small)."""
    if not isinstance(ds, h5py.Dataset):
        return [f"{where}: expected an array, found a group"]
    dtype, shape = ds.dtype, ds.shape
    if shape[:1] != (length,):
        return [f"{where}: length {shape[:1]} != num_samples {length}"]
    if image_allowed and (len(shape) >= 3 or dtype == np.uint8):
        if not (dtype == np.uint8 and len(shape) == 4 and shape[-1] == 3):
            return [f"{where}: images must be uint8 (T, H, W, 3), got {dtype} {shape}"]
        return []
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        return [f"{where}: expected numbers, got dtype {dtype}"]
    if np.issubdtype(dtype, np.floating):
        values = ds[()]
        if not np.all(np.isfinite(values)):
            return [f"{where}: {_nonfinite(values)}"]
    return []


def _check_matches(layout: dict[str, tuple], where: str, reference: dict[str, tuple]) -> list[str]:
    # next_obs is optional per demo (other tools write it for some); what readers stack must be in every demo.
    problems = [f"{where}: has no '{name}' (the first demo has it)" for name in reference
                if name not in layout and not name.startswith("next_obs/")]
    for name, (kind, shape) in layout.items():
        if name in reference and (kind, shape) != reference[name]:
            problems.append(f"{where}, key '{name}': per-step shape {shape} dtype kind {kind!r}, but the first demo "
                            f"has {reference[name][1]} {reference[name][0]!r}")
    return problems


def _check_masks(file: h5py.File, demo_keys: set[str]) -> list[str]:
    """Every filter key (mask/<name>): a 1-D array of demo names, non-empty, naming demos present in /data."""
    masks = file.get("mask")
    if masks is None:
        return []
    if not isinstance(masks, h5py.Group):
        return ["'mask' is not a group of filter keys"]
    problems = []
    for name, ds in masks.items():
        where = f"filter key mask/{name}"
        if not isinstance(ds, h5py.Dataset) or ds.ndim != 1 or ds.dtype.kind not in "SUO":
            problems.append(f"{where}: expected a 1-D array of demo names (byte strings)")
            continue
        names = {k.decode() if isinstance(k, bytes) else str(k) for k in ds[()]}
        if not names:
            problems.append(f"{where}: empty (names no demo)")
        missing = sorted(names - demo_keys)
        if missing:
            problems.append(f"{where}: names demos not in /data: {missing[:5]}")
    return problems


def validate(path: str | os.PathLike, filter_key: str | None = None) -> None:
    """Raise one DatasetError listing every problem (file, episode and key named) or return None for a good dataset.

    A folder is checked as a LeRobot dataset (see `validate_lerobot`). A robomimic file is checked for: HDF5 with
    /data, at least one demo, each demo non-empty with float (T, A) actions in [-1, 1]; every per-step array
    (states, rewards, dones, obs/*, next_obs/*) of length num_samples; actions and floating-point low-dim arrays
    finite; images uint8 (T, H, W, 3) (from metadata: images are never read); every demo with the first demo's keys,
    per-step shapes and dtype kinds; every filter key in mask/ a non-empty list of existing demos; env_args valid
    JSON; and `filter_key` (if given) present in mask/.
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
        reference = None
        key = "(file structure)"
        try:
            for key in dataset.demo_keys:
                found, layout = _check_demo(dataset.demo_group(key), key, reference)
                problems += found
                if reference is None and not found:
                    reference = layout
            problems += _check_masks(dataset.file, set(sorted_demo_keys(dataset.file["data"])))
        except (OSError, RuntimeError, KeyError) as e:  # HDF5's reaction to a truncated or overwritten file
            raise DatasetError(f"{path}: unreadable at demo {key} ({e}): the file is truncated or damaged") from e
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
