"""Content fingerprints of a demonstration file: what part of it a camera's features depend on.

Hashing a large file on every run would be slow, so the result is memoised per (path, size, mtime_ns, inode): any
write to the file changes mtime_ns and forces a re-hash, the same rule make and git use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import h5py
import numpy as np

from ..data import open_dataset
from ..data.reader import read_rows
from ..fileio import atomic_write_text
from .frames import FrameSource, image_key

log = logging.getLogger(__name__)

_CHUNK_FRAMES = 64


def _hash_dataset(h: "hashlib._Hash", ds: h5py.Dataset, path: Path) -> None:
    h.update(f"{ds.name}|{ds.dtype}|{ds.shape}|".encode())
    step = _CHUNK_FRAMES if ds.ndim else 1
    if ds.ndim == 0:
        h.update(np.asarray(ds[()]).tobytes())
        return
    for i in range(0, ds.shape[0], step):
        h.update(np.ascontiguousarray(read_rows(ds, i, i + step, path)).tobytes())


def compute_fingerprint(source: FrameSource) -> str:
    """sha256 over the demo keys and the data the camera's frames come from: the stored images, or (re-rendering)
    the states, model files and env_args."""
    h = hashlib.sha256()
    with open_dataset(source.path) as ds:
        h.update(f"{source.kind}|{ds.demo_keys}|".encode())
        if source.kind == "render":
            h.update(json.dumps(ds.env_args, sort_keys=True).encode())
        for demo in ds.demo_keys:
            g = ds.demo_group(demo)
            if source.kind == "stored":
                _hash_dataset(h, g[f"obs/{image_key(source.camera)}"], source.path)
            else:
                _hash_dataset(h, g["states"], source.path)
                h.update(str(g.attrs.get("model_file", "")).encode())
    return h.hexdigest()


def dataset_fingerprint(source: FrameSource, memo_dir: Path | None = None) -> str:
    """`compute_fingerprint`, memoised in `memo_dir/fingerprints.json` by the file's (path, size, mtime_ns, inode)."""
    st = os.stat(source.path)
    memo_key = f"{Path(source.path).resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{source.kind}|{source.camera}"
    memo_file = Path(memo_dir) / "fingerprints.json" if memo_dir is not None else None
    memo: dict[str, str] = {}
    if memo_file is not None and memo_file.is_file():
        try:
            memo = json.loads(memo_file.read_text())
        except (OSError, ValueError):
            memo = {}
        if memo_key in memo:
            return memo[memo_key]
    log.info("fingerprinting %s (%s frames of %s)", source.path, source.kind, source.camera)
    fp = compute_fingerprint(source)
    if memo_file is not None:
        memo[memo_key] = fp
        try:
            atomic_write_text(memo_file, json.dumps(memo, indent=1, sort_keys=True))
        except OSError as e:  # a read-only cache folder only costs a re-hash next time
            log.warning("cannot write fingerprint memo %s: %s", memo_file, e)
    return fp
