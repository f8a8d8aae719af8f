"""Pixel size of the deciding detail of each detail-limited task at 224 and 448 (segmentation renders of the task's
camera at reset), and the pictures in docs/envs/. Prints one JSON line per task and knob setting.

    python benchmarks/detail_pixels.py --seeds 10 --pictures docs/envs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import envs
from envs.detail_tasks import detail_mask

#: task -> (the site that decides success, knob settings measured: the defaults and the calibration variants)
DETAILS = {
    "mw-push-tiny-goal": ("goal", [{}, {"goal_radius": 0.012}, {"goal_radius": 0.02}]),
    "mw-push-cue": ("cue", [{}, {"cue_radius": 0.012}]),
    "mw-push-twin": ("mark", [{}, {"mark_radius": 0.012}, {"mark_radius": 0.016}]),
}
SIZES = (224, 448)


def measure(task: str, site: str, knobs: dict, seeds: int) -> dict:
    """Median and range over reset seeds 0..seeds-1 of the detail's equivalent diameter in pixels, per frame size."""
    row = {"task": task, "detail": site, "knobs": knobs}
    for size in SIZES:
        env = envs.make_env(task, camera_size=size, **knobs)
        diameters = []
        for seed in range(seeds):
            env.reset(seed=seed)
            diameters.append(float(np.sqrt(4 * detail_mask(env, site).sum() / np.pi)))
        env.close()
        row[f"px_{size}"] = {"median": round(float(np.median(diameters)), 2), "min": round(min(diameters), 2),
                             "max": round(max(diameters), 2)}
    return row


def clearest_seed(task: str, site: str, seeds: int = 10) -> int:
    """The reset seed (of 0..seeds-1) where most of the detail is visible at 224 (the arm hides it in some)."""
    env = envs.make_env(task, camera_size=224)
    areas = []
    for seed in range(seeds):
        env.reset(seed=seed)
        areas.append(int(detail_mask(env, site).sum()))
    env.close()
    return int(np.argmax(areas))


def save_pictures(task: str, site: str, out: Path) -> None:
    """<task>_224.png and <task>_448.png (the frames as rendered) and <task>_zoom.png: the 48 x 48 px neighbourhood
    of the detail at 224 beside the 96 x 96 px one at 448, both enlarged to 384 px without smoothing."""
    from PIL import Image

    seed = clearest_seed(task, site)
    crops = []
    for size in SIZES:
        env = envs.make_env(task, camera_size=size)
        obs, _ = env.reset(seed=seed)
        frame = obs[env.cameras[0]]
        Image.fromarray(frame).save(out / f"{task}_{size}.png", optimize=True)
        rows, cols = np.nonzero(detail_mask(env, site))
        env.close()
        half = 24 * size // 224
        r, c = int(np.clip(rows.mean(), half, size - half)), int(np.clip(cols.mean(), half, size - half))
        crop = Image.fromarray(frame[r - half:r + half, c - half:c + half]).resize((384, 384), Image.NEAREST)
        crops.append(np.asarray(crop))
    gap = np.full((384, 8, 3), 255, np.uint8)
    Image.fromarray(np.concatenate([crops[0], gap, crops[1]], axis=1)).save(out / f"{task}_zoom.png", optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--pictures", default=None, help="folder for the pictures (e.g. docs/envs)")
    args = parser.parse_args()
    for task, (site, variants) in DETAILS.items():
        for knobs in variants:
            print(json.dumps(measure(task, site, knobs, args.seeds)), flush=True)
        if args.pictures:
            Path(args.pictures).mkdir(parents=True, exist_ok=True)
            save_pictures(task, site, Path(args.pictures))


if __name__ == "__main__":
    main()
