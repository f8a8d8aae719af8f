"""On-disk cache of frozen S2 features, computed once per (dataset content, encoder + S2 config, camera, dtype).

Layout: `<cache_root>/<camera>-<key16>/` holding `shards/<demo>.h5` (`data` = (T, D) embeddings, optional `maps` =
(T, ...) merged token maps, and attrs with the sha256 of each array) and `manifest.json`, written atomically last: a
folder without a manifest is an unfinished extraction, resumed demo by demo on the next call. The folder name is
derived from the key, so a change in any input selects another folder: a cache is never stale.

Integrity: a shard is built in memory and written atomically once its demo is complete, so a kill or a full disk
never leaves half a shard; every read checks the shard's checksums, so a truncated or damaged shard is reported
(naming the file to delete), never used. Processes extracting into the same folder take turns on a lock (per
torchrun rank slot); the second one finds the work done and reuses it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TypeVar

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import open_episodes
from ..device import autocast, select_device
from ..distributed import barrier, rank_and_world
from ..errors import CacheError, ConfigError, DatasetError
from ..fileio import atomic_open, atomic_write_text, exclusive_lock, raise_if_out_of_space
from ..look_closer import embed_frames, needs_points, points_fingerprint, selector_points
from .identity import encoder_identity
from .fingerprint import dataset_fingerprint
from .frames import FrameSource, frames_to_tensor, iter_frame_batches, resolve_frame_source

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # 2: one checksummed shard per demo, written atomically (1: appendable part files per rank)
_DTYPES = {"float16": np.float16, "float32": np.float32}
SHARD_DIR = "shards"


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
    """Read side of a finished cache: `embeddings(demo) -> (T, D)`, `maps(demo) -> (T, ...)`, each checked against
    its shard's checksum (CacheError naming the shard when it does not match)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        manifest = self.folder / "manifest.json"
        if not manifest.is_file():
            raise CacheError(f"feature cache {self.folder} is unfinished or missing (no manifest.json)")
        try:
            self.manifest = json.loads(manifest.read_text())
            self.key: str = self.manifest["key"]
            self.dim: int = int(self.manifest["dim"])
            self.demo_lengths: dict[str, int] = self.manifest["lengths"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CacheError(f"feature cache {self.folder}: unreadable manifest.json ({e}); delete {manifest} and "
                             "the next run re-checks the shards and rewrites it") from e

    @property
    def demos(self) -> list[str]:
        return list(self.demo_lengths)

    def shard(self, demo: str) -> Path:
        if demo not in self.demo_lengths:
            raise KeyError(f"feature cache {self.folder} has no demo {demo!r}")
        return shard_path(self.folder, demo)

    def embeddings(self, demo: str) -> np.ndarray:
        """(T, D) canonical S2 embeddings of one demo's frames, in the cache dtype."""
        return read_shard_array(self.shard(demo), "data", self.demo_lengths[demo])

    def maps(self, demo: str) -> np.ndarray:
        """(T, ...) merged spatial token maps of one demo (only if extracted with store_maps=True)."""
        if not self.manifest["inputs"].get("store_maps"):
            raise KeyError(f"feature cache {self.folder} was built without spatial maps (features.store_maps=true)")
        return read_shard_array(self.shard(demo), "maps", self.demo_lengths[demo])

    def close(self) -> None:
        """Nothing stays open between reads (kept so `with FeatureCache(...)` reads naturally)."""

    def __enter__(self) -> "FeatureCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def shard_path(folder: Path, demo: str) -> Path:
    return Path(folder) / SHARD_DIR / f"{demo}.h5"


def array_digest(a: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes."""
    h = hashlib.sha256(f"{a.dtype.str}|{a.shape}|".encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def read_shard_array(path: Path, name: str, length: int) -> np.ndarray:
    """Array `name` of a shard, verified: readable, sha256 as recorded, `length` rows, finite. CacheError otherwise."""
    remedy = f"delete {path} (the next run re-extracts that demo only) or the whole folder {path.parent.parent}"
    try:
        with h5py.File(path, "r") as f:
            values = f[name][()]
            recorded = f[name].attrs.get("sha256")
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise CacheError(f"feature cache shard {path} is missing, truncated or unreadable ({e}); {remedy}") from e
    if recorded is None or array_digest(values) != recorded:
        raise CacheError(f"feature cache shard {path}: {name!r} does not match its checksum (damaged on disk); "
                         f"{remedy}")
    if values.shape[0] != length:
        raise CacheError(f"feature cache shard {path}: {values.shape[0]} rows, the manifest says {length}; {remedy}")
    if not np.isfinite(values).all():
        raise CacheError(f"feature cache shard {path}: {name!r} holds NaN/inf features; {remedy}")
    return values


def _write_shard(path: Path, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Build one demo's shard in memory (HDF5 never writes to disk, so a full disk cannot leave it half-written --
    or crash HDF5 at exit) and write its bytes atomically."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.attrs["key"] = key
        for name, values in arrays.items():
            f.create_dataset(name, data=values)
            f[name].attrs["sha256"] = array_digest(values)
    with atomic_open(path, "wb") as out:
        out.write(buffer.getbuffer())


def _shard_is_good(path: Path, key: str, names: Sequence[str], length: int) -> bool:
    """Whether an existing shard (from an interrupted run) can be kept: our key, every array present and intact."""
    if not path.exists():  # not extracted yet: nothing to warn about
        return False
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("key") != key:
                return False
        for name in names:
            read_shard_array(path, name, length)
        return True
    except (OSError, CacheError):
        log.warning("re-extracting damaged feature cache shard %s", path)
        return False


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
    with open_episodes(source.path) as ds:
        return {d: ds.episode_length(d) for d in ds.episodes}


def _encode(s2_encoder: Any, frames: np.ndarray, device: torch.device, precision: str, maps: bool,
            camera: str, points: torch.Tensor | None):
    x = frames_to_tensor(frames, device)
    with torch.inference_mode(), autocast(device, precision):
        emb = embed_frames(s2_encoder, x, camera, points).float()
        fmap = s2_encoder.feature_map(x).float() if maps else None
    return emb.cpu().numpy(), (fmap.cpu().numpy() if fmap is not None else None)


def _finished_arrays(demo: str, pieces: dict[str, list[np.ndarray]], dtype: str) -> dict[str, np.ndarray]:
    """A complete demo's pieces -> arrays in the cache dtype; refuses non-finite features (a broken encoder, or
    float16 overflow) so they are never cached or trained on."""
    arrays = {}
    for name, parts in pieces.items():
        full = np.concatenate(parts)
        stored = full.astype(_DTYPES[dtype])
        if not np.isfinite(stored).all():
            if np.isfinite(full).all():
                raise ConfigError(f"features.dtype={dtype}: demo {demo}'s {name} features overflow it (max |value| "
                                  f"{np.abs(full).max():.4g}); use features.dtype=float32")
            bad = np.flatnonzero(~np.isfinite(full).reshape(len(full), -1).all(axis=1))
            raise CacheError(f"the encoder produced NaN/inf {name} features for demo {demo} (frames "
                             f"{bad[:5].tolist()}); check the encoder weights and precision")
        arrays[name] = stored
    return arrays


def _extract_demos(
    s2_encoder: Any,
    source: FrameSource,
    demos: Sequence[str],
    lengths: dict[str, int],
    folder: Path,
    key: str,
    dtype: str,
    store_maps: bool,
    batch_size: int,
    device: torch.device,
    precision: str,
    progress: bool,
) -> int:
    """Encode `demos` into one shard each, keeping intact shards a previous (interrupted) run wrote. Returns frames
    encoded."""
    names = ["data", "maps"] if store_maps else ["data"]
    todo = [d for d in demos if not _shard_is_good(shard_path(folder, d), key, names, lengths[d])]
    if len(todo) < len(demos):
        log.info("resuming feature extraction in %s: %d of %d demos already done", folder, len(demos) - len(todo),
                 len(demos))
    pending: dict[str, dict[str, list[np.ndarray]]] = {d: {n: [] for n in names} for d in todo}
    written = {d: 0 for d in todo}
    encoded = 0
    total = sum(lengths[d] for d in todo)
    points = _demo_points(s2_encoder, source.path, todo, device)
    with tqdm(total=total, unit="frame", desc=f"features {source.camera}", disable=not progress or total == 0) as bar:
        for batch in iter_frame_batches(source, todo, batch_size):
            pts = None if points is None else torch.cat([points[d][t0:t0 + n] for d, t0, n in batch.pieces])
            emb, fmap = _encode(s2_encoder, batch.frames, device, precision, store_maps, source.camera, pts)
            row = 0
            for demo, _t0, n in batch.pieces:  # pieces arrive in frame order within each demo
                pending[demo]["data"].append(emb[row : row + n])
                if store_maps:
                    pending[demo]["maps"].append(fmap[row : row + n])
                row += n
                written[demo] += n
                if written[demo] == lengths[demo]:  # a demo is cached only once complete: its shard appears whole
                    path, finished = shard_path(folder, demo), len(demos) - len(pending)
                    try:
                        _write_shard(path, key, _finished_arrays(demo, pending.pop(demo), dtype))
                    except Exception as e:
                        raise_if_out_of_space(e, path, f"the shards of the {finished} demo(s) finished before it are "
                                              "kept and a rerun resumes from there")
                        raise
            encoded += len(batch.frames)
            bar.update(len(batch.frames))
    return encoded


def _demo_points(s2_encoder: Any, path: Path, demos: Sequence[str],
                 device: torch.device) -> dict[str, torch.Tensor] | None:
    """Per demo, the stored robot state a look-closer selector reads (None when it reads none)."""
    if not needs_points(s2_encoder):
        return None
    key = s2_encoder.look_closer.point_key
    with open_episodes(path) as ds:
        return {d: selector_points(s2_encoder, ds.read_lowdim(d, [key]), device) for d in demos}


def _selector_inputs_fingerprint(s2_encoder: Any, path: Path) -> str | None:
    if not needs_points(s2_encoder):
        return None
    key = s2_encoder.look_closer.point_key
    with open_episodes(path) as ds:
        return points_fingerprint(s2_encoder, [ds.read_lowdim(d, [key]) for d in ds.episodes])


def cache_folder(cache_root: str | Path, camera: str, key: str) -> Path:
    return Path(cache_root) / f"{camera}-{key[:16]}"


def default_cache_root(dataset_path: str | Path) -> Path:
    """Caches live beside their dataset (`demos.hdf5` -> `demos.hdf5.features/`) so deleting both is one `rm`."""
    p = Path(dataset_path)
    return p.parent / f"{p.name}.features"


@contextlib.contextmanager
def discarded_on_bad_input(root: Path) -> Iterator[None]:
    """Remove what the block added under the cache root `root` (the root itself if it made it) when the block raises
    DatasetError: damaged frames found while decoding. A partial cache of a damaged dataset is of no use -- the
    repaired dataset has another fingerprint, so another cache key -- and bad input leaves nothing behind.
    Interruptions and a full disk keep what was extracted, to resume from it."""
    existed = root.exists()
    before = set(root.iterdir()) if root.is_dir() else set()
    try:
        yield
    except DatasetError:
        for p in (set(root.iterdir()) - before if root.is_dir() else set()):
            if p.is_dir() and not _extracting_elsewhere(p):  # another process's extraction (other camera) stays
                shutil.rmtree(p, ignore_errors=True)
            elif not p.is_dir():
                p.unlink(missing_ok=True)
        if not existed:
            with contextlib.suppress(OSError):  # not empty: another process's work is in it
                root.rmdir()
        raise


def _extracting_elsewhere(folder: Path) -> bool:
    """Whether another process holds an extraction lock in `folder` (ours are released by now)."""
    import fcntl

    for lock in folder.glob(".extract-*.lock"):
        with open(lock, "a") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return False


Build = TypeVar("Build", bound=Callable[..., Any])


def discard_on_bad_input(build: Build) -> Build:
    """Run a cache builder `build(dataset_path, camera, s2_encoder, *, cache_root=None, ...)` inside
    `discarded_on_bad_input` of its cache root."""
    @functools.wraps(build)
    def wrapper(dataset_path: str | Path, *args: Any, cache_root: str | Path | None = None, **kwargs: Any) -> Any:
        root = Path(cache_root) if cache_root is not None else default_cache_root(dataset_path)
        with discarded_on_bad_input(root):
            return build(dataset_path, *args, cache_root=cache_root, **kwargs)
    return wrapper  # type: ignore[return-value]


def prepare_extraction(dataset_path: str | Path, camera: str, s2_encoder: Any, camera_size: int | None,
                       source: str, cache_root: str | Path | None, device: str | torch.device,
                       ) -> tuple[FrameSource, Path, str, dict[str, Any], torch.device]:
    """What every cache of encoder outputs starts from: the checked frame source, the cache root (created; a bad
    one is a ConfigError), the dataset's content fingerprint, the encoder's identity and the device."""
    device = select_device(device)
    native = getattr(getattr(s2_encoder, "encoder", None), "native_size", None)
    src = resolve_frame_source(dataset_path, camera, camera_size, source, native_size=native)
    root = Path(cache_root) if cache_root is not None else default_cache_root(dataset_path)
    created = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot use {root} as the feature cache folder (features.cache_dir): {e}") from e
    try:
        fingerprint = dataset_fingerprint(src, root)
    except BaseException:
        if created:  # a file that cannot be read to the end leaves no empty cache folder behind
            with contextlib.suppress(OSError):
                root.rmdir()
        raise
    return src, root, fingerprint, encoder_identity(s2_encoder), device


@discard_on_bad_input
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
    backbone: str = "torch",
) -> tuple[FeatureCache, ExtractionStats]:
    """Return the cache of `camera`'s S2 features for `dataset_path`, extracting (or finishing) it if needed.

    `backbone="onnx"` extracts on the CPU with the backbone crops in ONNX Runtime (checked against torch first; same
    features within float32 rounding); it is part of the cache key, so torch and ONNX caches never mix. On a GPU it
    is ignored (torch runs).

    Under torchrun every process encodes its share of the demos (demo i goes to rank i % world) and rank 0 writes the
    manifest; all ranks must call this. Memory stays bounded by a few batches plus the features of the demos in
    flight (each demo's shard is written as soon as it is complete), whatever the dataset size.
    """
    src, root, fingerprint, identity, device = prepare_extraction(dataset_path, camera, s2_encoder, camera_size,
                                                                  source, cache_root, device)
    use_onnx = backbone == "onnx" and device.type == "cpu"
    if use_onnx:  # only then: the keys of existing torch caches stay what they were
        identity["backbone"] = "onnx"
    selector_inputs = _selector_inputs_fingerprint(s2_encoder, src.path)
    if selector_inputs is not None:  # look-closer crops follow the stored end-effector positions
        identity["selector_inputs_sha256"] = selector_inputs
    key, inputs = feature_cache_key(
        fingerprint, identity, camera, src.frame_shape, src.kind, dtype, store_maps
    )
    folder = cache_folder(root, camera, key)
    stats = ExtractionStats()
    if _shards_complete(folder, key):
        stats.reused = True
        log.info("reusing feature cache %s", folder)
        return FeatureCache(folder), stats

    rank, world = rank_and_world()
    folder.mkdir(parents=True, exist_ok=True)
    lengths = _demo_lengths(src)
    demos = list(lengths)
    mine = [d for i, d in enumerate(demos) if i % world == rank]
    s2_encoder = s2_encoder.to(device).eval()
    # Another process extracting the same cache holds this lock until its manifest is written; then this one
    # finds the cache finished. Barriers are unconditional: every rank reaches them whatever it found.
    with exclusive_lock(folder / f".extract-{rank}-of-{world}.lock", f"extracting into {folder}"):
        t0 = time.perf_counter()
        if _shards_complete(folder, key):
            stats.reused = True
        else:
            with _backbone_runtime(s2_encoder, use_onnx):
                stats.frames = _extract_demos(s2_encoder, src, mine, lengths, folder, key, dtype, store_maps,
                                              batch_size, device, precision, progress)
        stats.seconds = time.perf_counter() - t0
        barrier()
        if rank == 0 and not _shards_complete(folder, key):
            with h5py.File(shard_path(folder, demos[0]), "r") as f:
                dim = int(f["data"].shape[1])
            manifest = {"key": key, "inputs": inputs, "dim": dim, "dtype": dtype, "lengths": lengths,
                        "shards": {d: str(shard_path(folder, d).relative_to(folder)) for d in demos}}
            atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=1))
            log.info("feature cache %s: %d frames in %.1fs", folder, stats.frames, stats.seconds)
        barrier()
    return FeatureCache(folder), stats


def _backbone_runtime(s2_encoder: Any, use_onnx: bool) -> contextlib.AbstractContextManager:
    """The backbone in ONNX Runtime for the block (as many intra-op threads as torch has), or unchanged."""
    if not use_onnx:
        return contextlib.nullcontext()
    from ..runtime.onnx_backbone import onnx_backbone

    return onnx_backbone(s2_encoder, threads=torch.get_num_threads())


def _manifest_matches(folder: Path, key: str) -> bool:
    """Whether `folder` holds a finished cache for `key` (its manifest is readable and ours)."""
    with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
        return json.loads((folder / "manifest.json").read_text()).get("key") == key
    return False


def _shards_complete(folder: Path, key: str) -> bool:
    """A finished embedding cache for `key` with every shard its manifest lists present (a shard a user deleted to
    repair it is re-extracted; a present but damaged one is reported when read)."""
    if not _manifest_matches(folder, key):
        return False
    with contextlib.suppress(OSError, ValueError, AttributeError, TypeError, KeyError):
        shards = json.loads((folder / "manifest.json").read_text())["shards"]
        return all((folder / s).is_file() for s in shards.values())
    return False
