"""Merged S2 feature maps for spatial heads: the per-camera map, and an on-disk map cache that training streams.

A map is far larger than a pooled embedding (EfficientNet-Lite0 at 224 + 448: 2560 x 7 x 7 values on the base grid,
2560 x 14 x 14 on the largest), so the map cache is built to be read, not loaded:
- one folder per (dataset content, encoder + S2 config, camera, frame shape, frame source, map shape -- the grid),
  `<cache_root>/<camera>-maps-<key16>/`, so a change in any of them selects another folder;
- float16 rows, one frame per row, (C, h, w) C-order, concatenated demo after demo in `part-<rank>-of-<world>.f16`
  (one part per extracting process); `manifest.json` (written atomically last) maps every demo to (part, first row);
- training reads exactly the rows of a batch with positional reads (`os.pread`): the process never maps or holds the
  table, so its memory is the batch, whatever the dataset size (the OS page cache may keep hot rows, outside the
  process). A killed extraction resumes after the last demo it finished (`part-*.progress.json`);
- every demo's rows carry a sha256 in the manifest, verified whenever the cache is opened for a run: rows damaged on
  disk are re-extracted in place, never trained on. Two processes building one cache take turns (a lock).
Values that do not fit float16 (|x| > 65504) stop the extraction with an error instead of being stored as inf.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..device import autocast
from ..distributed import barrier, rank_and_world
from ..errors import CheckpointError, ConfigError, DatasetError
from ..fileio import atomic_write_text, exclusive_lock, raise_if_out_of_space
from .cache import ExtractionStats, _demo_lengths, discard_on_bad_input, prepare_extraction
from .frames import FrameSource, frames_to_tensor, iter_frame_batches

log = logging.getLogger(__name__)

MAP_CACHE_FORMAT = "s2policy.maps/2"  # 2: per-demo sha256 in the manifest, rows written in place
MAP_DTYPE = np.float16


def camera_feature_map(encoder: Any, frames: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) frames in [0, 1] -> the merged S2 map (B, C * n_scales, h, w) of an `S2Encoder`.

    CNN maps are returned as merged. ViT outputs are (B, P + h*w, C*K) tokens: the P prefix (CLS) tokens are dropped
    (they have no position) and the patch tokens are put back on their grid, which is the crop grid of scale
    `resize_output_to_idx` times each crop's token grid (also for non-square frames).
    """
    fmap = encoder.feature_map(frames)
    if encoder.encoder.output_shape == "bchw":
        return fmap
    tokens = fmap[:, int(encoder.encoder.num_prefix_tokens):]
    plan = encoder.plan(tuple(frames.shape[-2:]))[encoder.resize_output_to_idx]
    side = math.isqrt(tokens.shape[1] // plan.num_crops)
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], plan.grid[0] * side, plan.grid[1] * side)


def camera_features(encoder: Any, frames: torch.Tensor, maps: bool, camera: str | None = None,
                    points: torch.Tensor | None = None) -> torch.Tensor:
    """What a head consumes per camera: the pooled embedding (B, D), or the merged map flattened (B, C*h*w).
    `camera`, `points` (B, 3): what a look-closer gripper selector needs (s2policy.look_closer)."""
    if maps:
        return camera_feature_map(encoder, frames).flatten(1)
    from ..look_closer import embed_frames

    return embed_frames(encoder, frames, camera, points)


def map_shape(encoder: Any, frame_shape: tuple[int, int]) -> tuple[int, int, int]:
    """(C, h, w) of `camera_feature_map` for frames of `frame_shape` (H, W), from one forward pass of a blank frame."""
    p = next(encoder.parameters(), None)
    blank = torch.zeros(1, 3, *frame_shape, device=p.device if p is not None else "cpu")
    with torch.inference_mode():
        return tuple(int(v) for v in camera_feature_map(encoder, blank).shape[1:])  # type: ignore[return-value]


def map_cache_key(dataset_fp: str, encoder_id: dict[str, Any], camera: str, frame_shape: tuple[int, int],
                  source_kind: str, shape: Sequence[int]) -> tuple[str, dict[str, Any]]:
    """sha256 key of every input that determines the cached maps, and the inputs (kept in the manifest).

    `shape` is the map's (C, h, w): its grid changes with `s2.resize_output_to_idx` and with the frame shape.
    """
    inputs = {"format": MAP_CACHE_FORMAT, "dataset": dataset_fp, "encoder": encoder_id, "camera": camera,
              "frame_shape": list(frame_shape), "frame_source": source_kind, "dtype": np.dtype(MAP_DTYPE).name,
              "map_shape": [int(v) for v in shape]}
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest(), inputs


def map_cache_folder(cache_root: str | Path, camera: str, key: str) -> Path:
    return Path(cache_root) / f"{camera}-maps-{key[:16]}"


class MapCache:
    """Read side of a finished map cache: `rows(demo, t)` -> float16 (n, C, h, w), read from disk on every call."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        try:
            self.manifest = json.loads((self.folder / "manifest.json").read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"map cache {self.folder} is unfinished or missing (no readable manifest.json)") \
                from e
        self.key: str = self.manifest["key"]
        self.shape: tuple[int, int, int] = tuple(self.manifest["map_shape"])  # type: ignore[assignment]
        self.demo_lengths: dict[str, int] = self.manifest["lengths"]
        self.row_bytes = math.prod(self.shape) * np.dtype(MAP_DTYPE).itemsize
        self._fds: dict[str, int] = {}

    @property
    def demos(self) -> list[str]:
        return list(self.demo_lengths)

    @property
    def dim(self) -> int:
        """Values per frame: C * h * w."""
        return math.prod(self.shape)

    def locate(self, demo: str) -> tuple[int, int]:
        """(file descriptor of the demo's part, byte offset of its first row)."""
        entry = self.manifest["demos"].get(demo)
        if entry is None:
            raise KeyError(f"map cache {self.folder} has no demo {demo!r}")
        part, first_row = entry
        if part not in self._fds:
            self._fds[part] = os.open(self.folder / part, os.O_RDONLY)
        return self._fds[part], first_row * self.row_bytes

    def rows(self, demo: str, steps: Sequence[int] | None = None) -> np.ndarray:
        """float16 (n, C, h, w) maps of `steps` of `demo` (all steps when None)."""
        steps = range(self.demo_lengths[demo]) if steps is None else steps
        fd, base = self.locate(demo)
        out = np.empty((len(steps), *self.shape), MAP_DTYPE)
        for i, t in enumerate(steps):
            read_row(fd, base + int(t) * self.row_bytes, out[i])
        return out

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> MapCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_row(fd: int, offset: int, out: np.ndarray) -> None:
    """Read `out.nbytes` bytes at `offset` of `fd` into the contiguous array `out` (no mapping)."""
    buf = out.reshape(-1).view(np.uint8)
    if hasattr(os, "preadv"):  # straight into the array
        got = os.preadv(fd, [memoryview(buf)], offset)
    else:  # macOS before 11: one extra copy
        data = os.pread(fd, buf.nbytes, offset)
        got = len(data)
        buf[:got] = np.frombuffer(data, np.uint8)
    if got != buf.nbytes:
        raise CheckpointError(f"map cache file is truncated: read {got} of {buf.nbytes} bytes at offset {offset}")


class StreamedMaps:
    """Training features from map caches (one per camera): `gather(idx (M,))` -> float32 (M, sum of C*h*w), read
    from disk per call. Memory: the requested rows plus a 12-byte index per step and camera, never the table."""

    def __init__(self, caches: Sequence[MapCache], demos: Sequence[str]):
        self.caches = list(caches)
        self.dim = sum(c.dim for c in self.caches)
        self.map_shape = (len(self.caches), *self.caches[0].shape)
        if any(c.shape != self.caches[0].shape for c in self.caches):
            raise ConfigError(f"cameras give maps of different shapes {[c.shape for c in self.caches]}: a spatial "
                              "head needs every camera at the same frame size")
        # Per camera and flat step: (fd, byte offset) of its row.
        self._where = []
        for cache in self.caches:
            fds, offsets = [], []
            for d in demos:
                fd, base = cache.locate(d)
                n = cache.demo_lengths[d]
                fds.append(np.full(n, fd, np.int32))
                offsets.append(base + np.arange(n, dtype=np.int64) * cache.row_bytes)
            self._where.append((np.concatenate(fds), np.concatenate(offsets)))

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        unique, inverse = np.unique(idx.cpu().numpy(), return_inverse=True)  # sorted: reads run forward on disk
        out = np.empty((len(unique), self.dim), MAP_DTYPE)
        col = 0
        for cache, (fds, offsets) in zip(self.caches, self._where):
            for i, j in enumerate(unique):
                read_row(int(fds[j]), int(offsets[j]), out[i, col:col + cache.dim])
            col += cache.dim
        return torch.from_numpy(out).float()[torch.from_numpy(inverse.reshape(-1))]

    def close(self) -> None:
        for cache in self.caches:
            cache.close()


def _encode_maps(s2_encoder: Any, frames: np.ndarray, device: torch.device, precision: str) -> np.ndarray:
    x = frames_to_tensor(frames, device)
    with torch.inference_mode(), autocast(device, precision):
        fmap = camera_feature_map(s2_encoder, x).float()
    return fmap.cpu().numpy()


def part_layout(lengths: dict[str, int], world: int) -> dict[str, tuple[str, int]]:
    """demo -> (part file, first row): demo i goes to part i % world, each part holds its demos in dataset order."""
    where, next_row = {}, [0] * world
    for i, (demo, n) in enumerate(lengths.items()):
        where[demo] = (f"part-{i % world}-of-{world}.f16", next_row[i % world])
        next_row[i % world] += n
    return where


def demo_digest(folder: Path, part: str, first_row: int, rows: int, row_bytes: int) -> str | None:
    """sha256 of a demo's rows as they are on disk; None when the part is missing or too short to hold them."""
    h = hashlib.sha256()
    try:
        with open(folder / part, "rb") as f:
            f.seek(first_row * row_bytes)
            left = rows * row_bytes
            while left:
                chunk = f.read(min(left, 1 << 24))
                if not chunk:
                    return None
                h.update(chunk)
                left -= len(chunk)
    except OSError:
        return None
    return h.hexdigest()


def _read_json(path: Path) -> dict | None:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    return None


def _intact(folder: Path, demos: Sequence[str], digests: dict[str, str], where: dict[str, tuple[str, int]],
            lengths: dict[str, int], row_bytes: int) -> list[str]:
    """Those of `demos` whose rows on disk match their recorded sha256."""
    return [d for d in demos if d in digests
            and demo_digest(folder, *where[d], lengths[d], row_bytes) == digests[d]]


def _extract_maps(s2_encoder: Any, source: FrameSource, demos: Sequence[str], lengths: dict[str, int],
                  where: dict[str, tuple[str, int]], folder: Path, progress_file: Path, key: str,
                  digests: dict[str, str], row_bytes: int, batch_size: int, device: torch.device, precision: str,
                  progress: bool) -> int:
    """Encode `demos` and write each one's rows in place (its part, its first row); after each demo, fsync and
    record its sha256 in `digests` and `progress_file`, so a killed run keeps every finished demo. Returns frames
    encoded."""
    total = sum(lengths[d] for d in demos)
    hashes = {d: hashlib.sha256() for d in demos}
    written = {d: 0 for d in demos}
    fds: dict[str, int] = {}
    encoded = 0
    try:
        with tqdm(total=total, unit="frame", desc=f"maps {source.camera}", disable=not progress or total == 0) as bar:
            for batch in iter_frame_batches(source, demos, batch_size):
                raw = _encode_maps(s2_encoder, batch.frames, device, precision)
                with np.errstate(over="ignore"):  # overflow is checked below, with a message naming the frames
                    fmap = raw.astype(MAP_DTYPE)
                row = 0
                for demo, t0, n in batch.pieces:  # pieces arrive in frame order within each demo
                    chunk = fmap[row:row + n]
                    if not np.isfinite(chunk).all():
                        raise DatasetError(
                            f"{source.path}: camera {source.camera!r}, demo {demo} steps {t0}..{t0 + n - 1}: S2 map "
                            f"values do not fit float16 (max |x| {np.abs(raw[row:row + n]).max():.3g}) or are not "
                            "finite; the map cache stores float16")
                    part, first = where[demo]
                    if part not in fds:
                        fds[part] = os.open(folder / part, os.O_RDWR | os.O_CREAT, 0o644)
                    data = chunk.tobytes()
                    path = folder / part
                    try:
                        if os.pwrite(fds[part], data, (first + t0) * row_bytes) != len(data):
                            raise OSError(f"short write to {path}")
                        hashes[demo].update(data)
                        row += n
                        written[demo] += n
                        if written[demo] == lengths[demo]:  # a demo counts once all its rows are on disk
                            os.fsync(fds[part])
                            digests[demo] = hashes[demo].hexdigest()
                            atomic_write_text(progress_file, json.dumps({"key": key, "digests": digests}))
                    except OSError as e:
                        raise_if_out_of_space(e, path, "the demos finished before it are kept and a rerun resumes "
                                              "from there")
                        raise
                encoded += len(batch.frames)
                bar.update(len(batch.frames))
    finally:
        for fd in fds.values():
            os.close(fd)
    return encoded


@discard_on_bad_input
def build_map_cache(
    dataset_path: str | Path,
    camera: str,
    s2_encoder: Any,
    *,
    camera_size: int | None = None,
    source: str = "auto",
    cache_root: str | Path | None = None,
    batch_size: int = 16,
    device: str | torch.device = "auto",
    precision: str = "auto",
    progress: bool = False,
) -> tuple[MapCache, ExtractionStats]:
    """Return the map cache of `camera` for `dataset_path`, extracting, finishing or repairing it if needed.

    Every demo's rows carry a sha256 (manifest.json); opening a finished cache verifies them, and demos whose rows
    were damaged on disk are re-extracted in place (with a warning naming them), never trained on. Same frame
    sources and validation as `build_feature_cache`, and the same lock when two processes build one cache; under
    torchrun demo i is encoded and verified by rank i % world and rank 0 writes the manifest (all ranks must call
    this). Memory stays bounded by a few batches.
    """
    src, root, fingerprint, identity, device = prepare_extraction(dataset_path, camera, s2_encoder, camera_size,
                                                                  source, cache_root, device)
    s2_encoder = s2_encoder.to(device).eval()
    shape = map_shape(s2_encoder, src.frame_shape)
    key, inputs = map_cache_key(fingerprint, identity, camera, src.frame_shape, src.kind, shape)
    folder = map_cache_folder(root, camera, key)
    rank, world = rank_and_world()
    lengths = _demo_lengths(src)
    where = part_layout(lengths, world)
    mine = [d for i, d in enumerate(lengths) if i % world == rank]
    row_bytes = math.prod(shape) * np.dtype(MAP_DTYPE).itemsize
    progress_file = folder / f"part-{rank}-of-{world}.progress.json"
    stats = ExtractionStats()
    folder.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(folder / f".extract-{rank}-of-{world}.lock", f"extracting into {folder}"):
        t0 = time.perf_counter()
        manifest = _read_json(folder / "manifest.json")
        finished = manifest is not None and manifest.get("key") == key and manifest.get("format") == MAP_CACHE_FORMAT
        # what this rank can trust: a finished cache's digests, else those of an interrupted run of this key
        recorded = manifest if finished else _read_json(progress_file)
        digests = dict(recorded.get("digests", {})) if recorded and recorded.get("key") == key else {}
        good = _intact(folder, mine, digests, where, lengths, row_bytes)
        todo = [d for d in mine if d not in good]
        digests = {d: digests[d] for d in good}
        if finished and todo:
            log.warning("map cache %s: the rows of %d demo(s) do not match their checksums (%s); re-extracting them",
                        folder, len(todo), ", ".join(todo[:5]) + (" ..." if len(todo) > 5 else ""))
        elif good and todo:
            log.info("resuming map extraction in %s: %d of %d demos already done", folder, len(good), len(mine))
        stats.reused = finished and not todo
        if todo:
            stats.frames = _extract_maps(s2_encoder, src, todo, lengths, where, folder, progress_file, key, digests,
                                         row_bytes, batch_size, device, precision, progress)
        stats.seconds = time.perf_counter() - t0
        barrier()
        others = [_read_json(folder / f"part-{r}-of-{world}.progress.json") for r in range(1, world)]
        others = [o["digests"] for o in others if o and o.get("key") == key]  # ranks that extracted this time
        if rank == 0 and (not finished or todo or others):
            all_digests = {**(manifest.get("digests", {}) if finished else {}), **digests}
            for theirs in others:
                all_digests.update(theirs)
            manifest = {"format": MAP_CACHE_FORMAT, "key": key, "inputs": inputs, "map_shape": list(shape),
                        "dtype": np.dtype(MAP_DTYPE).name, "lengths": lengths,
                        "demos": {d: list(w) for d, w in where.items()}, "digests": all_digests}
            atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=1))
            log.info("map cache %s: %d frames in %.1fs, map %s, %.1f MB per 1000 frames", folder, stats.frames,
                     stats.seconds, shape, row_bytes * 1000 / 1e6)
        barrier()
        progress_file.unlink(missing_ok=True)
    if stats.reused:
        log.info("reusing map cache %s (checksums verified)", folder)
    return MapCache(folder), stats
