"""Simulator throughput on this machine, printed as JSON.

- env steps/s with one camera at each size (and with no camera) for lift and one Meta-World task;
- demonstration collection throughput (demos/min, frames/s) with 1 and 2 workers.

    nice python benchmarks/env_speed.py --steps 100 --demos 6 > env_speed.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def env_steps_per_second(task: str, camera_size: int | None, steps: int) -> float:
    """Random-action steps/s including rendering the task's main camera (camera_size None: no camera)."""
    import envs

    env = envs.make_env(task, cameras=[] if camera_size is None else None, camera_size=camera_size or 64)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    env.step(rng.uniform(-1, 1, env.task.action_dim))  # warm-up: first frame compiles shaders
    start, done = time.perf_counter(), 0
    while done < steps:
        _, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, env.task.action_dim))
        done += 1
        if terminated or truncated:
            env.reset(seed=done)
    seconds = time.perf_counter() - start
    env.close()
    return round(steps / seconds, 1)


def collection_throughput(task: str, demos: int, workers: int, camera_size: int) -> dict:
    import envs

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        summary = envs.collect_demos(task, demos, Path(folder) / "demos.hdf5", camera_size=camera_size,
                                     workers=workers, progress=False)
        seconds = time.perf_counter() - start
    return {"task": task, "workers": workers, "camera_size": camera_size, "demos": summary["demos"],
            "frames": summary["samples"], "seconds": round(seconds, 1),
            "demos_per_min": round(60 * summary["demos"] / seconds, 2),
            "frames_per_s": round(summary["samples"] / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=["lift", "mw-drawer-open"], help="none: skip env steps")
    parser.add_argument("--sizes", nargs="+", type=int, default=[224, 448])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--demos", type=int, default=6)
    parser.add_argument("--collect-task", default="lift")
    parser.add_argument("--collect-size", type=int, default=224)
    args = parser.parse_args()
    results: dict = {"env_steps_per_s": [], "collection": []}
    for task in args.tasks:
        for size in [None, *args.sizes]:
            results["env_steps_per_s"].append(
                {"task": task, "camera_size": size, "steps_per_s": env_steps_per_second(task, size, args.steps)})
            print(json.dumps(results["env_steps_per_s"][-1]), flush=True)
    for workers in (1, 2):
        results["collection"].append(collection_throughput(args.collect_task, args.demos, workers, args.collect_size))
        print(json.dumps(results["collection"][-1]), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
