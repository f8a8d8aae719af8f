"""mp4 videos of rollouts (H.264 via imageio-ffmpeg), written atomically and streamed frame by frame.

Streaming keeps memory flat at any camera size (a 200-step episode at 448 px is 120 MB of raw frames).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from ..fileio import atomic_path


class VideoWriter:
    """Write uint8 RGB frames (H, W, 3) of one size to `path`; the file appears only when `close()` succeeds.

    Odd frame sizes are fine: ffmpeg pads/rescales to even sides, which yuv420p needs.
    """

    def __init__(self, path: str | Path, fps: float = 20.0):
        self.path = Path(path)
        self.fps = fps
        self.frames = 0
        self._stack: contextlib.ExitStack | None = None
        self._pipe = None
        self._shape: tuple[int, ...] | None = None

    def add(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"video frames must be uint8 (H, W, 3), got shape {frame.shape}")
        if self._pipe is None:
            self._open(frame.shape)
        elif frame.shape != self._shape:
            raise ValueError(f"{self.path}: frame shape changed from {self._shape} to {frame.shape}")
        self._pipe.send(frame.tobytes())
        self.frames += 1

    def _open(self, shape: tuple[int, ...]) -> None:
        import imageio_ffmpeg

        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.path))
        # The temporary name ends in .tmp, so the container format is given explicitly.
        self._pipe = imageio_ffmpeg.write_frames(str(tmp), (shape[1], shape[0]), fps=self.fps, macro_block_size=2,
                                                 output_params=["-f", "mp4"], ffmpeg_log_level="error")
        self._pipe.send(None)
        self._shape = shape

    def close(self) -> Path | None:
        """Finish the file and move it into place; returns its path (None if no frame was ever added)."""
        if self._pipe is None:
            return None
        self._pipe.close()
        self._pipe = None
        self._stack.close()  # fsync + rename
        return self.path

    def abort(self) -> None:
        """Drop a partial video (no file is left behind)."""
        if self._pipe is None:
            return
        with contextlib.suppress(Exception):
            self._pipe.close()
        self._pipe = None
        self._stack.__exit__(RuntimeError, RuntimeError("video aborted"), None)


def read_video_info(path: str | Path) -> dict:
    """{'frames': int, 'seconds': float, 'size': (W, H), 'codec': str} of an mp4, decoding every frame (so a truncated
    file fails here). Raises OSError/RuntimeError for a file ffmpeg cannot read."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    frames = sum(1 for _ in reader)
    return {"frames": frames, "seconds": frames / meta["fps"] if meta.get("fps") else float("nan"),
            "size": tuple(meta["size"]), "codec": meta.get("codec", "")}
