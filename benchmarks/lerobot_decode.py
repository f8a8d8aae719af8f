#!/usr/bin/env python
"""How fast LeRobot camera streams decode for feature extraction: uint8 RGB frames/s through `LeRobotReader`
(sequential, native resolution) on a real-robot-shaped dataset, against a per-frame-seek baseline.

    nice python benchmarks/lerobot_decode.py --out benchmarks/results/lerobot_decode.json

The dataset is written by our exporter (LeRobot's recording settings: AV1 / libsvtav1, yuv420p, a keyframe every
2 frames, CRF 30; SVT preset 8): 2 cameras at 480x640, episodes back to back in one file per camera (format v3.0).
Frames are a textured scene under a moving viewpoint, so the codec has real work to do.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from s2policy.data import DemoWriter, open_episodes  # noqa: E402
from s2policy.data.lerobot_export import export_lerobot  # noqa: E402
from s2policy.data.video import VideoCursor  # noqa: E402


def scene(h: int, w: int, seed: int) -> np.ndarray:
    """A random scene twice the frame size (uint8 (2h, 2w, 3)): smooth blobs plus mild sensor noise, roughly the
    bitrate of a tabletop camera; frames are moving windows onto it."""
    import torch

    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, 2 * h // 32, 2 * w // 32)).astype(np.float32))
    smooth = torch.nn.functional.interpolate(coarse, size=(2 * h, 2 * w), mode="bicubic", align_corners=False)
    img = smooth[0].permute(1, 2, 0).numpy() + rng.normal(0, 2, (2 * h, 2 * w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def write_source(path: Path, episodes: int, length: int, h: int, w: int) -> None:
    rng = np.random.default_rng(0)
    with DemoWriter(path, image_compression_level=1) as writer:
        for e in range(episodes):
            obs = {}
            for c, cam in enumerate(("front", "wrist")):
                world = scene(h, w, 10 * e + c)
                ys = (np.linspace(0, h - 1, length) * (0.3 + 0.2 * c)).astype(int)
                xs = (np.linspace(0, w - 1, length) * 0.5).astype(int)
                obs[f"{cam}_image"] = np.stack([world[y:y + h, x:x + w] for y, x in zip(ys, xs)])
            obs["proprio"] = rng.normal(size=(length, 6)).astype(np.float32)
            writer.add_demo(rng.uniform(-1, 1, (length, 6)).astype(np.float32), obs, attrs={"seed": e})
        writer.finish({"env_name": "synthetic", "env_type": 2, "env_kwargs": {"control_freq": 30}})


def sequential_fps(dataset: Path, chunk: int) -> dict:
    frames = 0
    t0 = time.perf_counter()
    with open_episodes(dataset) as r:
        for ep in r.episodes:
            for cam in r.cameras:
                for _, batch in r.iter_frames(ep, cam, chunk):
                    frames += len(batch)
    seconds = time.perf_counter() - t0
    return {"frames": frames, "seconds": round(seconds, 3), "frames_per_s": round(frames / seconds, 1)}


def seek_per_frame_fps(dataset: Path, samples: int) -> dict:
    """Baseline: every frame fetched on its own (a seek to the keyframe before it, then decode forward)."""
    with open_episodes(dataset) as r:
        ep = r.episode(r.episodes[len(r.episodes) // 2])
        path, start = ep.videos["observation.images.front"]
        fps = r.fps
    rng = np.random.default_rng(0)
    cursor = VideoCursor(path, fps)
    t0 = time.perf_counter()
    for i in rng.integers(0, ep.length, samples):
        cursor._next_time = None  # force a seek, as a random-access reader would
        next(cursor.read(start + i / fps, 1, 1))
    seconds = time.perf_counter() - t0
    cursor.close()
    return {"frames": samples, "seconds": round(seconds, 3), "frames_per_s": round(samples / seconds, 1)}


def size_parser(description: str) -> argparse.ArgumentParser:
    """The dataset-size options the LeRobot decode benchmarks share, and --out."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--length", type=int, default=90)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--out", type=Path, default=None)
    return parser


def report(result: dict, out: Path | None) -> None:
    """Print the result as JSON, and write it to `out` when given."""
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        out.write_text(text + "\n")


def main() -> None:
    args = size_parser(__doc__).parse_args()
    import av

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "demos.hdf5", Path(tmp) / "lerobot"
        write_source(src, args.episodes, args.length, args.height, args.width)
        t0 = time.perf_counter()
        export_lerobot(src, dst)
        export_s = time.perf_counter() - t0
        video_bytes = sum(f.stat().st_size for f in (dst / "videos").rglob("*.mp4"))
        result = {
            "dataset": {"format": "lerobot-v3.0", "cameras": 2, "height": args.height, "width": args.width,
                        "episodes": args.episodes, "frames_per_camera": args.episodes * args.length,
                        "codec": "av1 (libsvtav1, crf 30, gop 2, yuv420p, preset 8)",
                        "video_mb": round(video_bytes / 2**20, 2)},
            "export_seconds": round(export_s, 1),
            "sequential_decode": sequential_fps(dst, chunk=16),
            "seek_per_frame_decode": seek_per_frame_fps(dst, samples=60),
            "machine": {"cpu_count": __import__("os").cpu_count(), "platform": platform.platform(),
                        "pyav": av.__version__, "ffmpeg": ".".join(map(str, av.library_versions["libavcodec"]))},
        }
    report(result, args.out)


if __name__ == "__main__":
    main()
