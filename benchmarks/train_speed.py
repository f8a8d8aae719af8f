#!/usr/bin/env python
"""What the feature cache buys: training samples/s with cached features vs encoding every batch (no-cache), feature
extraction frames/s vs the bare S2 encoder's batched frames/s, and peak RSS of extraction on 1k vs 4k frames.

    nice python benchmarks/train_speed.py --out benchmarks/results/train_speed.json

Synthetic robomimic files (no simulator needed); real encoder weights (efficientnet_lite0) when available.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from s2policy.data import open_dataset  # noqa: E402
from s2policy import build_s2_encoder  # noqa: E402
from s2policy.features import build_feature_cache, frames_to_tensor  # noqa: E402
from s2policy.train.synthetic import write_synthetic_demos  # noqa: E402


def run_config(dataset: Path, out_dir: Path, encoder: str, weights: str, s2: dict, camera_size: int,
               steps: int, batch_size: int, cache: bool) -> dict:
    from s2policy.config import compose

    overrides = [f"dataset={dataset}", f"out_dir={out_dir}", f"encoder={encoder}", f"encoder.weights={weights}",
                 f"s2.scales={s2.get('scales')}".replace(" ", "").replace("None", "null"),
                 f"s2.img_sizes={s2.get('img_sizes')}".replace(" ", "").replace("None", "null"),
                 f"task.camera_size={camera_size}", "policy=mlp", f"train.steps={steps}",
                 f"train.batch_size={batch_size}", f"features.cache={str(cache).lower()}", "train.progress=false",
                 "train.tensorboard=false", f"train.val_every={10**9}", f"train.checkpoint_every={10**9}"]
    return compose("config", overrides)


def training_rate(cfg: dict, skip: int) -> float:
    """Samples/s of the real training loop between step `skip` and the last step (setup and caching excluded)."""
    from s2policy.train import train

    stamps: dict[int, float] = {}
    train(cfg, on_step=lambda step: stamps.__setitem__(step, time.perf_counter()))
    last = max(stamps)
    return (last - skip) * cfg["train"]["batch_size"] / (stamps[last] - stamps[skip])


def bench_training(work: Path, args) -> dict:
    s2 = {"scales": None, "img_sizes": [224, 448]}
    data = write_synthetic_demos(work / "train448.hdf5", num_demos=4, length=16, image_size=448)
    t0 = time.perf_counter()
    cached_cfg = run_config(data, work / "cached", args.encoder, args.weights, s2, 448, args.cached_steps,
                            args.batch_size, cache=True)
    from s2policy.train import train

    train({**cached_cfg, "train": {**cached_cfg["train"], "steps": 1}, "out_dir": str(work / "warm")})  # builds cache
    extraction_s = time.perf_counter() - t0
    cached = training_rate(cached_cfg, skip=20)  # train.cpu_threads=auto: one thread on cached features
    torch_default = {**cached_cfg, "out_dir": str(work / "cached_default_threads"),
                     "train": {**cached_cfg["train"], "cpu_threads": None}}
    cached_default_threads = training_rate(torch_default, skip=20)
    nocache = training_rate(run_config(data, work / "nocache", args.encoder, args.weights, s2, 448,
                                       args.nocache_steps, args.batch_size, cache=False), skip=1)
    return {"encoder": args.encoder, "weights": args.weights, "s2_img_sizes": [224, 448], "frame_size": 448,
            "head": "mlp", "batch_size": args.batch_size, "cached_samples_per_s": cached,
            "nocache_samples_per_s": nocache, "speedup": cached / nocache,
            "cached_samples_per_s_torch_default_threads": cached_default_threads,
            "one_time_extraction_s_for_64_frames": extraction_s}


def bench_extraction(work: Path, args) -> dict:
    """Pipeline frames/s (read + encode + write, with prefetch) vs S2Encoder.embed on the same frames in memory.

    Rounds alternate bare / pipeline so load from other processes hits both alike; the ratio is per round.
    """
    data = write_synthetic_demos(work / "extract448.hdf5", num_demos=4, length=args.extract_frames // 4,
                                 image_size=448)
    enc = build_s2_encoder(args.encoder, args.weights, {"img_sizes": [224, 448]})
    with open_dataset(data) as ds:
        frames = np.concatenate([ds.obs_array(k, "agentview_image")[()] for k in ds.demo_keys])
    bs = args.extract_batch
    enc.embed(frames_to_tensor(frames[:bs]))  # warm-up
    rounds = []
    for r in range(args.extract_rounds):
        t0 = time.perf_counter()
        for i in range(0, len(frames), bs):
            enc.embed(frames_to_tensor(frames[i:i + bs]))
        bare = len(frames) / (time.perf_counter() - t0)
        _, stats = build_feature_cache(data, "agentview", enc, camera_size=448, batch_size=bs,
                                       cache_root=work / f"extract_cache{r}", device="cpu")
        rounds.append({"bare_encoder_frames_per_s": bare, "extraction_frames_per_s": stats.frames_per_second,
                       "ratio": stats.frames_per_second / bare})
    return {"frames": len(frames), "batch_size": bs, "rounds": rounds,
            "median_ratio": float(np.median([r["ratio"] for r in rounds]))}


_RSS_CHILD = """
import sys, json
sys.path.insert(0, {repo!r})
from s2policy import build_s2_encoder
from s2policy.features import build_feature_cache
enc = build_s2_encoder({encoder!r}, {weights!r}, {{"scales": [1, 2]}})
def status(key):
    return next(int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith(key))
start = status("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # Linux: reset the peak (VmHWM) to the current RSS
_, stats = build_feature_cache({data!r}, "agentview", enc, camera_size={size}, batch_size=16, cache_root={root!r},
                               device="cpu")
print(json.dumps({{"frames": stats.frames, "rss_before_mb": start, "peak_rss_during_extraction_mb": status("VmHWM:"),
                  "peak_growth_mb": status("VmHWM:") - start}}))
"""


def bench_rss(work: Path, args) -> dict:
    """Peak RSS of a fresh process extracting 1k and 4k frames (frames on disk: 1k = 49 MB, 4k = 197 MB raw)."""
    out = {"encoder": args.rss_encoder, "frame_size": args.rss_size, "scales": [1, 2]}
    for n in (1000, 4000):
        data = write_synthetic_demos(work / f"rss{n}.hdf5", num_demos=n // 100, length=100, image_size=args.rss_size)
        code = _RSS_CHILD.format(repo=str(REPO), encoder=args.rss_encoder, weights="random", data=str(data),
                                 size=args.rss_size, root=str(work / f"rss_cache{n}"))
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        out[f"{n}_frames"] = json.loads(res.stdout.strip().splitlines()[-1])
    out["peak_ratio_4k_over_1k"] = (out["4000_frames"]["peak_rss_during_extraction_mb"]
                                    / out["1000_frames"]["peak_rss_during_extraction_mb"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train_speed.json")
    p.add_argument("--encoder", default="efficientnet_lite0")
    p.add_argument("--weights", default="pretrained")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--cached-steps", type=int, default=300)
    p.add_argument("--nocache-steps", type=int, default=3)
    p.add_argument("--extract-frames", type=int, default=32)
    p.add_argument("--extract-batch", type=int, default=16)
    p.add_argument("--extract-rounds", type=int, default=2)
    p.add_argument("--rss-encoder", default="tiny_cnn")
    p.add_argument("--rss-size", type=int, default=128)
    p.add_argument("--only", choices=["training", "extraction", "rss"], action="append")
    args = p.parse_args()
    parts = args.only or ["training", "extraction", "rss"]
    result = {"machine": {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
                          "python": platform.python_version()}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in (("training", bench_training), ("extraction", bench_extraction), ("rss", bench_rss)):
            if name in parts:
                t0 = time.perf_counter()
                result[name] = fn(Path(tmp), args)
                result[name]["bench_seconds"] = time.perf_counter() - t0
                print(json.dumps({name: result[name]}, indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
