"""Measure scripted-expert success rates without rendering (fast), e.g. for the table in docs/envs.md.

    python -m envs.expert_success --tasks lift can --episodes 50 --seed 100000
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Sequence

import numpy as np

from .tasks import TASKS


def expert_success(task: str, episodes: int = 50, seed: int = 100_000, action_noise: float = 0.0) -> dict:
    """Roll the task's expert out from reset seeds seed .. seed+episodes-1 with no cameras.
    Returns successes, episodes, rate, mean episode length of successes and seconds."""
    from .experts import make_expert
    from .make import make_env

    env = make_env(task, cameras=[])
    expert = make_expert(task, action_noise=action_noise, seed=seed)
    successes, lengths, start = 0, [], time.perf_counter()
    try:
        for k in range(episodes):
            obs, _ = env.reset(seed=seed + k)
            expert.reset()
            for step in range(1, env.task.max_steps + 1):
                obs, _, terminated, truncated, info = env.step(expert.act(env, obs))
                if terminated or truncated:
                    break
            if info["success"]:
                successes += 1
                lengths.append(step)
    finally:
        env.close()
    return {"task": task, "successes": successes, "episodes": episodes, "rate": successes / episodes,
            "mean_steps": float(np.mean(lengths)) if lengths else None,
            "seconds": round(time.perf_counter() - start, 1)}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=100_000)
    parser.add_argument("--action-noise", type=float, default=0.0)
    args = parser.parse_args(argv)
    for task in args.tasks:
        print(json.dumps(expert_success(task, args.episodes, args.seed, args.action_noise)), flush=True)


if __name__ == "__main__":
    main()
