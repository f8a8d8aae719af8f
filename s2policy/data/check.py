"""The one dataset check every stage runs before expensive work (feature extraction, training, evaluation that reads
demos): `check_dataset(path)` returns for a usable file and raises one DatasetError naming file, demo and key.

`validate` dispatches on the format (robomimic HDF5 file or LeRobot folder). CLI: `python -m s2policy.data validate`.
"""

from __future__ import annotations

import logging
import os
import time

from .validate import validate

log = logging.getLogger(__name__)


def check_dataset(path: str | os.PathLike) -> None:
    """Structure, dtypes, shapes, lengths, finiteness of actions and low-dim observations, image dtype/shape (from
    metadata), filter keys. Cheap enough to run on every start (docs/data_integrity.md has the measured cost)."""
    start = time.perf_counter()
    validate(path)
    log.info("checked dataset %s in %.2fs", path, time.perf_counter() - start)

