"""Where look-closer's selectors put their crops in rendered frames of our tasks (JSON).

For frames of scripted-expert episodes (every `--every`-th step), with EfficientNet-Lite0's ImageNet weights: how
often the crops of `gripper` (k = 1, 2) and of the image-only `saliency` (k = 1, 2) contain the end-effector and the
task object (their positions projected with the camera model; a point counts when it lies inside a crop window).

    python benchmarks/look_closer_selectors.py --threads 1 --out benchmarks/results/look_closer_selectors.json
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch

import envs
from s2policy import build_s2_encoder
from s2policy.features import frames_to_tensor


def inside(boxes: np.ndarray, uv: np.ndarray) -> bool:
    """Whether the normalised point uv (2,) lies in any of the boxes (k, 4)."""
    return bool(((boxes[:, 0] <= uv[0]) & (uv[0] < boxes[:, 2]) & (boxes[:, 1] <= uv[1]) & (uv[1] < boxes[:, 3])).any())


def run_task(task: str, episodes: int, every: int, frame: int) -> dict:
    env = envs.make_env(task, camera_size=frame, seed=0)
    camera = env.cameras[0]
    env.reset(seed=0)
    model = env.camera_model(camera)
    selectors = {f"{sel}_k{k}": build_s2_encoder("efficientnet_lite0", "pretrained", {
        "img_sizes": [224, 448], "selector": sel, "crops": k, "camera_models": {camera: model.to_dict()}})
        for sel in ("gripper", "saliency") for k in (1, 2)}
    expert = envs.make_expert(task)
    hits = {name: {"gripper": 0, "object": 0} for name in selectors}
    frames = 0
    for episode in range(episodes):
        obs, _ = env.reset(seed=100 + episode)
        expert.reset()
        for step in range(env.task.max_steps):
            if step % every == 0:
                eef = torch.as_tensor(obs["proprio"][None, :3])
                targets = {"gripper": eef, "object": torch.as_tensor(obs["object"][None, :3])}
                uv = {k: model.project(v)[0][0].numpy() for k, v in targets.items()}
                x = frames_to_tensor(obs[camera])
                for name, enc in selectors.items():
                    boxes = enc.features(x, eef, camera).boxes[0].numpy()
                    for what in targets:
                        hits[name][what] += inside(boxes, uv[what])
                frames += 1
            obs, _, terminated, truncated, _ = env.step(expert.act(env, obs))
            if terminated or truncated:
                break
    env.close()
    return {"task": task, "camera": camera, "frames": frames,
            "contains": {name: {k: round(v / frames, 3) for k, v in h.items()} for name, h in hits.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["lift", "mw-hammer"])
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--every", type=int, default=5)
    p.add_argument("--frame", type=int, default=224)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/look_closer_selectors.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for task in args.tasks:
        results.append(run_task(task, args.episodes, args.every, args.frame))
        print(json.dumps(results[-1]), flush=True)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"settings": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
