"""Camera frames: the one uint8 -> float conversion, and streaming frame batches out of a demonstration dataset.

Training, evaluation and the robot loop all call `frames_to_tensor`, so a policy always sees the preprocessing it was
trained with. Resizing to each S2 scale happens inside `S2Encoder`, not here.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import EpisodeReader, open_episodes
from ..data import image_key as image_key  # re-exported: policy and runtime import it from here
from ..errors import ConfigError

log = logging.getLogger(__name__)


def frames_to_tensor(frames: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 RGB frames (H, W, 3) or (N, H, W, 3) -> float32 (N, 3, H, W) in [0, 1] on `device`.

    The uint8 -> float cast happens on `device` (4x less host-to-device traffic on a GPU).
    """
    t = torch.as_tensor(np.ascontiguousarray(frames) if isinstance(frames, np.ndarray) else frames)
    if t.dtype != torch.uint8:
        raise ValueError(f"camera frames must be uint8 RGB, got dtype {t.dtype}")
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"camera frames must be (H, W, 3) or (N, H, W, 3) uint8, got shape {tuple(t.shape)}")
    return t.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)


@dataclass(frozen=True)
class FrameSource:
    """Where one camera's frames come from: frames the dataset stores (images or videos, any dataset format), or
    re-rendered from `states` (robomimic files of our simulated tasks).

    `frame_shape` is (H, W) of the frames the encoder will see; it is part of the feature cache key.
    """

    path: Path
    camera: str
    kind: str  # "stored" | "render"
    frame_shape: tuple[int, int]
    camera_size: int | None

    def demo_frames(self, dataset: EpisodeReader, demo: str, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first index, uint8 (n, H, W, 3)) chunks of one episode, read sequentially."""
        if self.kind == "stored":
            yield from dataset.iter_frames(demo, self.camera, chunk)
        else:
            from envs import rerender  # the simulator is only needed when frames are re-rendered

            frames = rerender(str(self.path), demo, camera=self.camera, camera_size=self.camera_size)
            for t0 in range(0, len(frames), chunk):
                yield t0, frames[t0 : t0 + chunk]


def resolve_frame_source(
    path: str | Path, camera: str, camera_size: int | None, source: str = "auto", native_size: int | None = None
) -> FrameSource:
    """Decide where `camera`'s frames come from and check them, raising one ConfigError that names file and key.

    source: "stored" (frames in the dataset), "render" (re-render from states at `camera_size`), or "auto" (stored
    when their size matches `camera_size` or `camera_size` is None, else render). Stored frames may be non-square
    (e.g. a real robot's 480x640); S2 tiles them per axis.
    """
    path = Path(path)
    if source not in ("auto", "stored", "render"):
        raise ConfigError(f"features.source={source!r}: expected auto, stored or render")
    if camera_size is not None and native_size is not None and camera_size < native_size and source != "stored":
        raise ConfigError(
            f"camera size {camera_size} is below the encoder's native input size {native_size}: "
            f"S2 would upsample every scale; use task.camera_size >= {native_size}, or features.source=stored to take "
            "stored frames of that size upsampled"
        )
    with open_episodes(path) as ds:
        if not ds.episodes:
            raise ConfigError(f"{path}: the dataset holds no episodes")
        stored_shape = ds.frame_shape(camera)
        has_states, env_args, present = ds.has_states, ds.env_args, sorted(ds.camera_keys.values())
        where = ds.camera_keys.get(camera) or ds.camera_key_expected(camera)
    size_ok = stored_shape is not None and (camera_size is None or stored_shape == (camera_size, camera_size))
    if source == "stored" or (source == "auto" and size_ok):
        if stored_shape is None:
            raise ConfigError(
                f"{path}: no {where} for camera {camera!r} (image keys present: {present}); "
                "set task.cameras to one of them or re-render with features.source=render"
            )
        if not size_ok:
            raise ConfigError(
                f"{path}: {where} frames are {stored_shape[0]}x{stored_shape[1]} but task.camera_size={camera_size}; "
                "set task.camera_size=null to use them as stored, or features.source=render"
            )
        if native_size is not None and min(stored_shape) < native_size:
            small = (f"{path}: {where} frames are {stored_shape[0]}x{stored_shape[1]}, below the encoder's native "
                     f"input size {native_size}")
            if source != "stored":  # e.g. robomimic's 84x84 or LIBERO's 128x128 image datasets: an explicit choice
                raise ConfigError(f"{small}; re-render them larger (features.source=render task.camera_size=...) or "
                                  "set features.source=stored to upsample them (S2's larger scales then add no detail)")
            log.warning("%s: upsampled to it (features.source=stored); S2's larger scales add no detail", small)
        return FrameSource(path, camera, "stored", stored_shape, camera_size)
    why_not = _why_not_renderable(env_args, camera, has_states, camera_size)
    if why_not:
        stored = f"{stored_shape[0]}x{stored_shape[1]}" if stored_shape else f"absent (image keys present: {present})"
        raise ConfigError(f"{path}: {where} for camera {camera!r} is {stored}, and frames cannot be "
                          f"re-rendered at camera_size={camera_size}: {why_not}")
    return FrameSource(path, camera, "render", (camera_size, camera_size), camera_size)


def _why_not_renderable(env_args: dict, camera: str, has_states: bool, camera_size: int | None) -> str | None:
    """Why frames of `camera` cannot be re-rendered from this file's states (None when they can)."""
    if not has_states:
        return "its episodes have no simulator 'states'"
    if camera_size is None:
        return "task.camera_size is null"
    task = env_args.get("env_kwargs", {}).get("task")
    if task is None:
        return "env_args names no task (the file was not written by envs.collect_demos)"
    try:
        from envs import get_task
    except ImportError as e:
        return f"the simulator extras are not installed ({e})"
    cameras = get_task(task).cameras
    if camera not in cameras:
        return f"task {task!r} has no camera {camera!r} (cameras: {list(cameras)})"
    return None


@dataclass
class FrameBatch:
    """Up to `batch_size` frames packed across demos: `pieces` = [(demo, first index, count)], `frames` uint8."""

    pieces: list[tuple[str, int, int]]
    frames: np.ndarray


def iter_frame_batches(
    source: FrameSource, demos: Sequence[str], batch_size: int, prefetch: int = 2
) -> Iterator[FrameBatch]:
    """Stream frames of `demos` in batches of `batch_size` (packed across demo boundaries, so the encoder always sees
    full batches), read or rendered in a background thread that runs ahead by at most `prefetch` batches.

    Memory is bounded by (prefetch + 2) batches plus one demo when re-rendering, whatever the dataset size.
    """
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()
    _DONE = object()

    def produce() -> None:
        try:
            pieces: list[tuple[str, int, int]] = []
            chunks: list[np.ndarray] = []
            filled = 0
            with open_episodes(source.path) as dataset:
                for demo in demos:
                    for t0, frames in source.demo_frames(dataset, demo, batch_size):
                        while len(frames):
                            take = min(batch_size - filled, len(frames))
                            pieces.append((demo, t0, take))
                            chunks.append(frames[:take])
                            filled += take
                            t0, frames = t0 + take, frames[take:]
                            if filled == batch_size:
                                _put(FrameBatch(pieces, np.concatenate(chunks)))
                                pieces, chunks, filled = [], [], 0
            if filled:
                _put(FrameBatch(pieces, np.concatenate(chunks)))
            _put(_DONE)
        except BaseException as e:  # hand the error to the consumer instead of dying silently in the thread
            _put(e)

    def _put(item: object) -> None:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    thread = threading.Thread(target=produce, name="s2policy-frame-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
