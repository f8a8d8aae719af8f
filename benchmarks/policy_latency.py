"""Policy milliseconds per control step of a study's trained policies, measured apart from the evaluations (JSON).

The evaluations record their own policy time, but under whatever else the machine was running; this measures every
study configuration's policy file on the same recorded observations, one torch thread, in interleaved rounds (each
round times every policy once over the same steps), and reports per-configuration medians over rounds. The
observations are the first demo of the study's dataset (frames at the stored size, proprio as recorded), fed step by
step through `Policy.act`, the call the evaluation and the robot loop make; `--backbone onnx` times the encoder in
ONNX Runtime as the study's evaluations did.

    python benchmarks/policy_latency.py studies/v2/twin_m12 studies/v2/tiny_goal_r20 --backbone onnx \\
        --out results/v2/latency.json
    python -m s2policy.report results/v2/twin_m12 --out docs/results_v2/twin_m12 --latency results/v2/latency.json

Output: {"results": [{"task", "arm", "policy_ms_p50", "policy_ms_rounds", ...}, ...]}, which the report reads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path


def study_policies(study_dir: Path, seed: str | None) -> dict[str, Path]:
    """arm -> its policy file (the given seed, else the lowest seed that has one) under <study_dir>/runs/<arm>/."""
    from s2policy.evaluate import resolve_policy_file

    found = {}
    for arm_dir in sorted(p for p in (study_dir / "runs").iterdir() if p.is_dir()):
        seeds = sorted((p for p in arm_dir.glob("seed*") if (p / "policy.safetensors").is_file()),
                       key=lambda p: int(p.name[4:]))
        chosen = [p for p in seeds if seed is None or p.name == f"seed{seed}"]
        if chosen:
            found[arm_dir.name] = resolve_policy_file(chosen[0])
    return found


def demo_observations(dataset: Path, steps: int) -> list[dict]:
    """The first `steps` observations of the dataset's first demo: every camera's frames and low-dim keys."""
    from s2policy.data.episodes import image_key, open_episodes

    with open_episodes(dataset) as reader:
        episode = reader.episodes[0]
        n = min(steps, reader.episode_length(episode))
        lowdim = reader.read_lowdim(episode, reader.lowdim_keys)
        frames = {image_key(cam): reader.read_frames(episode, cam, list(range(n))) for cam in reader.cameras}
    return [{**{k: v[t] for k, v in lowdim.items()}, **{k: v[t] for k, v in frames.items()}} for t in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", type=Path, help="study folders (<study>/demos.hdf5, <study>/runs/)")
    parser.add_argument("--seed", default=None, help="time this training seed's files (default: the lowest present)")
    parser.add_argument("--steps", type=int, default=30, help="control steps per policy per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backbone", choices=["torch", "onnx"], default="onnx")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from s2policy.policy import Policy

    torch.set_num_threads(args.threads)
    entries = []
    for study in args.studies:
        observations = demo_observations(study / "demos.hdf5", args.steps)
        for arm, path in study_policies(study, args.seed).items():
            policy = Policy.load(path, device="cpu")
            if args.backbone == "onnx" and policy.config.cameras:
                from s2policy.runtime.onnx_backbone import use_onnx_backbone

                use_onnx_backbone(policy.encoder, threads=args.threads)
            policy.reset()
            policy.act(observations[0])  # warm-up: first-call allocations, ONNX session start
            entries.append({"study": study.name, "task": policy.config.task, "arm": arm, "policy": policy,
                            "checkpoint": str(Path(study.name) / path.relative_to(study)),  # no machine paths
                            "rounds": []})
        for entry in (e for e in entries if e["study"] == study.name):
            entry["observations"] = observations
    for _ in range(args.rounds):
        for entry in entries:  # interleaved: every policy sees the same machine state in each round
            policy = entry["policy"]
            policy.reset()
            start = time.perf_counter()
            for obs in entry["observations"]:
                policy.act(obs)
            entry["rounds"].append(1000 * (time.perf_counter() - start) / len(entry["observations"]))
    results = [{"study": e["study"], "task": e["task"], "arm": e["arm"], "checkpoint": e["checkpoint"],
                "policy_ms_p50": round(statistics.median(e["rounds"]), 2),
                "policy_ms_rounds": [round(x, 2) for x in e["rounds"]]} for e in entries]
    report = {"benchmark": "policy_latency", "threads": args.threads, "backbone": args.backbone,
              "steps": args.steps, "rounds": args.rounds, "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "torch": torch.__version__, "results": results}
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
