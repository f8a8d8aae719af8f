"""Cost of the dataset check every stage runs first (`s2policy.data.check_dataset`), on a file shaped like a collected
high-resolution one, against what caching its result by content hash would cost (hashing the file).

    python benchmarks/dataset_check.py --demos 100 --length 120 --size 448 --out /path/to/check_bench.hdf5

Writes (or reuses) the file with the collector's layout -- obs/agentview_image uint8 (T, 448, 448, 3) gzip in
one-frame chunks, obs/proprio (T, 16), obs/object (T, 7), float64 states, rewards, dones, a model_file attribute,
mask/train + mask/valid -- filled with synthetic smooth frames (content does not change the check's cost: it never
reads images). Prints JSON: check seconds with the file's pages evicted from the OS cache (cold) and cached (warm),
and sha256 of the whole file (the least a content-hash cache key would need to read).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from s2policy.data import DemoWriter, check_dataset
from s2policy.encoders.download import sha256_file


def write_file(path: Path, demos: int, length: int, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    background = np.stack([yy, xx, 0.5 * (yy + xx)], axis=-1) * 200
    model_file = "<mujoco>" + " " * 60_000 + "</mujoco>"  # robosuite's MJCF per demo is tens of kB
    with DemoWriter(path) as writer:
        for _ in range(demos):
            frames = np.empty((length, size, size, 3), np.uint8)
            for t in range(length):
                frame = background.copy()
                y, x = rng.integers(0, size - size // 8, 2)
                frame[y:y + size // 8, x:x + size // 8] = (230, 40, 40)  # a moving "cube"
                frames[t] = frame.astype(np.uint8)
            obs = {"agentview_image": frames,
                   "proprio": rng.normal(size=(length, 16)).astype(np.float32),
                   "object": rng.normal(size=(length, 7)).astype(np.float32)}
            writer.add_demo(rng.uniform(-1, 1, (length, 7)).astype(np.float32), obs,
                            states=rng.normal(size=(length, 32)), rewards=np.zeros(length), dones=np.zeros(length),
                            attrs={"model_file": model_file})
        writer.finish({"env_name": "Lift", "env_type": 1, "env_kwargs": {"camera_size": size}})


def evict(path: Path) -> None:
    """Drop this file's pages from the OS cache (only this file's), so the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demos", type=int, default=100)
    p.add_argument("--length", type=int, default=120)
    p.add_argument("--size", type=int, default=448)
    p.add_argument("--out", required=True, help="the benchmark file (reused when it exists)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    path = Path(args.out)
    if not path.exists():
        write_file(path, args.demos, args.length, args.size)
    cold, warm = [], []
    for _ in range(args.repeats):
        evict(path)
        cold.append(timed(lambda: check_dataset(path)))
        warm.append(timed(lambda: check_dataset(path)))
    evict(path)
    hash_cold = timed(lambda: sha256_file(path))
    hash_warm = timed(lambda: sha256_file(path))
    print(json.dumps({
        "benchmark": "dataset_check",
        "file": {"demos": args.demos, "steps_per_demo": args.length, "image": [args.size, args.size, 3],
                 "bytes": path.stat().st_size},
        "check_seconds_cold": [round(t, 3) for t in cold],
        "check_seconds_warm": [round(t, 3) for t in warm],
        "sha256_whole_file_seconds": {"cold": round(hash_cold, 2), "warm": round(hash_warm, 2)},
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
    }, indent=1))


if __name__ == "__main__":
    main()
