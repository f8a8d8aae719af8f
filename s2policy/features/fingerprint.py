"""Content fingerprints of a demonstration dataset: what part of it a camera's features depend on.

Hashing a large dataset on every run would be slow, so the result is memoised per modification stamp (path, size,
mtime_ns, inode of its files): any write changes mtime_ns and forces a re-hash, the same rule make and git use.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from ..data import DemoDataset, open_episodes
from ..errors import ConfigError
from ..fileio import atomic_write_text
from .frames import FrameSource

log = logging.getLogger(__name__)


def compute_fingerprint(source: FrameSource) -> str:
    """sha256 over the episode names and the data the camera's frames come from: the stored frames (images, or the
    video files), or (re-rendering) the states, model files and env_args."""
    h = hashlib.sha256()
    with open_episodes(source.path) as ds:
        h.update(f"{source.kind}|{ds.episodes}|".encode())
        if source.kind == "stored":
            ds.hash_frames(h, source.camera)
        elif isinstance(ds, DemoDataset):
            ds.hash_render_inputs(h)
        else:
            raise ConfigError(f"{source.path}: frames can only be re-rendered from robomimic files with states")
    return h.hexdigest()


def dataset_fingerprint(source: FrameSource, memo_dir: Path | None = None) -> str:
    """`compute_fingerprint`, memoised in `memo_dir/fingerprints.json` by the dataset's modification stamp (size,
    mtime_ns and inode of its files)."""
    with open_episodes(source.path) as ds:
        stamp = ds.modification_stamp()
    memo_key = f"{stamp}|{source.kind}|{source.camera}"
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
