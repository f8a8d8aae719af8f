"""The one way a run gets its demonstrations: the dataset it was given, or scripted-expert demos collected once."""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import CollectConfig, TaskConfig
from ..errors import ConfigError
from .check import check_dataset

log = logging.getLogger(__name__)


def ensure_dataset(dataset: str | None, default: Path, task: TaskConfig, collect: CollectConfig,
                   progress: bool = True, collect_here: bool = True) -> Path:
    """`dataset` (a robomimic .hdf5 file or a LeRobot dataset folder; it must exist), or `default`: demos of `task`
    collected there by its scripted expert when the file is absent, reused when present. `collect_here=False`
    (torchrun ranks other than 0, a study before its collect stage) only returns the path.

    Whatever dataset is chosen is checked by `check_dataset` once it exists, before any stage reads it (one
    DatasetError naming file, episode and key). Demos are collected with the task's knobs (`task.variation` with
    `collect.variation` on top, checked before any work), at `collect.camera_size` (else `task.camera_size`, else
    224) for the task's cameras; a run that sees no image (encoder=none) still stores the task's default camera,
    because the file is shared between runs.
    """
    if dataset:
        path = Path(dataset)
        if not path.exists():  # a LeRobot dataset is a folder
            raise ConfigError(f"dataset={path}: not found (a robomimic .hdf5 file or a LeRobot dataset folder; "
                              "leave dataset unset to collect demos for the task)")
        check_dataset(path)
        return path
    import envs

    variation = envs.task_variation(task.name, task.variation, collect.variation)  # a bad knob fails before work
    if collect_here and not default.is_file():
        log.info("no dataset given: collecting %d %s demos into %s", collect.num_demos, task.name, default)
        summary = envs.collect_demos(task.name, collect.num_demos, str(default),
                                     camera_size=collect.camera_size or task.camera_size or 224,
                                     cameras=list(task.cameras) or None, seed=collect.seed, workers=collect.workers,
                                     progress=progress, **variation)
        log.info("collected %s", summary)
    if default.is_file():
        check_dataset(default)
    return default


def default_dataset_path(task: TaskConfig, collect: CollectConfig) -> Path:
    """Where a training run without a dataset keeps its collected demos (shared by runs with the same settings)."""
    size = collect.camera_size or task.camera_size or 224
    return Path(collect.output or f"data/{task.name}_{collect.num_demos}demos_{size}px_seed{collect.seed}.hdf5")
