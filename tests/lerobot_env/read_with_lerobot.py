#!/usr/bin/env python
"""Load a dataset with LeRobot's own loader and dump what it returns, for tests that compare it with our data.

Runs in an environment where `lerobot` is installed (a separate one: LeRobot >= 0.5 needs Python >= 3.12):

    lerobot-env/bin/python tests/lerobot_env/read_with_lerobot.py DATASET_FOLDER OUT.npz

OUT.npz holds, per episode e: `frames.<camera>.<e>` uint8 (T, H, W, 3), `state.<e>`, `action.<e>`, `task.<e>`
(the task string of its first frame), plus `fps` and `version`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()

    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    dataset = LeRobotDataset("s2policy/roundtrip", root=args.dataset, video_backend="pyav")
    cameras = list(dataset.meta.camera_keys)
    info = dataset.meta.info
    version = info.codebase_version if hasattr(info, "codebase_version") else info["codebase_version"]
    out: dict[str, np.ndarray] = {"fps": np.array(dataset.fps), "version": np.array(str(version))}
    per_episode: dict[int, dict[str, list]] = {}
    for i in range(len(dataset)):
        item = dataset[i]
        ep = int(item["episode_index"])
        rec = per_episode.setdefault(ep, {"state": [], "action": [], "task": [], **{c: [] for c in cameras}})
        rec["state"].append(item["observation.state"].numpy())
        rec["action"].append(item["action"].numpy())
        rec["task"].append(item["task"])
        for c in cameras:  # float (C, H, W) in [0, 1] -> uint8 (H, W, C)
            rec[c].append((item[c].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    for ep, rec in per_episode.items():
        out[f"state.{ep}"], out[f"action.{ep}"] = np.stack(rec["state"]), np.stack(rec["action"])
        out[f"task.{ep}"] = np.array(rec["task"][0])
        for c in cameras:
            out[f"frames.{c.removeprefix('observation.images.')}.{ep}"] = np.stack(rec[c])
    np.savez(args.out, **out)
    print(f"read {len(dataset)} frames of {len(per_episode)} episodes with LeRobot")


if __name__ == "__main__":
    main()
