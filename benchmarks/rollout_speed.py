"""Rollout throughput on this machine: env steps/s with 1 and 2 workers, per layout and backend (JSON).

The policy is a real frozen encoder (default: pretrained efficientnet_lite0 at 224 px, lift's agentview camera) with
an untrained MLP head -- speed does not depend on what the head learned, and untrained episodes all run exactly
`--max-steps` steps, so every configuration does the same work. Steps/s excludes worker start-up (imports, env
creation, first reset), which is reported separately. Configurations run interleaved `--repeats` times and the best
run counts: on a machine shared with other jobs, the best run is the one least disturbed by them.

    python benchmarks/rollout_speed.py --workers 1 2 --layouts auto main main-pipelined workers ray
    python benchmarks/rollout_speed.py --img-sizes 224 448 --camera-size 448      # base + S2
    python benchmarks/rollout_speed.py --layouts auto --backbone onnx             # encoder crops in ONNX Runtime

Layouts: "auto" is the default (`eval.policy_on=auto`); "main", "main-pipelined" and "workers" force one; "ray" is
`eval.backend=ray` on a Ray instance started once on this machine (its start-up is not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: benchmark layout name -> EvalSettings fields
LAYOUTS = {"auto": {"policy_on": "auto"}, "main": {"policy_on": "main"},
           "main-pipelined": {"policy_on": "main", "pipeline": True}, "workers": {"policy_on": "workers"},
           "ray": {"backend": "ray"}}


def make_checkpoint(folder: Path, encoder: str, weights: str, img_sizes: list[int], camera_size: int) -> Path:
    """A lift policy file with the given frozen encoder and a freshly initialised MLP head."""
    import envs
    from s2policy import build_s2_encoder
    from s2policy.policy import Normalizer, Policy, PolicyConfig

    spec = envs.get_task("lift")
    s2 = {"img_sizes": img_sizes}
    enc = build_s2_encoder(encoder, weights, s2)
    config = PolicyConfig(encoder=encoder, weights=weights, s2=s2, cameras=[spec.default_camera],
                          proprio_keys=["proprio"], proprio_dim=spec.proprio_dim, action_dim=spec.action_dim,
                          feature_dim=enc.out_dim, head="mlp", head_kwargs={"hidden": [256, 256]},
                          camera_size=camera_size, n_action_steps=1, task="lift")
    policy = Policy.create(config, enc, Normalizer(spec.proprio_dim), Normalizer(spec.action_dim))
    return policy.save(folder / "policy.safetensors")


def _display_path(path: Path) -> str:
    """`path` relative to the repository when inside it (results files must not carry this machine's paths)."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return path.name


def run_once(ckpt: Path, out: Path, layout: str, workers: int, repeat: int, args: argparse.Namespace) -> dict:
    from s2policy.evaluate import EvalSettings, evaluate

    settings = EvalSettings(episodes=args.episodes, workers=workers, max_steps=args.max_steps, threads=args.threads,
                            device="cpu", backbone=args.backbone, **LAYOUTS[layout])
    t0 = time.perf_counter()
    summary = evaluate(ckpt, out, settings)
    speed = summary["speed"]
    return {"layout": layout, "resolved": summary["eval"]["layout"], "workers": workers, "repeat": repeat,
            "steps_per_second": round(speed["steps_per_second"], 2), "env_steps": speed["env_steps"],
            "startup_seconds": speed["startup_seconds"], "wall_seconds": round(time.perf_counter() - t0, 1),
            "policy_ms_per_call": round(speed["policy_ms_per_call"], 2),
            "policy_ms_per_env_step": round(speed["policy_ms_per_env_step"], 2),
            "gmacs_per_frame": summary["cost"]["gmacs_per_frame"],
            "load_average_1min_after": round(os.getloadavg()[0], 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", default="efficientnet_lite0")
    p.add_argument("--weights", default="pretrained")
    p.add_argument("--img-sizes", type=int, nargs="+", default=[224])
    p.add_argument("--camera-size", type=int, default=224)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--layouts", nargs="+", default=["auto", "main", "main-pipelined", "workers"],
                   choices=list(LAYOUTS))
    p.add_argument("--backbone", default="torch", choices=["torch", "onnx"])
    p.add_argument("--threads", type=int, default=None, help="torch threads of the main-process policy")
    p.add_argument("--episodes", type=int, default=4)
    p.add_argument("--max-steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "rollout_speed.json")
    args = p.parse_args()

    from s2policy.fileio import atomic_write_text

    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "load_average_at_start": os.getloadavg()},
              "config": {**vars(args), "out": _display_path(args.out)}, "runs": []}
    # A pipeline needs two envs; with one worker it is the plain main layout.
    plan = [(repeat, layout, workers) for repeat in range(args.repeats) for layout in args.layouts
            for workers in args.workers if not (layout.endswith("-pipelined") and workers < 2)]
    if "ray" in args.layouts:  # one instance for every run, started before the clock runs
        from s2policy.evaluate.ray_backend import connect

        connect()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_checkpoint(Path(tmp), args.encoder, args.weights, args.img_sizes, args.camera_size)
        for repeat, layout, workers in plan:
            result["runs"].append(run_once(ckpt, Path(tmp) / f"{layout}{workers}", layout, workers, repeat, args))
            print(json.dumps(result["runs"][-1]), flush=True)
    by: dict[tuple[str, int], float] = {}
    for r in result["runs"]:
        key = (r["layout"], r["workers"])
        by[key] = max(by.get(key, 0.0), r["steps_per_second"])
    result["best_steps_per_second"] = {f"{layout} x{workers}": v for (layout, workers), v in by.items()}
    # 2 workers against the best single-worker run of the same layout (pipelined x1 is plain main x1)
    single = {layout: by.get((layout, 1)) or by.get((layout.removesuffix("-pipelined"), 1)) for layout in args.layouts}
    result["speedup_2_vs_1"] = {layout: round(by[(layout, 2)] / single[layout], 2)
                                for layout in args.layouts if single[layout] and (layout, 2) in by}
    result["machine"]["load_average_at_end"] = os.getloadavg()
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(json.dumps({"best": result["best_steps_per_second"], "speedup_2_vs_1": result["speedup_2_vs_1"]}))


if __name__ == "__main__":
    main()
