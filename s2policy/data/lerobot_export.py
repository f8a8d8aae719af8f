"""Export a dataset of ours (a robomimic file, e.g. `envs.collect_demos` output) as a LeRobot v3.0 dataset that
LeRobot's own loader reads, so LeRobot's policies can train on our tasks.

Mapping (the reverse of what lerobot.py reads): camera `<c>` (obs key `<c>_image`) -> video feature
`observation.images.<c>`; the proprio keys, concatenated -> `observation.state`; every other low-dim observation
`<k>` -> `observation.<k>`; actions -> `action`. Each camera's episodes go back to back into one MP4 (AV1 by
default, as LeRobot records), all rows into one Parquet file. What LeRobot has no field for (env_args, reset seeds,
the train/valid split) goes to meta/s2policy.json, so training on the export splits and evaluates like the source.

The dataset is written into a temporary sibling folder, fsync'ed and renamed into place only when complete.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import DatasetError
from ..fileio import atomic_dir
from .episodes import EpisodeReader, open_episodes
from .lerobot import ACTION_FEATURE, IMAGES_PREFIX, SIDECAR_FILE, STATE_FEATURE
from .validate import validate
from .video import VideoWriter

log = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_FILE = "meta/episodes/chunk-000/file-000.parquet"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)


@dataclass(frozen=True)
class VideoSettings:
    """How camera streams are encoded: LeRobot's recorder settings (AV1, yuv420p, keyframe every 2 frames, CRF 30),
    with SVT-AV1 preset 8 (see `VideoWriter`)."""

    codec: str = "libsvtav1"
    pix_fmt: str = "yuv420p"
    gop: int = 2
    crf: int = 30
    preset: int | None = 8


def _lowdim_stats(x: np.ndarray) -> dict[str, Any]:
    """LeRobot's per-feature statistics of (N, D) values."""
    x = x.astype(np.float64)
    stats = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([len(x)])}
    for q in QUANTILES:
        stats[f"q{round(q * 100):02d}"] = np.quantile(x, q, axis=0)
    return {k: v.tolist() for k, v in stats.items()}


class _ImageStats:
    """Running per-channel statistics of uint8 frames, in [0, 1] and shaped (3, 1, 1) as LeRobot stores them."""

    def __init__(self) -> None:
        self.frames, self.pixels = 0, 0
        self.total, self.sq = np.zeros(3), np.zeros(3)
        self.lo, self.hi = np.full(3, 255.0), np.zeros(3)

    def add(self, frames: np.ndarray) -> None:
        x = frames.reshape(-1, 3).astype(np.float64)
        self.frames += len(frames)
        self.pixels += len(x)
        self.total += x.sum(0) / 255
        self.sq += (x**2).sum(0) / 255**2
        self.lo, self.hi = np.minimum(self.lo, x.min(0)), np.maximum(self.hi, x.max(0))

    def result(self) -> dict[str, Any]:
        mean = self.total / self.pixels
        std = np.sqrt(np.maximum(self.sq / self.pixels - mean**2, 0.0))

        def shaped(v: np.ndarray) -> list:
            return v.reshape(3, 1, 1).tolist()

        return {"min": shaped(self.lo / 255), "max": shaped(self.hi / 255), "mean": shaped(mean), "std": shaped(std),
                "count": [self.frames]}


def _fixed_list(values: np.ndarray) -> Any:
    import pyarrow as pa

    values = np.ascontiguousarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def _write_parquet(table: Any, path: Path) -> None:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _tasks_table(tasks: Sequence[str]) -> Any:
    """meta/tasks.parquet: task_index per task string, the string being the (pandas) index as LeRobot writes it."""
    import pyarrow as pa

    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(list(tasks))})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "attributes": {}, "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.0.0",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def _resolve_fps(reader: EpisodeReader, fps: float | None) -> int:
    if fps is None:
        fps = reader.env_args.get("env_kwargs", {}).get("control_freq")
    if fps is None:
        raise DatasetError(f"{reader.path}: the dataset records no control frequency; pass fps")
    if float(fps) != int(fps) or int(fps) <= 0:
        raise DatasetError(f"fps must be a positive integer (LeRobot stores an int), got {fps}")
    return int(fps)


def export_lerobot(source: str | os.PathLike, out: str | os.PathLike, *, fps: float | None = None,
                   cameras: Sequence[str] | None = None, proprio_keys: Sequence[str] = ("proprio",),
                   task: str | None = None, robot_type: str | None = None,
                   video: VideoSettings = VideoSettings(), progress: bool = False) -> Path:
    """Write `source` (any dataset `open_episodes` reads; validated first) as a LeRobot v3.0 dataset folder `out`.

    fps: frames per second (default: env_args' control_freq). cameras: default all stored cameras. task: the task
    string of every episode (default: the env_args task name, else the file name). progress: a tqdm bar over
    episodes. Raises DatasetError before
    writing anything when `out` exists or the source is bad.
    """
    import pyarrow as pa

    source, out = Path(source), Path(out)
    if out.exists():
        raise DatasetError(f"{out}: already exists; remove it or choose another output folder")
    validate(source)
    with open_episodes(source) as reader:
        fps = _resolve_fps(reader, fps)
        cameras = list(cameras) if cameras is not None else reader.cameras
        shapes = {c: reader.frame_shape(c) for c in cameras}
        missing = [c for c, s in shapes.items() if s is None]
        if missing:
            raise DatasetError(f"{source}: no stored frames for camera(s) {missing}; cameras: {reader.cameras}")
        others = [k for k in reader.lowdim_keys if k not in proprio_keys]
        env_args = reader.env_args
        task = task or env_args.get("env_kwargs", {}).get("task") or source.stem
        with atomic_dir(out) as tmp:
            _write(reader, tmp, fps, cameras, shapes, list(proprio_keys), others, task,
                   robot_type or env_args.get("env_kwargs", {}).get("robots"), video, progress, pa)
    log.info("exported %s to LeRobot %s dataset %s", source, CODEBASE_VERSION, out)
    return out


def _write(reader: EpisodeReader, root: Path, fps: int, cameras: list[str], shapes: dict[str, tuple[int, int]],
           proprio_keys: list[str], others: list[str], task: str, robot_type: str | None, video: VideoSettings,
           progress: bool, pa: Any) -> None:
    names = reader.episodes
    renamed = {name: f"episode_{i:06d}" for i, name in enumerate(names)}
    video_keys = {c: IMAGES_PREFIX + c for c in cameras}
    writers, image_stats = {}, {c: _ImageStats() for c in cameras}
    for cam, key in video_keys.items():
        path = root / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        writers[cam] = VideoWriter(path, fps, *shapes[cam], codec=video.codec, pix_fmt=video.pix_fmt, gop=video.gop,
                                   crf=video.crf, preset=video.preset)
    rows: dict[str, list[np.ndarray]] = {"state": [], "action": [], **{k: [] for k in others}}
    proprio_dims: dict[str, int] = {}
    episodes: dict[str, list] = {"episode_index": [], "length": [], "dataset_from_index": [], "dataset_to_index": []}
    offset = 0
    try:
        for i, name in enumerate(tqdm(names, desc="export", unit="episode", disable=not progress)):
            actions = reader.read_actions(name)
            n = len(actions)
            lowdim = reader.read_lowdim(name, proprio_keys + others)
            proprio_dims = {k: int(np.prod(lowdim[k].shape[1:])) for k in proprio_keys}
            rows["state"].append(np.concatenate([lowdim[k].reshape(n, -1) for k in proprio_keys], axis=1))
            rows["action"].append(actions)
            for k in others:
                rows[k].append(lowdim[k].reshape(n, -1))
            for cam in cameras:
                written = 0
                for _, frames in reader.iter_frames(name, cam, 64):
                    writers[cam].write(frames)
                    image_stats[cam].add(frames)
                    written += len(frames)
                if written != n:
                    raise DatasetError(f"{reader.path}: episode {name}, camera {cam!r}: {written} frames for {n} steps")
            for col, v in (("episode_index", i), ("length", n), ("dataset_from_index", offset),
                           ("dataset_to_index", offset + n)):
                episodes[col].append(v)
            offset += n
    finally:
        for w in writers.values():
            w.close()

    lengths = np.array(episodes["length"])
    episode_of_row = np.repeat(np.arange(len(names)), lengths)
    frame_index = np.concatenate([np.arange(n) for n in lengths])
    state, action = np.concatenate(rows["state"]), np.concatenate(rows["action"])
    columns = {STATE_FEATURE: _fixed_list(state), ACTION_FEATURE: _fixed_list(action)}
    for k in others:
        columns[f"observation.{k}"] = _fixed_list(np.concatenate(rows[k]))
    columns.update({
        "timestamp": pa.array((frame_index / fps).astype(np.float32)),
        "frame_index": pa.array(frame_index.astype(np.int64)),
        "episode_index": pa.array(episode_of_row.astype(np.int64)),
        "index": pa.array(np.arange(offset, dtype=np.int64)),
        "task_index": pa.array(np.zeros(offset, dtype=np.int64)),
    })
    _write_parquet(pa.table(columns), root / DATA_PATH.format(chunk_index=0, file_index=0))

    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) / fps
    meta = {**episodes, "tasks": [[task]] * len(names), "data/chunk_index": [0] * len(names),
            "data/file_index": [0] * len(names)}
    for key in video_keys.values():
        meta.update({f"videos/{key}/chunk_index": [0] * len(names), f"videos/{key}/file_index": [0] * len(names),
                     f"videos/{key}/from_timestamp": starts.tolist(),
                     f"videos/{key}/to_timestamp": (starts + lengths / fps).tolist()})
    meta.update({"meta/episodes/chunk_index": [0] * len(names), "meta/episodes/file_index": [0] * len(names)})
    _write_parquet(pa.table(meta), root / EPISODES_FILE)
    _write_parquet(_tasks_table([task]), root / "meta" / "tasks.parquet")

    features: dict[str, Any] = {}
    for cam, key in video_keys.items():
        h, w = shapes[cam]
        features[key] = {
            "dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
            "info": {"video.height": h, "video.width": w, "video.codec": writers[cam].codec_name,
                     "video.pix_fmt": video.pix_fmt, "video.is_depth_map": False, "video.fps": fps,
                     "video.channels": 3, "has_audio": False, "video.g": video.gop, "video.crf": video.crf,
                     "video.preset": video.preset},
        }
    features[STATE_FEATURE] = {"dtype": "float32", "shape": [state.shape[1]],
                               "names": [f"{k}_{j}" for k in proprio_keys for j in range(proprio_dims[k])]}
    features[ACTION_FEATURE] = {"dtype": "float32", "shape": [action.shape[1]],
                                "names": [f"action_{j}" for j in range(action.shape[1])]}
    for k in others:
        dim = rows[k][0].shape[1]
        features[f"observation.{k}"] = {"dtype": "float32", "shape": [dim], "names": [f"{k}_{j}" for j in range(dim)]}
    for col, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                       ("index", "int64"), ("task_index", "int64")):
        features[col] = {"dtype": dtype, "shape": [1], "names": None}
    info = {
        "codebase_version": CODEBASE_VERSION, "fps": fps, "features": features,
        "total_episodes": len(names), "total_frames": offset, "total_tasks": 1,
        "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 200,
        "data_path": DATA_PATH, "video_path": VIDEO_PATH, "robot_type": robot_type,
        "splits": {"train": f"0:{len(names)}"},
    }
    stats: dict[str, Any] = {STATE_FEATURE: _lowdim_stats(state), ACTION_FEATURE: _lowdim_stats(action)}
    for k in others:
        stats[f"observation.{k}"] = _lowdim_stats(np.concatenate(rows[k]))
    for cam, key in video_keys.items():
        stats[key] = image_stats[cam].result()
    train, valid = reader.split()
    sidecar = {
        "source": reader.path.name, "source_format": reader.format, "episodes": renamed,
        "env_args": reader.env_args,
        "seeds": {renamed[k]: v for k, v in reader.seeds().items() if k in renamed},
        "splits": {"train": [renamed[k] for k in train], "valid": [renamed[k] for k in valid]},
    }
    for rel, content in (("meta/info.json", info), ("meta/stats.json", stats), (SIDECAR_FILE, sidecar)):
        (root / rel).write_text(json.dumps(content, indent=2))

