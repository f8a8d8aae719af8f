"""Read LeRobot dataset folders (format v3.0 and v2.1) natively: Parquet through pyarrow, MP4 streams through PyAV,
frames stored inside the Parquet files (`dtype: "image"` features, see lerobot_images.py) through Pillow.

Layout (see docs/datasets.md):
- v3.0: meta/info.json, meta/episodes/chunk-*/file-*.parquet (per episode: length, which data / video file holds it
  and where), data/chunk-*/file-*.parquet (many episodes per file, one row per frame), one MP4 per camera and file
  (episodes back to back; an episode starts at its `from_timestamp`).
- v2.1: meta/info.json, meta/episodes.jsonl, one Parquet and one MP4 per camera for each episode.

Feature names map onto the package's observation contract: `observation.images.<camera>` (a video or an image
feature) -> frames of `<camera>`
(obs key `<camera>_image`), `observation.state` -> `proprio`, any other `observation.<name>` -> `<name>`, `action`
-> actions. Full LeRobot names are accepted wherever our names are.

`meta/s2policy.json`, when present (written by `export_lerobot`), carries what LeRobot has no field for: env_args,
reset seeds and the train/valid split of the robomimic file the dataset came from. LeRobot's tools ignore it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from .episodes import EpisodeReader, camera_of_image_key
from .lerobot_images import cell_bytes, decode_image, image_column
from .video import VideoCursor
from .writer import split_train_valid

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = ("v2.1", "v3.0")
INFO_FILE = "meta/info.json"
SIDECAR_FILE = "meta/s2policy.json"
IMAGES_PREFIX = "observation.images."
STATE_FEATURE = "observation.state"
ACTION_FEATURE = "action"
#: Per-frame bookkeeping columns every LeRobot data file has; not observations.
BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")
#: How far a row's `timestamp` may be from frame_index / fps (LeRobot's own loader allows 1e-4 s between frames).
TIMESTAMP_TOLERANCE_S = 1e-4
#: Image columns (one feature of one data file) kept in memory: sequential reading needs one per camera, random
#: access (features.cache=false) across v2.1's per-episode files gains from a few more.
IMAGE_COLUMNS_KEPT = 4


def feature_of_key(key: str) -> str:
    """Our observation key -> LeRobot feature name (`proprio` -> `observation.state`, `front_image` ->
    `observation.images.front`, `x` -> `observation.x`); LeRobot names pass through."""
    if key.startswith("observation.") or key == ACTION_FEATURE:
        return key
    if key == "proprio":
        return STATE_FEATURE
    if key.endswith("_image"):
        return IMAGES_PREFIX + camera_of_image_key(key)
    return f"observation.{key}"


def key_of_feature(feature: str) -> str:
    """Inverse of `feature_of_key` for low-dim features (`observation.state` -> `proprio`)."""
    return "proprio" if feature == STATE_FEATURE else feature.removeprefix("observation.")


def camera_of_feature(feature: str) -> str:
    """`observation.images.front` -> `front` (and `observation.image` -> `image`)."""
    return feature.removeprefix(IMAGES_PREFIX).removeprefix("observation.")


def _column_array(table: Any, name: str, shape: Sequence[int]) -> np.ndarray:
    """A Parquet column (scalars, lists or fixed-size lists) as a numpy array (rows, *shape)."""
    import pyarrow as pa

    col = table.column(name).combine_chunks()
    if pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
        values = np.asarray(col.flatten().to_numpy(zero_copy_only=False))
    else:
        values = np.asarray(col.to_numpy(zero_copy_only=False))
    rows = len(col)
    per_row = int(np.prod(shape)) if len(shape) else 1
    if values.size != rows * per_row:
        raise DatasetError(f"column {name!r}: {values.size} values for {rows} rows of shape {tuple(shape)}")
    return values.reshape(rows, *shape) if tuple(shape) != (1,) else values.reshape(rows, 1)


def _import_pyarrow():
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise DatasetError(f"reading LeRobot datasets needs pyarrow: pip install 's2policy[lerobot]' ({e})") from e
    return pq


def read_json(f: Path) -> Any:
    """A JSON metadata file, or a DatasetError naming it (unreadable, not UTF-8, not JSON)."""
    try:
        return json.loads(f.read_text())
    except OSError as e:
        raise DatasetError(f"{f}: cannot read: {e}") from e
    except ValueError as e:  # also UnicodeDecodeError
        raise DatasetError(f"{f}: not valid JSON: {e}") from e


def _parquet(read: Any, f: Path, **kwargs: Any) -> Any:
    """`read(f, **kwargs)` (pyarrow's read_table / read_schema); a truncated, damaged or unreadable file becomes a
    DatasetError naming it. pyarrow raises OSError or ArrowInvalid (a ValueError) for those."""
    try:
        return read(f, **kwargs)
    except PermissionError as e:
        raise DatasetError(f"{f}: cannot read: {e}") from e
    except (OSError, ValueError) as e:
        raise DatasetError(f"{f}: unreadable Parquet file ({e}); the file is truncated or damaged") from e


@dataclass
class LeRobotEpisode:
    """Where one episode lives: its rows in a data file and, per video feature, its file and start time (s)."""

    index: int
    length: int
    tasks: list[str]
    data_file: Path
    videos: dict[str, tuple[Path, float]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"episode_{self.index:06d}"


class LeRobotReader(EpisodeReader):
    """A LeRobot dataset folder (v3.0 or v2.1). Raises DatasetError on open for: no meta/info.json, an unsupported
    codebase_version, cameras whose fps differ, or broken episode metadata. A camera is a video feature (MP4) or an
    image feature (one encoded image per Parquet cell)."""

    actions_in_unit_range = False

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._pq = _import_pyarrow()
        info_file = self.path / INFO_FILE
        if not info_file.is_file():
            raise DatasetError(
                f"{self.path}: missing {INFO_FILE} (not a LeRobot dataset folder, or an incomplete copy)")
        self.info: dict[str, Any] = read_json(info_file)
        if not isinstance(self.info, dict):
            raise DatasetError(f"{info_file}: expected a JSON object, got {type(self.info).__name__}")
        self.version = str(self.info.get("codebase_version"))
        if self.version not in SUPPORTED_VERSIONS:
            raise DatasetError(f"{info_file}: codebase_version {self.version!r} is not supported "
                               f"(supported: {', '.join(SUPPORTED_VERSIONS)}; convert it with LeRobot's converter)")
        self.format = f"lerobot-{self.version}"
        features = self.info.get("features") or {}
        if not isinstance(features, dict) or not all(isinstance(v, dict) for v in features.values()):
            raise DatasetError(f"{info_file}: 'features' must map each feature name to an object, got {features!r:.100}")
        self.features: dict[str, dict[str, Any]] = features
        if ACTION_FEATURE not in self.features:
            raise DatasetError(f"{info_file}: no feature 'action'; features: {sorted(self.features)}")
        try:
            self.fps = float(self.info.get("fps") or 0)
        except (TypeError, ValueError):
            self.fps = 0.0
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise DatasetError(f"{info_file}: fps must be a positive number, got {self.info.get('fps')!r}")
        self.video_features = sorted(k for k, v in self.features.items() if v.get("dtype") == "video")
        #: every feature stored as images in the Parquet files (validate checks them all) ...
        self.image_features = sorted(k for k, v in self.features.items() if v.get("dtype") == "image")
        # ... of which the RGB ones are cameras; a depth map (LeRobot's info.is_depth_map) or grey image is not
        self.camera_features = sorted(self.video_features + [k for k in self.image_features if self._is_rgb(k)])
        self._check_camera_fps()
        self.sidecar = self._read_sidecar()
        self._episodes = self._read_episodes()
        self._by_name = {ep.name: ep for ep in self._episodes}
        log.debug("%s: LeRobot %s, %d episodes, %g fps, cameras %s", self.path, self.version, len(self._episodes),
                  self.fps, self.cameras)
        self._rows: dict[Path, tuple[Any, np.ndarray]] = {}  # data file -> (table, episode_index column)
        self._cursors: dict[str, VideoCursor] = {}  # video feature -> open file being read forward
        # (image feature, data file) -> (its cells, its episode_index and frame_index columns), least recent first
        self._cells: OrderedDict[tuple[str, Path], tuple[tuple[list, list], np.ndarray, np.ndarray]] = OrderedDict()

    # ---- metadata ----
    def _check_camera_fps(self) -> None:
        rates = {k: self.features[k].get("info", {}).get("video.fps") for k in self.video_features}
        rates = {k: float(v) for k, v in rates.items() if v is not None}
        if any(abs(r - self.fps) > 1e-6 for r in rates.values()):
            listed = ", ".join(f"{k} {r:g}" for k, r in rates.items())
            raise DatasetError(f"{self.path / INFO_FILE}: cameras have mismatched fps ({listed}; dataset fps "
                               f"{self.fps:g}): frames would not line up with the Parquet rows")

    def _read_sidecar(self) -> dict[str, Any]:
        f = self.path / SIDECAR_FILE
        if not f.is_file():
            return {}
        sidecar = read_json(f)
        if not isinstance(sidecar, dict):
            raise DatasetError(f"{f}: expected a JSON object, got {type(sidecar).__name__}")
        return sidecar

    def _template(self, name: str) -> str:
        template = self.info.get(name)
        if not template or not isinstance(template, str):
            raise DatasetError(f"{self.path / INFO_FILE}: no {name!r} path template")
        return template

    def _fill(self, name: str, **fields: Any) -> Path:
        """The file the path template `name` of info.json names for `fields`."""
        template = self._template(name)
        try:
            return self.path / template.format(**fields)
        except (KeyError, IndexError, ValueError) as e:
            raise DatasetError(f"{self.path / INFO_FILE}: {name} {template!r} does not fit the {self.version} layout "
                               f"(fields {sorted(fields)}; {type(e).__name__}: {e})") from e

    def _read_episodes(self) -> list[LeRobotEpisode]:
        episodes = self._read_episodes_v30() if self.version == "v3.0" else self._read_episodes_v21()
        if not episodes:
            raise DatasetError(f"{self.path}: the dataset holds no episodes")
        repeated = sorted(i for i, n in Counter(ep.index for ep in episodes).items() if n > 1)
        if repeated:
            raise DatasetError(f"{self.path}: the episode metadata lists episode_index {repeated[:5]} more than once")
        empty = [ep.index for ep in episodes if ep.length < 1]
        if empty:
            raise DatasetError(f"{self.path}: the episode metadata gives episode(s) {empty[:5]} no frames (length < 1)")
        return sorted(episodes, key=lambda e: e.index)

    def _read_episodes_v30(self) -> list[LeRobotEpisode]:
        files = sorted((self.path / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise DatasetError(f"{self.path}: no meta/episodes/chunk-*/file-*.parquet (v3.0 episode metadata)")
        episodes = []
        for f in files:
            wanted = ["episode_index", "length", "tasks", "data/chunk_index", "data/file_index"]
            for key in self.video_features:
                wanted += [f"videos/{key}/chunk_index", f"videos/{key}/file_index", f"videos/{key}/from_timestamp"]
            names = _parquet(self._pq.read_schema, f).names
            missing = [c for c in wanted if c not in names]
            if missing:
                raise DatasetError(f"{f}: missing episode metadata column(s) {missing}")
            for row, r in enumerate(_parquet(self._pq.read_table, f, columns=wanted).to_pylist()):
                try:
                    ep = LeRobotEpisode(int(r["episode_index"]), int(r["length"]), list(r["tasks"] or []),
                                        self._fill("data_path", chunk_index=r["data/chunk_index"],
                                                   file_index=r["data/file_index"]))
                    for key in self.video_features:
                        path = self._fill("video_path", video_key=key, chunk_index=r[f"videos/{key}/chunk_index"],
                                          file_index=r[f"videos/{key}/file_index"])
                        ep.videos[key] = (path, float(r[f"videos/{key}/from_timestamp"]))
                except (TypeError, ValueError) as e:  # a null or non-numeric cell
                    raise DatasetError(f"{f}, row {row}: unusable episode metadata ({e}): {r}") from e
                episodes.append(ep)
        return episodes

    def _read_episodes_v21(self) -> list[LeRobotEpisode]:
        f = self.path / "meta" / "episodes.jsonl"
        if not f.is_file():
            raise DatasetError(f"{self.path}: missing meta/episodes.jsonl (v2.1 episode metadata)")
        try:
            chunks_size = int(self.info.get("chunks_size") or 1000)
            lines = f.read_text().splitlines()
        except (OSError, TypeError, ValueError) as e:
            raise DatasetError(f"{f}: cannot read the episode metadata ({e})") from e
        episodes = []
        for line_no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                index, length = int(r["episode_index"]), int(r["length"])
            except (ValueError, KeyError, TypeError) as e:
                raise DatasetError(f"{f}, line {line_no}: expected episode_index and length ({e})") from e
            chunk = index // chunks_size
            ep = LeRobotEpisode(index, length, list(r.get("tasks") or []),
                                self._fill("data_path", episode_chunk=chunk, episode_index=index))
            for key in self.video_features:
                ep.videos[key] = (self._fill("video_path", episode_chunk=chunk, video_key=key, episode_index=index), 0.0)
            episodes.append(ep)
        return episodes

    def episode(self, name: str) -> LeRobotEpisode:
        try:
            return self._by_name[name]
        except KeyError:
            raise DatasetError(f"{self.path}: no episode {name!r}") from None

    # ---- EpisodeReader ----
    @property
    def episodes(self) -> list[str]:
        return [ep.name for ep in self._episodes]

    def episode_length(self, episode: str) -> int:
        return self.episode(episode).length

    @property
    def lowdim_keys(self) -> list[str]:
        return sorted(key_of_feature(k) for k, v in self.features.items()
                      if k.startswith("observation.") and v.get("dtype") not in ("video", "image"))

    @property
    def cameras(self) -> list[str]:
        return sorted(camera_of_feature(k) for k in self.camera_features)

    @property
    def camera_keys(self) -> dict[str, str]:
        return {camera_of_feature(k): k for k in self.camera_features}

    def camera_key_expected(self, camera: str) -> str:
        return self.camera_feature(camera) or IMAGES_PREFIX + camera_of_image_key(camera)

    @staticmethod
    def _names(camera: str, feature: str) -> bool:
        """Whether `camera` (given as `front`, `front_image` or `observation.images.front`) names `feature`."""
        return camera in (feature, camera_of_feature(feature), f"{camera_of_feature(feature)}_image")

    def camera_feature(self, camera: str) -> str | None:
        """The video or image feature of `camera`, or None."""
        return next((key for key in self.camera_features if self._names(camera, key)), None)

    def _require_camera(self, camera: str) -> str:
        key = self.camera_feature(camera)
        if key is None:
            other = [k for k in self.image_features if self._names(camera, k)]
            if other:
                feat = self.features[other[0]]
                raise DatasetError(f"{self.path / INFO_FILE}: {other[0]} is an image feature of shape {feat.get('shape')}"
                                   f" (names {feat.get('names')}{', a depth map' if self._is_depth(other[0]) else ''})"
                                   ": a camera must be RGB (H, W, 3)")
            expected = IMAGES_PREFIX + camera_of_image_key(camera)
            raise DatasetError(f"{self.path}: no video or image feature for camera {camera!r} (expected {expected!r}); "
                               f"available: {self.camera_features}")
        return key

    def _is_depth(self, feature: str) -> bool:
        return bool((self.features[feature].get("info") or {}).get("is_depth_map"))

    def _is_rgb(self, feature: str) -> bool:
        return self.declared_image(feature)[1] == 3 and not self._is_depth(feature)

    def declared_image(self, feature: str) -> tuple[tuple[int, int], int]:
        """((H, W), channels) as info.json declares them: (H, W, C) by default, (C, H, W) when the names start with
        "channel(s)" (some datasets declare (C, H, W)); (H, W) is one channel."""
        feat = self.features[feature]
        names, shape = [str(n) for n in feat.get("names") or []], list(feat.get("shape") or [])
        try:
            shape = [int(n) for n in shape]
        except (TypeError, ValueError):
            raise DatasetError(f"{self.path / INFO_FILE}: {feature}: shape {shape} is not a list of integers") from None
        if len(shape) == 3 and names[:1] in (["channels"], ["channel"]):
            shape = [shape[1], shape[2], shape[0]]
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise DatasetError(f"{self.path / INFO_FILE}: {feature}: shape {shape} is not that of an image (H, W, C)")
        return (shape[0], shape[1]), (shape[2] if len(shape) == 3 else 1)

    def frame_shape(self, camera: str) -> tuple[int, int] | None:
        key = self.camera_feature(camera)
        if key is None:
            return None
        info = self.features[key].get("info") or {}
        if "video.height" in info and "video.width" in info:
            return int(info["video.height"]), int(info["video.width"])
        return self.declared_image(key)[0]

    @property
    def env_args(self) -> dict[str, Any]:
        return dict(self.sidecar.get("env_args") or {})

    def _data_rows(self, ep: LeRobotEpisode, columns: Sequence[str]) -> dict[str, np.ndarray]:
        """The episode's rows of `columns` (feature names), ordered by frame_index; checks the row count."""
        if ep.data_file not in self._rows:
            if not ep.data_file.is_file():
                raise DatasetError(f"{self.path}: episode {ep.index}: data file {ep.data_file} not found")
            schema = _parquet(self._pq.read_schema, ep.data_file)
            # per-frame images stored in Parquet (dtype image) can be large and are never needed here
            wanted = [c for c in schema.names if self.features.get(c, {}).get("dtype") not in ("image", "video")]
            table = _parquet(self._pq.read_table, ep.data_file, columns=wanted)
            for col in ("episode_index", "frame_index"):
                if col not in table.column_names:
                    raise DatasetError(f"{ep.data_file}: no column {col!r}")
            self._rows.clear()  # one data file in memory at a time: episodes are read in order
            self._rows[ep.data_file] = (table, table.column("episode_index").to_numpy())
        table, episode_column = self._rows[ep.data_file]
        rows = np.flatnonzero(episode_column == ep.index)
        if len(rows) != ep.length:
            raise DatasetError(f"{ep.data_file}: episode {ep.index} has {len(rows)} Parquet rows but its metadata says "
                               f"length {ep.length}")
        sub = table.take(rows)
        frame_index = sub.column("frame_index").to_numpy()
        order = np.argsort(frame_index, kind="stable")
        self._check_timing(ep, frame_index[order], sub, order)
        out = {}
        for name in columns:
            if name not in sub.column_names:
                raise DatasetError(f"{ep.data_file}: no column {name!r} (declared in meta/info.json features)")
            shape = self.features[name].get("shape") or [1]
            try:
                out[name] = _column_array(sub, name, shape)[order]
            except DatasetError as e:  # its shape in info.json does not fit the values
                raise DatasetError(f"{ep.data_file}: episode {ep.index}, {e} (shape from meta/info.json)") from e
        return out

    def _check_timing(self, ep: LeRobotEpisode, frame_index: np.ndarray, rows: Any, order: np.ndarray) -> None:
        """Rows are frames 0..T-1 at timestamp frame_index / fps: frames are decoded at from_timestamp + i / fps,
        so a row whose timestamp is off would be paired with another frame than LeRobot's loader gives it."""
        if not np.array_equal(frame_index, np.arange(ep.length)):
            bad = int(np.flatnonzero(frame_index != np.arange(ep.length))[0])
            raise DatasetError(f"{ep.data_file}: episode {ep.index}, column 'frame_index': expected 0..{ep.length - 1}, "
                               f"got {int(frame_index[bad])} at position {bad} (rows missing or repeated)")
        if "timestamp" not in rows.column_names:
            return
        stored = rows.column("timestamp").to_numpy()[order]
        stamps, expected = stored.astype(np.float64), frame_index / self.fps
        # LeRobot stores float32 seconds: after ~10 minutes their rounding alone exceeds 1e-4 s between frames
        rounding = 2 * np.spacing(np.abs(stored[1:])).astype(np.float64) if np.issubdtype(stored.dtype, np.floating) \
            else 0.0
        # written as "not within" so that NaN timestamps fail too
        off = np.flatnonzero(~(np.abs(stamps - expected) <= 0.4 / self.fps) |
                             np.r_[False, ~(np.abs(np.diff(stamps) - 1 / self.fps) <= TIMESTAMP_TOLERANCE_S + rounding)])
        if len(off):
            i = int(off[0])
            raise DatasetError(f"{ep.data_file}: episode {ep.index}, column 'timestamp': {stamps[i]:.6g} s at frame {i}, "
                               f"expected {expected[i]:.6g} s (frame_index / fps {self.fps:g}; {len(off)} frame(s) "
                               "off): timestamps inconsistent with fps")

    def _lowdim_feature(self, key: str) -> str:
        feature = feature_of_key(key)
        if feature not in self.features or self.features[feature].get("dtype") in ("video", "image"):
            lowdim = sorted(k for k, v in self.features.items()
                            if v.get("dtype") not in ("video", "image") and k not in BOOKKEEPING)
            raise DatasetError(f"{self.path}: no feature {feature!r} for key {key!r}; available low-dim features: "
                               f"{lowdim} (our names: {self.lowdim_keys})")
        return feature

    def read_lowdim(self, episode: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        features = {key: self._lowdim_feature(key) for key in keys}
        rows = self._data_rows(self.episode(episode), list(dict.fromkeys(features.values())))
        return {key: rows[feature].astype(np.float32) for key, feature in features.items()}

    def read_actions(self, episode: str) -> np.ndarray:
        actions = self._data_rows(self.episode(episode), [ACTION_FEATURE])[ACTION_FEATURE]
        return actions.reshape(len(actions), -1).astype(np.float32)

    def _cursor(self, feature: str, path: Path) -> VideoCursor:
        cursor = self._cursors.get(feature)
        if cursor is None or cursor.path != path:
            if cursor is not None:
                cursor.close()
            if not path.is_file():
                raise DatasetError(f"{self.path}: video file {path} not found")
            cursor = self._cursors[feature] = VideoCursor(path, self.fps)
        return cursor

    def image_cells(self, ep: LeRobotEpisode, feature: str) -> tuple[list[bytes | None], list[str | None]]:
        """(bytes, path) of the episode's cells of an image feature, ordered by frame_index; checks the row count."""
        key = (feature, ep.data_file)
        if key in self._cells:
            self._cells.move_to_end(key)
        else:
            if not ep.data_file.is_file():
                raise DatasetError(f"{self.path}: episode {ep.index}: data file {ep.data_file} not found")
            names = _parquet(self._pq.read_schema, ep.data_file).names
            missing = [c for c in (feature, "episode_index", "frame_index") if c not in names]
            if missing:
                raise DatasetError(f"{ep.data_file}: no column(s) {missing} (declared in meta/info.json features)")
            table = _parquet(self._pq.read_table, ep.data_file, columns=[feature, "episode_index", "frame_index"])
            cells = image_column(table, feature, str(ep.data_file))
            self._cells[key] = (cells, table.column("episode_index").to_numpy(), table.column("frame_index").to_numpy())
            while len(self._cells) > IMAGE_COLUMNS_KEPT:
                self._cells.popitem(last=False)
        (data, paths), episode_column, frame_column = self._cells[key]
        rows = np.flatnonzero(episode_column == ep.index)
        if len(rows) != ep.length:
            raise DatasetError(f"{ep.data_file}: episode {ep.index} has {len(rows)} Parquet rows but its metadata says "
                               f"length {ep.length}")
        rows = rows[np.argsort(frame_column[rows], kind="stable")]
        if not np.array_equal(frame_column[rows], np.arange(ep.length)):
            raise DatasetError(f"{ep.data_file}: episode {ep.index}, column 'frame_index': expected 0..{ep.length - 1} "
                               "(rows missing or repeated)")
        return [data[i] for i in rows], [paths[i] for i in rows]

    def _decode_cells(self, ep: LeRobotEpisode, feature: str, steps: Sequence[int]) -> np.ndarray:
        """uint8 (len(steps), H, W, 3): the episode's image cells at `steps`, each decoded and checked."""
        data, paths = self.image_cells(ep, feature)
        shape = self.declared_image(feature)[0]
        frames = []
        for t in steps:
            where = f"{ep.data_file}: episode {ep.index}, frame {t}, feature {feature!r}"
            frames.append(decode_image(cell_bytes(data[t], paths[t], self.path, where), shape, where))
        return np.stack(frames) if frames else np.zeros((0, *shape, 3), np.uint8)

    def iter_frames(self, episode: str, camera: str, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
        feature = self._require_camera(camera)
        ep = self.episode(episode)
        if feature in self.image_features:
            for start in range(0, ep.length, chunk):
                yield start, self._decode_cells(ep, feature, range(start, min(start + chunk, ep.length)))
            return
        path, start = ep.videos[feature]
        yield from self._cursor(feature, path).read(start, ep.length, chunk)

    def frames_random_access(self, camera: str) -> bool:
        return self._require_camera(camera) in self.image_features

    def read_frames(self, episode: str, camera: str, steps: Sequence[int]) -> np.ndarray:
        """Image features decode only `steps`; videos are decoded from the episode's start (read forward)."""
        feature = self._require_camera(camera)
        if feature in self.image_features:
            ep = self.episode(episode)
            bad = [s for s in steps if not 0 <= s < ep.length]
            if bad:
                raise DatasetError(f"{self.path}: episode {ep.index} has {ep.length} frames; steps {bad[:5]} are out "
                                   "of range")
            return self._decode_cells(ep, feature, list(steps))
        frames = np.concatenate([f for _, f in self.iter_frames(episode, camera, 64)])
        return frames[list(steps)]

    def split(self) -> tuple[list[str], list[str]]:
        """The split recorded by `export_lerobot` (that of the source file), else a seeded 90/10 split by episode."""
        recorded = self.sidecar.get("splits") or {}
        if "train" in recorded:
            known = set(self.episodes)
            unknown = [e for e in list(recorded["train"]) + list(recorded.get("valid", [])) if e not in known]
            if unknown:
                raise DatasetError(
                    f"{self.path / SIDECAR_FILE}: splits name episodes not in the dataset: {unknown[:5]}")
            return list(recorded["train"]), list(recorded.get("valid", []))
        split = split_train_valid(self.episodes)
        return split["train"], split["valid"]

    def seeds(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in (self.sidecar.get("seeds") or {}).items()}

    def tasks(self, episode: str) -> list[str]:
        """The task strings of one episode."""
        return list(self.episode(episode).tasks)

    def hash_frames(self, h: hashlib._Hash, camera: str) -> None:
        feature = self._require_camera(camera)
        h.update(json.dumps([self.version, self.fps, self.features[feature]], sort_keys=True).encode())
        if feature in self.image_features:  # the encoded images of each episode, in frame order
            for ep in self._episodes:
                h.update(f"{ep.name}|{ep.length}|".encode())
                for t, (data, path) in enumerate(zip(*self.image_cells(ep, feature))):
                    where = f"{ep.data_file}: episode {ep.index}, frame {t}, feature {feature!r}"
                    encoded = cell_bytes(data, path, self.path, where)
                    h.update(f"{len(encoded)}|".encode())
                    h.update(encoded)
            return
        hashed: set[Path] = set()
        for ep in self._episodes:
            path, start = ep.videos[feature]
            h.update(f"{ep.name}|{ep.length}|{path.relative_to(self.path)}|{start!r}|".encode())
            if path not in hashed:
                hashed.add(path)
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)

    def modification_stamp(self) -> str:
        parts = [str(self.path.resolve())]
        for sub in ("meta", "data", "videos", "images"):  # images: files that cells without bytes name
            for f in sorted((self.path / sub).rglob("*")):
                if f.is_file():
                    st = f.stat()
                    parts.append(f"{f.relative_to(self.path)}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def close(self) -> None:
        for cursor in self._cursors.values():
            cursor.close()
        self._cursors.clear()
        self._rows.clear()
        self._cells.clear()
