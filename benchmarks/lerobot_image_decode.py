#!/usr/bin/env python
"""LeRobot image features (frames as PNG cells in the data Parquet): what the cheap check costs against decoding.

    nice python benchmarks/lerobot_image_decode.py --out benchmarks/results/lerobot_image_decode.json

The dataset copies the layout and Parquet schema of `tests/fixtures/lerobot/v21_images` (written by LeRobot 0.3.3
with use_videos=False) at a real-robot size: 2 cameras at 480x640, PNG at compress level 1 as LeRobot's image writer
saves them, frames that are moving windows onto a textured scene (benchmarks/lerobot_decode.py). Measured:
`validate` (image headers only, plus the Parquet checks), sequential decoding (`iter_frames`, what feature
extraction does) and single-step reads (`read_frames`, what features.cache=false does).
"""

from __future__ import annotations

import io
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from lerobot_decode import report, scene, size_parser  # noqa: E402

from s2policy.data import open_episodes, validate  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "lerobot" / "v21_images"
CAMERAS = ("front", "wrist")


def png(frame: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_dataset(root: Path, episodes: int, length: int, h: int, w: int, fps: int = 30) -> int:
    """A v2.1 image-feature dataset in the fixture's layout and schema; returns the bytes of PNG written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(FIXTURE / "data/chunk-000/episode_000000.parquet")
    info = json.loads((FIXTURE / "meta/info.json").read_text())
    for cam in CAMERAS:
        info["features"][f"observation.images.{cam}"]["shape"] = [h, w, 3]
    info.update(fps=fps, total_episodes=episodes, total_frames=episodes * length)
    (root / "meta").mkdir(parents=True)
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    shutil.copy(FIXTURE / "meta/tasks.jsonl", root / "meta/tasks.jsonl")
    lines, png_bytes, rng = [], 0, np.random.default_rng(0)
    for e in range(episodes):
        columns: dict[str, list] = {}
        for c, cam in enumerate(CAMERAS):
            world = scene(h, w, 10 * e + c)
            ys = (np.linspace(0, h - 1, length) * (0.3 + 0.2 * c)).astype(int)
            xs = (np.linspace(0, w - 1, length) * 0.5).astype(int)
            cells = [{"bytes": png(world[y:y + h, x:x + w]), "path": f"frame_{t:06d}.png"}
                     for t, (y, x) in enumerate(zip(ys, xs))]
            png_bytes += sum(len(cell["bytes"]) for cell in cells)
            columns[f"observation.images.{cam}"] = cells
        columns["observation.state"] = list(rng.normal(size=(length, 6)).astype(np.float32))
        columns["action"] = list(rng.normal(size=(length, 6)).astype(np.float32))
        columns["timestamp"] = list(np.arange(length, dtype=np.float32) / fps)
        columns["frame_index"] = list(range(length))
        columns["episode_index"] = [e] * length
        columns["index"] = list(range(e * length, (e + 1) * length))
        columns["task_index"] = [0] * length
        table = pa.table({f.name: pa.array(columns[f.name], type=f.type) for f in schema}, schema=schema)
        out = root / "data" / "chunk-000" / f"episode_{e:06d}.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, out)
        lines.append(json.dumps({"episode_index": e, "tasks": ["pick up the red cube"], "length": length}))
    (root / "meta/episodes.jsonl").write_text("\n".join(lines) + "\n")
    return png_bytes


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    args = size_parser(__doc__).parse_args()
    import PIL

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images_v21"
        png_bytes = write_dataset(root, args.episodes, args.length, args.height, args.width)
        frames = args.episodes * args.length * len(CAMERAS)
        validate_s = timed(lambda: validate(root))

        def sequential() -> None:
            with open_episodes(root) as r:
                for ep in r.episodes:
                    for cam in r.cameras:
                        for _ in r.iter_frames(ep, cam, 16):
                            pass

        decode_s = timed(sequential)
        rng = np.random.default_rng(0)
        picks = [(f"episode_{rng.integers(args.episodes):06d}", int(rng.integers(args.length))) for _ in range(60)]

        def single_steps() -> None:
            with open_episodes(root) as r:
                for ep, t in picks:
                    r.read_frames(ep, "front", [t])

        random_s = timed(single_steps)
    result = {
        "dataset": {"format": "lerobot-v2.1, image features (PNG in Parquet)", "cameras": len(CAMERAS),
                    "height": args.height, "width": args.width, "episodes": args.episodes, "frames": frames,
                    "png_mb": round(png_bytes / 2**20, 1)},
        "validate_seconds": round(validate_s, 3),
        "sequential_decode": {"seconds": round(decode_s, 3), "frames_per_s": round(frames / decode_s, 1)},
        "single_step_reads": {"frames": len(picks), "seconds": round(random_s, 3),
                              "frames_per_s": round(len(picks) / random_s, 1)},
        "machine": {"cpu_count": __import__("os").cpu_count(), "platform": platform.platform(),
                    "pillow": PIL.__version__},
    }
    report(result, args.out)


if __name__ == "__main__":
    main()
