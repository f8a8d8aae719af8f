"""The one dataset check every stage runs before expensive work (feature extraction, training, evaluation that reads
demos): `check_dataset(path)` returns for a usable file and raises one DatasetError naming file, demo and key.

Formats plug in here: today robomimic HDF5 (validate.py); another reader adds its own check beside it.
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


def main(argv: list[str] | None = None) -> int:
    """`python -m s2policy.data FILE...`: check datasets without training; exit 2 on the first bad one."""
    import argparse
    import sys

    from ..errors import S2PolicyError

    parser = argparse.ArgumentParser(prog="python -m s2policy.data", description=main.__doc__)
    parser.add_argument("files", nargs="+", help="robomimic-format HDF5 files")
    args = parser.parse_args(argv)
    for path in args.files:
        try:
            check_dataset(path)
        except S2PolicyError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"ok: {path}")
    return 0
