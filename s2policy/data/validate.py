"""Check a robomimic-format file thoroughly and report every problem in one DatasetError."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from ..errors import DatasetError
from .reader import OPTIONAL_ARRAYS, open_dataset, sorted_demo_keys

#: Actions may overshoot [-1, 1] by float rounding only.
ACTION_TOLERANCE = 1e-6
#: Problems listed in the error message before "... and N more".
MAX_LISTED = 10


def _check_demo(group: h5py.Group, key: str, reference: dict[str, tuple] | None) -> list[str]:
    """Problems of one demo, each naming demo and key. `reference`: per-step (dtype kind, shape) of every array in
    the first demo, which every other demo must match (a reader stacks them)."""
    where = f"demo {key}"
    if "actions" not in group or not isinstance(group["actions"], h5py.Dataset):
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
        problems.append(f"{where}, key 'actions': {_nonfinite(values)}")
    elif np.abs(values).max() > 1 + ACTION_TOLERANCE:
        problems.append(
            f"{where}, key 'actions': values outside [-1, 1] (min {values.min():.4g}, max {values.max():.4g})"
        )
    for name in OPTIONAL_ARRAYS:
        if name in group:
            problems += _check_low_dim(group[name], f"{where}, key '{name}'", length)
    for obs_group_name in ("obs", "next_obs"):
        for obs_key, ds in group.get(obs_group_name, {}).items():
            problems += _check_obs(ds, f"{where}, key '{obs_group_name}/{obs_key}'", length)
    if reference is not None:
        problems += _check_matches(group, where, reference)
    return problems


def _nonfinite(values: np.ndarray) -> str:
    """'NaN/inf at step(s) [3, 7] (2 values)' for a (T, ...) array."""
    bad = ~np.isfinite(values)
    steps = np.flatnonzero(bad.reshape(len(values), -1).any(axis=1))
    listed = steps[:5].tolist()
    return f"NaN/inf at step(s) {listed}{' ...' if len(steps) > 5 else ''} ({int(bad.sum())} values)"


def _check_low_dim(ds: h5py.Dataset, where: str, length: int) -> list[str]:
    """Length num_samples; finite when floating point (read in full: low-dim arrays are small)."""
    if not isinstance(ds, h5py.Dataset):
        return [f"{where}: expected an array, found a group"]
    if ds.shape[:1] != (length,):
        return [f"{where}: length {ds.shape[:1]} != num_samples {length}"]
    if np.issubdtype(ds.dtype, np.floating):
        values = ds[()]
        if not np.all(np.isfinite(values)):
            return [f"{where}: {_nonfinite(values)}"]
    return []


def _check_obs(ds: h5py.Dataset, where: str, length: int) -> list[str]:
    """Images: dtype and shape from the metadata only (never read); low-dim arrays as in `_check_low_dim`."""
    if not isinstance(ds, h5py.Dataset):
        return [f"{where}: expected an array, found a group"]
    if ds.shape[:1] != (length,):
        return [f"{where}: length {ds.shape[:1]} != num_samples {length}"]
    looks_like_image = ds.ndim >= 3 or ds.dtype == np.uint8
    if looks_like_image:
        if not (ds.dtype == np.uint8 and ds.ndim == 4 and ds.shape[-1] == 3):
            return [f"{where}: images must be uint8 (T, H, W, 3), got {ds.dtype} {ds.shape}"]
        return []
    if not (np.issubdtype(ds.dtype, np.number) or ds.dtype == np.bool_):
        return [f"{where}: expected numbers, got dtype {ds.dtype}"]
    return _check_low_dim(ds, where, length)


def _per_step_layout(group: h5py.Group) -> dict[str, tuple]:
    """name -> (dtype kind, per-step shape) of the demo's arrays that readers stack across demos."""
    layout = {}
    for name in ("actions", *(f"{g}/{k}" for g in ("obs", "next_obs") for k in group.get(g, {}))):
        ds = group.get(name)
        if isinstance(ds, h5py.Dataset):
            layout[name] = (ds.dtype.kind, ds.shape[1:])
    return layout


def _check_matches(group: h5py.Group, where: str, reference: dict[str, tuple]) -> list[str]:
    layout = _per_step_layout(group)
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
    """Raise one DatasetError listing every problem (file, demo and key named) or return None for a good file.

    Checks: HDF5 with /data, at least one demo, each demo non-empty with float (T, A) actions in [-1, 1]; every
    per-step array (states, rewards, dones, obs/*, next_obs/*) of length num_samples; actions and floating-point
    low-dim arrays finite; images uint8 (T, H, W, 3) (from metadata: images are never read); every demo with the
    first demo's keys, per-step shapes and dtype kinds; every filter key in mask/ a non-empty list of existing demos;
    env_args valid JSON; and `filter_key` (if given) present in mask/.
    """
    path = Path(path)
    with open_dataset(path, filter_key=filter_key) as dataset:
        if not dataset.demo_keys:
            raise DatasetError(f"{path}: /data holds no demos")
        problems = []
        reference = None
        key = "(file structure)"
        try:
            for key in dataset.demo_keys:
                group = dataset.demo_group(key)
                found = _check_demo(group, key, reference)
                problems += found
                if reference is None and not found:
                    reference = _per_step_layout(group)
            problems += _check_masks(dataset.file, set(sorted_demo_keys(dataset.file["data"])))
        except (OSError, RuntimeError, KeyError) as e:  # HDF5's reaction to a truncated or overwritten file
            raise DatasetError(f"{path}: unreadable at demo {key} ({e}): the file is truncated or damaged") from e
        _ = dataset.env_args  # raises on malformed JSON
    if problems:
        listed = "\n  ".join(problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise DatasetError(f"{path}: {len(problems)} problem(s):\n  {listed}{more}")
