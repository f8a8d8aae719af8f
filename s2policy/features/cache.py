"""On-disk cache of frozen S2 features, computed once per (dataset content, encoder + S2 config, camera, dtype).

Layout: `<cache_root>/<camera>-<key16>/` holding `part-<rank>-of-<world>.h5` files (one per extracting process;
`data/<demo>` = (T, D) embeddings, optional `maps/<demo>` = (T, ...) merged token maps) and `manifest.json`, written
atomically last: a folder without a manifest is an unfinished extraction, resumed demo by demo on the next call. The
folder name is derived from the key, so a change in any input selects another folder: a cache is never stale.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import open_dataset
from ..device import autocast, select_device
from ..errors import CheckpointError, ConfigError
from ..fileio import atomic_write_text
from ..distributed import barrier, rank_and_world
from .identity import encoder_identity
from .fingerprint import dataset_fingerprint
from .frames import FrameSource, frames_to_tensor, image_key, iter_frame_batches, resolve_frame_source

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
_DTYPES = {"float16": np.float16, "float32": np.float32}


def feature_cache_key(
    dataset_fp: str,
    encoder_id: dict[str, Any],
    camera: str,
    frame_shape: tuple[int, int],
    source_kind: str,
    dtype: str,
    store_maps: bool,
) -> tuple[str, dict[str, Any]]:
    """sha256 key of every input that determines cached features, and the inputs themselves (kept in the manifest
    so a user can see why two caches differ)."""
    if dtype not in _DTYPES:
        raise ConfigError(f"features.dtype={dtype!r}: expected one of {list(_DTYPES)}")
    inputs = {
        "format": CACHE_FORMAT,
        "dataset": dataset_fp,
        "encoder": encoder_id,
        "camera": camera,
        "frame_shape": list(frame_shape),
        "frame_source": source_kind,
        "dtype": dtype,
        "store_maps": bool(store_maps),
    }
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest(), inputs


class FeatureCache:
    """Read side of a finished cache: `embeddings(demo) -> (T, D)`, `maps(demo) -> (T, ...)`."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        manifest = self.folder / "manifest.json"
        if not manifest.is_file():
            raise CheckpointError(f"feature cache {self.folder} is unfinished or missing (no manifest.json)")
        self.manifest = json.loads(manifest.read_text())
        self.key: str = self.manifest["key"]
        self.dim: int = int(self.manifest["dim"])
        self.demo_lengths: dict[str, int] = self.manifest["lengths"]
        self._parts: dict[str, h5py.File] = {}

    @property
    def demos(self) -> list[str]:
        return list(self.demo_lengths)

    def _file(self, demo: str) -> h5py.File:
        part = self.manifest["demos"].get(demo)
        if part is None:
            raise KeyError(f"feature cache {self.folder} has no demo {demo!r}")
        if part not in self._parts:
            self._parts[part] = h5py.File(self.folder / part, "r")
        return self._parts[part]

    def embeddings(self, demo: str) -> np.ndarray:
        """(T, D) canonical S2 embeddings of one demo's frames, in the cache dtype."""
        return self._file(demo)[f"data/{demo}"][()]

    def maps(self, demo: str) -> np.ndarray:
        """(T, ...) merged spatial token maps of one demo (only if extracted with store_maps=True)."""
        f = self._file(demo)
        if f"maps/{demo}" not in f:
            raise KeyError(f"feature cache {self.folder} was built without spatial maps (features.store_maps=true)")
        return f[f"maps/{demo}"][()]

    def close(self) -> None:
        for f in self._parts.values():
            f.close()
        self._parts.clear()

    def __enter__(self) -> "FeatureCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class ExtractionStats:
    """What one `build_feature_cache` call did (frames encoded now; zero when the cache was reused)."""

    frames: int = 0
    seconds: float = 0.0
    reused: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def _demo_lengths(source: FrameSource) -> dict[str, int]:
    with open_dataset(source.path) as ds:
        what = f"obs/{image_key(source.camera)}" if source.kind == "stored" else "states"
        return {d: int(ds.demo_group(d)[what].shape[0]) for d in ds.demo_keys}


def _open_part(path: Path, key: str) -> h5py.File:
    """Open (or start) a part file for appending; a part from another key or a corrupt one is started afresh."""
    if path.exists():
        try:
            f = h5py.File(path, "a")
            if f.attrs.get("key") == key:
                return f
            f.close()
        except OSError:  # killed mid-write: HDF5 metadata can be damaged; the demos in it are recomputed
            log.warning("discarding unreadable partial feature cache %s", path)
        path.unlink()
    f = h5py.File(path, "w")
    f.attrs["key"] = key
    return f


def _encode(s2_encoder: Any, frames: np.ndarray, device: torch.device, precision: str, maps: bool):
    x = frames_to_tensor(frames, device)
    with torch.inference_mode(), autocast(device, precision):
        emb = s2_encoder.embed(x).float()
        fmap = s2_encoder.feature_map(x).float() if maps else None
    return emb.cpu().numpy(), (fmap.cpu().numpy() if fmap is not None else None)


def _extract_part(
    s2_encoder: Any,
    source: FrameSource,
    demos: Sequence[str],
    lengths: dict[str, int],
    part_path: Path,
    key: str,
    dtype: str,
    store_maps: bool,
    batch_size: int,
    device: torch.device,
    precision: str,
    progress: bool,
) -> int:
    """Encode `demos` into `part_path`, skipping demos a previous (interrupted) run finished. Returns frames encoded."""
    np_dtype = _DTYPES[dtype]
    encoded = 0
    with _open_part(part_path, key) as f:
        data, maps = f.require_group("data"), f.require_group("maps")
        for demo in list(data.keys()):
            if not data[demo].attrs.get("complete", False):
                del data[demo]
                if demo in maps:
                    del maps[demo]
        todo = [d for d in demos if d not in data]
        total = sum(lengths[d] for d in todo)
        if len(todo) < len(demos):
            log.info("resuming feature extraction in %s: %d of %d demos already done", part_path, len(demos) - len(todo), len(demos))
        written = {d: 0 for d in todo}
        bar = tqdm(total=total, unit="frame", desc=f"features {source.camera}", disable=not progress or total == 0)
        with bar:
            for batch in iter_frame_batches(source, todo, batch_size):
                emb, fmap = _encode(s2_encoder, batch.frames, device, precision, store_maps)
                row = 0
                for demo, t0, n in batch.pieces:
                    if demo not in data:
                        data.create_dataset(demo, shape=(lengths[demo], emb.shape[1]), dtype=np_dtype)
                        if store_maps:
                            maps.create_dataset(demo, shape=(lengths[demo], *fmap.shape[1:]), dtype=np_dtype)
                    data[demo][t0 : t0 + n] = emb[row : row + n]
                    if store_maps:
                        maps[demo][t0 : t0 + n] = fmap[row : row + n]
                    row += n
                    written[demo] += n
                    if written[demo] == lengths[demo]:
                        data[demo].attrs["complete"] = True  # a demo counts as cached only once fully written
                        f.flush()
                encoded += len(batch.frames)
                bar.update(len(batch.frames))
    with open(part_path, "rb+") as fh:
        os.fsync(fh.fileno())
    return encoded


def cache_folder(cache_root: str | Path, camera: str, key: str) -> Path:
    return Path(cache_root) / f"{camera}-{key[:16]}"


def default_cache_root(dataset_path: str | Path) -> Path:
    """Caches live beside their dataset (`demos.hdf5` -> `demos.hdf5.features/`) so deleting both is one `rm`."""
    p = Path(dataset_path)
    return p.parent / f"{p.name}.features"


def build_feature_cache(
    dataset_path: str | Path,
    camera: str,
    s2_encoder: Any,
    *,
    camera_size: int | None = None,
    source: str = "auto",
    dtype: str = "float16",
    store_maps: bool = False,
    cache_root: str | Path | None = None,
    batch_size: int = 32,
    device: str | torch.device = "auto",
    precision: str = "auto",
    progress: bool = False,
) -> tuple[FeatureCache, ExtractionStats]:
    """Return the cache of `camera`'s S2 features for `dataset_path`, extracting (or finishing) it if needed.

    Under torchrun every process encodes its share of the demos (demo i goes to rank i % world) and rank 0 writes the
    manifest; all ranks must call this. Memory stays bounded by a few batches whatever the dataset size.
    """
    device = select_device(device)
    native = getattr(getattr(s2_encoder, "encoder", None), "native_size", None)
    src = resolve_frame_source(dataset_path, camera, camera_size, source, native_size=native)
    root = Path(cache_root) if cache_root is not None else default_cache_root(dataset_path)
    root.mkdir(parents=True, exist_ok=True)
    key, inputs = feature_cache_key(
        dataset_fingerprint(src, root), encoder_identity(s2_encoder), camera, src.frame_shape, src.kind, dtype, store_maps
    )
    folder = cache_folder(root, camera, key)
    stats = ExtractionStats()
    if _manifest_matches(folder, key):
        stats.reused = True
        log.info("reusing feature cache %s", folder)
        return FeatureCache(folder), stats

    rank, world = rank_and_world()
    folder.mkdir(parents=True, exist_ok=True)
    lengths = _demo_lengths(src)
    demos = list(lengths)
    parts = {d: f"part-{i % world}-of-{world}.h5" for i, d in enumerate(demos)}
    mine = [d for i, d in enumerate(demos) if i % world == rank]
    s2_encoder = s2_encoder.to(device).eval()
    t0 = time.perf_counter()
    stats.frames = _extract_part(
        s2_encoder, src, mine, lengths, folder / f"part-{rank}-of-{world}.h5", key, dtype, store_maps,
        batch_size, device, precision, progress,
    )
    stats.seconds = time.perf_counter() - t0
    barrier()
    if rank == 0:
        with h5py.File(folder / parts[demos[0]], "r") as f:
            dim = int(f[f"data/{demos[0]}"].shape[1])
        manifest = {"key": key, "inputs": inputs, "dim": dim, "dtype": dtype, "lengths": lengths, "demos": parts}
        atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=1))
        log.info("feature cache %s: %d frames in %.1fs", folder, stats.frames, stats.seconds)
    barrier()
    return FeatureCache(folder), stats


def _manifest_matches(folder: Path, key: str) -> bool:
    with contextlib.suppress(OSError, ValueError):
        return json.loads((folder / "manifest.json").read_text()).get("key") == key
    return False
