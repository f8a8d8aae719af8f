"""Check a dataset (robomimic file or LeRobot folder) thoroughly and report every problem in one DatasetError."""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from ..errors import DatasetError
from .episodes import is_lerobot_path
from .reader import OPTIONAL_ARRAYS, demo_names, open_dataset, sorted_demo_keys

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .lerobot import LeRobotReader

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
    if shape[1] == 0:
        return [f"{where}, key 'actions': no action dimension (shape {shape})"], {}
    length = group.attrs.get("num_samples", shape[0])
    if not (np.ndim(length) == 0 and np.issubdtype(np.asarray(length).dtype, np.integer) and length >= 0):
        return [f"{where}: attr num_samples must be a non-negative integer, got {length!r}"], {}
    length = int(length)
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
        obs_group = group.get(obs_group_name, {})
        if not isinstance(obs_group, (h5py.Group, dict)):
            problems.append(f"{where}, key '{obs_group_name}': expected a group of observation arrays, found "
                            f"{_kind(obs_group)}")
            continue
        for obs_key, ds in obs_group.items():
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
    """Length num_samples. Camera frames (obs keys `*_image`, or uint8 arrays of >= 3 dims; when allowed): uint8
    (T, H, W, 3), from the metadata only, never read. Other per-pixel maps (>= 4 dims: depth (T, H, W, 1) float,
    segmentation, as newer robomimic versions store them): numbers, not read. Anything else: numbers, finite when
    floating point (read in full: low-dim arrays are small; uint8 ones such as flags included)."""
    if not isinstance(ds, h5py.Dataset):
        return [f"{where}: expected an array, found {_kind(ds)}"]
    dtype, shape = ds.dtype, ds.shape
    if shape[:1] != (length,):
        return [f"{where}: length {shape[:1]} != num_samples {length}"]
    if image_allowed and (ds.name.endswith("_image") or (dtype == np.uint8 and len(shape) >= 3)):
        if not (dtype == np.uint8 and len(shape) == 4 and shape[-1] == 3):
            return [f"{where}: images must be uint8 (T, H, W, 3), got {dtype} {shape}"]
        if min(shape[1:3]) == 0:
            return [f"{where}: images of no pixels, shape {shape}"]
        return []
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        return [f"{where}: expected numbers, got dtype {dtype}"]
    if np.issubdtype(dtype, np.floating) and not (image_allowed and len(shape) >= 4):
        values = ds[()]
        if not np.all(np.isfinite(values)):
            return [f"{where}: {_nonfinite(values)}"]
    return []


def _kind(obj: object) -> str:
    """How an HDF5 member that is not what was expected reads in a message."""
    if isinstance(obj, h5py.Group):
        return "a group"
    if isinstance(obj, h5py.Dataset):
        return f"an array {obj.dtype} {obj.shape}"
    return "a broken link" if obj is None else type(obj).__name__


def _check_data_group(data: h5py.Group) -> list[str]:
    """/data holds only demo groups (robomimic's SequenceDataset opens every member as a demo). A `total` attr that
    is not the sum of their num_samples (demos removed or cut after writing) is only warned about: nothing reads it,
    and other tools keep files with a stale one."""
    problems = [f"/data/{name}: expected a demo group, found {_kind(data.get(name))}" for name in data
                if not isinstance(data.get(name), h5py.Group)]
    if "total" in data.attrs:
        total, lengths = data.attrs["total"], [g.attrs.get("num_samples") for g in data.values()
                                               if isinstance(g, h5py.Group)]
        if all(np.ndim(n) == 0 and np.issubdtype(np.asarray(n).dtype, np.integer) for n in lengths):
            if np.ndim(total) != 0 or int(total) != sum(int(n) for n in lengths):
                log.warning("%s: /data attr total %r != %d, the sum of the demos' num_samples (demos removed or cut "
                            "after the file was written?); it is not used", data.file.filename, total,
                            sum(int(n) for n in lengths))
    return problems


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
    """Every filter key (mask/<name>): a 1-D array of demo names, non-empty, each once, naming demos present in /data.
    mask/train and mask/valid sharing demos is warned about (validation on training demos hides overfitting), not
    refused: it may be meant."""
    masks = file.get("mask")
    if masks is None:
        return []
    if not isinstance(masks, h5py.Group):
        return ["'mask' is not a group of filter keys"]
    problems, selected = [], {}
    for name, ds in masks.items():
        where = f"filter key mask/{name}"
        if not isinstance(ds, h5py.Dataset) or ds.ndim != 1 or ds.dtype.kind not in "SUO":
            problems.append(f"{where}: expected a 1-D array of demo names (byte strings)")
            continue
        listed = demo_names(ds)
        names = selected[name] = set(listed)
        if not names:
            problems.append(f"{where}: empty (names no demo)")
        repeated = sorted_demo_keys(k for k, n in Counter(listed).items() if n > 1)
        if repeated:  # a demo listed twice would be sampled twice as often
            problems.append(f"{where}: names demos more than once: {repeated[:5]}")
        missing = sorted(names - demo_keys)
        if missing:
            problems.append(f"{where}: names demos not in /data: {missing[:5]}")
    both = sorted_demo_keys(selected.get("train", set()) & selected.get("valid", set()))
    if both:
        log.warning("%s: filter keys mask/train and mask/valid share demos: %s", file.filename, both[:5])
    return problems


def validate(path: str | os.PathLike, filter_key: str | None = None) -> None:
    """Raise one DatasetError listing every problem (file, episode and key named) or return None for a good dataset.

    A folder is checked as a LeRobot dataset (see `validate_lerobot`). A robomimic file is checked for: HDF5 with
    /data, at least one demo, each demo non-empty with float (T, A) actions in [-1, 1]; every per-step array
    (states, rewards, dones, obs/*, next_obs/*) of length num_samples; actions and floating-point low-dim arrays
    finite; images uint8 (T, H, W, 3) (from metadata: images are never read); every demo with the first demo's keys,
    per-step shapes and dtype kinds; /data holding only demo groups, its `total` the sum of num_samples; every filter
    key in mask/ a non-empty list of distinct existing demos, train and valid disjoint; env_args a JSON object; and
    `filter_key` (if given) present in mask/.
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
            problems += _check_data_group(dataset.file["data"])
            problems += _check_masks(dataset.file, set(sorted_demo_keys(dataset.file["data"])))
        except (OSError, RuntimeError, KeyError) as e:  # HDF5's reaction to a truncated or overwritten file
            raise DatasetError(f"{path}: unreadable at demo {key} ({e}): the file is truncated or damaged") from e
        _ = dataset.env_args  # raises on malformed JSON
    _raise_problems(path, problems)


def _raise_problems(path: Path, problems: list[str]) -> None:
    problems = list(dict.fromkeys(problems))  # one damaged file shared by many episodes is listed once
    if problems:
        listed = "\n  ".join(problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise DatasetError(f"{path}: {len(problems)} problem(s):\n  {listed}{more}")


def _check_episode_totals(reader: LeRobotReader, info_file: Path) -> list[str]:
    """Episode indices 0..N-1 (LeRobot's loader finds an episode's metadata by its index) and info.json's
    total_episodes / total_frames equal to what the episode metadata holds (a dropped row or line shows here)."""
    indices = [reader.episode(name).index for name in reader.episodes]
    problems = []
    if indices != list(range(len(indices))):
        gaps = sorted(set(range(max(indices) + 1)) - set(indices))
        problems.append(f"episode metadata: episode_index must run 0..{len(indices) - 1}, got {indices[:8]}"
                        f"{' ...' if len(indices) > 8 else ''} (missing {gaps[:5]})")
    found = {"total_episodes": len(indices), "total_frames": sum(map(reader.episode_length, reader.episodes))}
    for key, count in found.items():
        recorded = reader.info.get(key)
        if isinstance(recorded, int) and recorded != count:
            problems.append(f"{info_file.name}: {key} {recorded} != {count} in the episode metadata "
                            "(an incomplete copy, or metadata edited by hand)")
    return problems


def _check_image_cells(reader: LeRobotReader) -> list[str]:
    """Every cell of every image feature: an image present (bytes, or a file its path names) whose header gives the
    declared size and channel count. Headers only: a damaged pixel stream is found when frames are decoded. The first
    problem of each episode and feature is listed."""
    from .lerobot_images import cell_bytes, check_image

    problems = []
    for feature in reader.image_features:  # cameras and the others (depth maps, grey images) alike
        shape, channels = reader.declared_image(feature)
        for ep in (reader.episode(n) for n in reader.episodes):
            try:
                for t, (data, image_path) in enumerate(zip(*reader.image_cells(ep, feature))):
                    where = (f"{ep.data_file.relative_to(reader.path)}: episode {ep.index}, frame {t}, "
                             f"feature {feature!r}")
                    check_image(cell_bytes(data, image_path, reader.path, where), shape, channels, where)
            except DatasetError as e:
                problems.append(str(e))
    if reader.image_features:
        log.info("%s: image features %s checked by their image headers (presence, size, channels); their pixel data "
                 "is decoded and checked when frames are read (building the feature cache)", reader.path,
                 reader.image_features)
    return problems


def validate_lerobot(path: str | os.PathLike) -> None:
    """Check a LeRobot dataset folder without decoding any frame (one DatasetError listing every problem).

    On open (each its own error): meta/info.json a readable JSON object, supported codebase_version, positive fps,
    one fps for every camera, episode metadata readable with each episode_index once. Then: episode indices 0..N-1
    and info.json's totals matching them; every episode's Parquet rows match its length, frame_index 0..T-1,
    timestamps frame_index / fps, finite actions and low-dimensional observations; every video file whole (MP4 box
    sizes), its stream at the dataset's fps and frame size declared in info.json, holding at least the frames its
    episodes' rows need; every image-feature cell holding an image (bytes, or a file its path names) whose header
    gives the declared size and channel count (headers only: a damaged pixel stream is found when frames are decoded,
    before any training). Actions may lie outside [-1, 1] (LeRobot stores raw joint positions or poses; training
    normalises from the data).
    """
    from .lerobot import ACTION_FEATURE, INFO_FILE, LeRobotReader
    from .video import mp4_problem, stream_info

    path = Path(path)
    problems: list[str] = []
    with LeRobotReader(path) as reader:
        problems += _check_episode_totals(reader, path / INFO_FILE)
        for name in reader.episodes:
            try:
                actions = reader.read_actions(name)
            except DatasetError as e:
                problems.append(str(e))
                continue
            if not np.all(np.isfinite(actions)):
                problems.append(f"episode {name}, feature {ACTION_FEATURE!r}: {_nonfinite(actions)}")
            for key, values in reader.read_lowdim(name, reader.lowdim_keys).items():
                if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
                    problems.append(f"episode {name}, key {key!r}: {_nonfinite(values)}")
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
            damaged = mp4_problem(video)
            if damaged:
                problems.append(f"{video.relative_to(path)}: {damaged}")
                continue
            fps, frames, size = stream_info(video)
            declared = reader.frame_shape(feature)
            if declared is not None and tuple(declared) != tuple(size):  # what the cache key and evaluation assume
                problems.append(f"{video.relative_to(path)}: frames of {size[0]}x{size[1]} (H x W), but meta/info.json "
                                f"declares {feature} {declared[0]}x{declared[1]}")
            rates.setdefault(feature, set()).add(round(fps, 3))
            if frames is not None and frames < end:
                problems.append(f"{video.relative_to(path)}: {frames} frames but episode {episode} needs {end} "
                                "(video shorter than its Parquet rows)")
        if any(r != {round(reader.fps, 3)} for r in rates.values()):
            listed = ", ".join(f"{k} {'/'.join(f'{r:g}' for r in sorted(v))}" for k, v in sorted(rates.items()))
            problems.append(f"cameras have mismatched fps ({listed}; dataset fps {reader.fps:g})")
        problems += _check_image_cells(reader)
    _raise_problems(path, problems)
