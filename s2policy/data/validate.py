"""Check a robomimic-format file thoroughly and report every problem in one DatasetError."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from ..errors import DatasetError
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
    """Raise one DatasetError listing every problem (file, demo and key named) or return None for a good file.

    Checks: HDF5 with /data, at least one demo, each demo non-empty with float (T, A) actions in [-1, 1], every
    per-step array (states, rewards, dones, obs/*, next_obs/*) of length num_samples, images uint8 (T, H, W, 3),
    and the filter key (if given) present in mask/.
    """
    path = Path(path)
    with open_dataset(path, filter_key=filter_key) as dataset:
        if not dataset.demo_keys:
            raise DatasetError(f"{path}: /data holds no demos")
        problems = []
        for key in dataset.demo_keys:
            problems += _check_demo(dataset.demo_group(key), key)
        _ = dataset.env_args  # raises on malformed JSON
    if problems:
        listed = "\n  ".join(problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise DatasetError(f"{path}: {len(problems)} problem(s):\n  {listed}{more}")
