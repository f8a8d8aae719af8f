"""The one dataset check every stage runs before expensive work (feature extraction, training, evaluation that reads
demos): `check_dataset(path)` returns for a usable file and raises one DatasetError naming file, demo and key.

Both formats are checked by `validate` (robomimic HDF5 files; LeRobot folders via `validate_lerobot`), without
reading any image or decoding any video. `python -m s2policy.data validate <dataset>` runs it from the shell.
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

