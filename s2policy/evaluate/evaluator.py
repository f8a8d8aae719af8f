"""Evaluate a policy checkpoint by rollouts: settings, env and seed resolution, the layouts, outputs.

Layouts (`resolve_layout`; run by layouts.py and ray_backend.py):
- "serial" (`workers=0`): one env in this process; the reference the parallel layouts must reproduce.
- "main": K spawned env workers step and render; the main process runs the policy once per control step for all K
  envs (batched; the layout that uses a GPU well).
- "main-pipelined": the main layout driven by two threads on two halves of the envs, so env steps overlap policy
  calls; the fastest on a CPU with 2+ workers (docs/evaluation.md), hence what `policy_on=auto` picks there.
- "workers": K spawned workers each hold an env *and* a CPU copy of the policy and run whole episodes; results equal
  serial ones to the last digit, but it was slower than "main" here.
- "ray" (`backend=ray`): the main layout's batching with env workers as Ray actors and the policy on a Ray actor.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from ..config.groups import EvalSettings
from ..device import select_device
from ..errors import ConfigError
from ..fileio import atomic_write_text
from ..look_closer import look_closer_summary
from .provenance import CheckpointInfo, read_checkpoint_info
from .env_handles import EnvSpec
from .layouts import run_policy_in_workers, run_policy_on_main, torch_threads
from .rollout import EpisodeJob, EpisodeResult, RolloutTiming, VideoPlan
from .seeds import EVAL_SEED_OFFSET, check_disjoint, evaluation_seeds
from .stats import SuccessRate, percentile

log = logging.getLogger(__name__)

SUMMARY_FORMAT = "s2policy.eval/1"
SUMMARY_FILE = "summary.json"
EPISODES_FILE = "episodes.json"


@dataclass
class EvalPlan:
    """Everything resolved before any process starts."""

    info: CheckpointInfo
    env: EnvSpec
    seeds: list[int]
    max_steps: int
    dataset: Path | None


def plan_evaluation(checkpoint: str | Path, settings: EvalSettings) -> EvalPlan:
    """Resolve checkpoint, env settings and seeds; every inconsistency raises here, before any rollout."""
    settings.check()
    info = read_checkpoint_info(checkpoint, expected_task=settings.task)
    import envs

    spec = envs.get_task(info.task)
    dataset = Path(settings.dataset) if settings.dataset else info.dataset
    env_kwargs: dict[str, Any] = {}
    seeds = evaluation_seeds(settings.seed, settings.episodes)
    if dataset is not None:
        from ..data import check_dataset, open_episodes

        check_dataset(dataset)
        with open_episodes(dataset) as ds:
            env_kwargs = dict(ds.env_args.get("env_kwargs", {}))
            first_camera = info.config.cameras[0] if info.config.cameras else None
            stored = ds.frame_shape(first_camera) if first_camera else None
        if "camera_size" not in env_kwargs and stored is not None:  # e.g. a LeRobot dataset: the frames' own size
            env_kwargs["camera_size"] = list(stored)
        if env_kwargs.get("task", info.task) != info.task:
            raise ConfigError(f"dataset {dataset} holds {env_kwargs['task']!r} demos but the policy was trained on "
                              f"{info.task!r}")
        check_disjoint(seeds, dataset)
    else:
        log.warning("%s: training dataset unknown; evaluation seeds start at %d, far above collection seeds, but "
                    "cannot be checked against the demos (pass eval.dataset)", info.path, EVAL_SEED_OFFSET)
    camera_size = info.config.camera_size or env_kwargs.get("camera_size")
    if camera_size is None:
        raise ConfigError(f"{info.path}: the policy used stored frames of unknown size and no dataset is known; "
                          "pass eval.dataset=<training dataset>")
    camera_size = tuple(camera_size) if isinstance(camera_size, (list, tuple)) else int(camera_size)
    cameras = tuple(c.removesuffix("_image") for c in info.config.cameras)
    variation = {**env_kwargs.get("variation", {}), **settings.variation}
    max_steps = min(settings.max_steps or spec.max_steps, spec.max_steps)
    return EvalPlan(info, EnvSpec(info.task, cameras, camera_size, variation), seeds, max_steps, dataset)


def evaluate(checkpoint: str | Path, out_dir: str | Path, settings: EvalSettings | None = None,
             on_episode: Callable[[EpisodeResult], None] | None = None) -> dict[str, Any]:
    """Roll out the policy in `checkpoint` for `settings.episodes` held-out initial states.

    Writes `out_dir`/episodes.json (one record per episode, in index order), `out_dir`/summary.json (returned) and
    `out_dir`/videos/episode_<i>.mp4 for the first `settings.video` episodes. `on_episode` sees each episode as it
    ends (progress bars).
    """
    from ..policy import Policy

    settings = settings or EvalSettings()
    plan = plan_evaluation(checkpoint, settings)
    out_dir = Path(out_dir)
    video = (VideoPlan(out_dir / "videos", settings.video, plan.env.cameras[0], settings.fps)
             if settings.video and plan.env.cameras else None)  # an image-free policy has nothing to film
    jobs = [EpisodeJob(i, s) for i, s in enumerate(plan.seeds)]
    layout = resolve_layout(settings)
    # the ray layout's policy runs on its actor; this copy (CPU) only describes it in the summary
    policy = Policy.load(plan.info.path, device="cpu" if layout in ("workers", "ray") else settings.device)
    if settings.backbone == "onnx" and layout != "ray":  # the policy actor installs its own
        if layout == "workers" or policy.device.type != "cpu":
            raise ConfigError("eval.backbone=onnx runs the policy on this process's CPU: use eval.policy_on=main "
                              "and eval.device=cpu (or auto on a machine without a GPU)")
        from ..runtime.onnx_backbone import use_onnx_backbone

        use_onnx_backbone(policy.encoder, threads=settings.threads or 1)
    results: list[EpisodeResult] = []

    def record(result: EpisodeResult) -> None:
        results.append(result)
        if on_episode is not None:
            on_episode(result)

    log.info("evaluating %s on %s: %d episodes, %d workers, layout %s", plan.info.path, plan.env.task,
             len(jobs), settings.workers, layout)
    start = time.perf_counter()
    device = str(policy.device)
    if layout == "workers":
        timing = run_policy_in_workers(plan.env, plan.info.path, jobs, settings.workers, plan.max_steps, record,
                                       video, settings.threads)
    elif layout == "ray":
        from .ray_backend import run_on_ray

        timing, device = run_on_ray(plan.env, plan.info.path, jobs, settings.workers, plan.max_steps, record, video,
                                    address=settings.ray_address, device=settings.device, threads=settings.threads,
                                    backbone=settings.backbone)
    else:
        with torch_threads(settings.threads or 1, policy.device):
            timing = run_policy_on_main(plan.env, policy, jobs, settings.workers, plan.max_steps, record, video,
                                        layout == "main-pipelined")
    wall = time.perf_counter() - start
    results.sort(key=lambda r: r.index)
    for r in results:  # paths relative to out_dir, so a results folder can be moved or committed
        if r.video is not None:
            r.video = os.path.relpath(r.video, out_dir)
    summary = summarize(plan, settings, layout, policy, results, timing, wall, device)
    atomic_write_text(out_dir / EPISODES_FILE, json.dumps([r.to_dict() for r in results], indent=1) + "\n")
    atomic_write_text(out_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return summary


def resolve_layout(settings: EvalSettings, device: torch.device | None = None) -> str:
    """The layout that runs: "ray" (backend=ray), "serial" (workers=0), "workers", "main" or "main-pipelined".

    `policy_on=auto` picks the pipelined main layout when the policy runs on a CPU and there are 2+ env workers
    (where it was measured faster than the plain main layout: docs/evaluation.md), else the plain main layout
    (one worker has nothing to overlap; a GPU policy call is short next to an env step, and one batch uses it best).
    `device`: where the policy runs (default: `settings.device` resolved on this machine).
    """
    if settings.backend == "ray":
        return "ray"
    if settings.workers == 0:
        return "serial"
    if settings.policy_on == "workers":
        return "workers"
    if settings.policy_on == "auto" and device is None:
        device = select_device(settings.device)
    pipelined = settings.pipeline or (settings.policy_on == "auto" and device.type == "cpu" and settings.workers >= 2)
    return "main-pipelined" if pipelined and settings.workers >= 2 else "main"


def summarize(plan: EvalPlan, settings: EvalSettings, layout: str, policy, results: list[EpisodeResult],
              timing: RolloutTiming, wall: float, device: str) -> dict[str, Any]:
    """The summary.json record: what was evaluated, how, the success rate with its interval, speed and cost."""
    cfg = plan.info.config
    rate = SuccessRate(sum(r.success for r in results), len(results))
    frame_hw = plan.env.camera_size if isinstance(plan.env.camera_size, tuple) else (plan.env.camera_size,) * 2
    return {
        "format": SUMMARY_FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "checkpoint": str(plan.info.path),
        "checkpoint_sha256": plan.info.sha256,
        "task": plan.env.task,
        "train_seed": plan.info.train_seed,
        "dataset": str(plan.dataset) if plan.dataset else None,
        "policy": {"encoder": cfg.encoder, "weights": cfg.weights, "s2": cfg.s2,
                   "img_sizes": list(policy.encoder.img_sizes), "cameras": list(cfg.cameras),
                   "camera_size": list(frame_hw), "head": cfg.head, "execution": cfg.execution,
                   "n_action_steps": cfg.n_action_steps, "proprio_keys": list(cfg.proprio_keys),
                   "look_closer": look_closer_summary(policy.encoder)},
        "cost": {"encoder_params": int(policy.encoder.params),
                 "head_params": sum(p.numel() for p in policy.head.parameters()),
                 # every camera is one pass of the S2 encoder
                 "gmacs_per_frame": float(policy.encoder.gmacs(tuple(frame_hw))) * len(cfg.cameras)},
        "eval": {**asdict(settings), "layout": layout, "max_steps": plan.max_steps, "variation": plan.env.variation,
                 "first_seed": plan.seeds[0], "last_seed": plan.seeds[-1]},
        "success": rate.to_dict(),
        "mean_length": sum(r.length for r in results) / len(results) if results else float("nan"),
        "speed": {
            "env_steps": timing.env_steps,
            "wall_seconds": round(wall, 3),
            "startup_seconds": round(timing.startup_seconds, 3),  # env creation and first resets
            "rollout_seconds": round(timing.rollout_seconds, 3),
            # steady state: from every env holding its first observation to the last episode's end
            "steps_per_second": timing.env_steps / max(timing.rollout_seconds, 1e-9),
            "policy_calls": timing.policy_calls,
            "mean_batch": sum(timing.batch_sizes) / len(timing.batch_sizes) if timing.batch_sizes else 0.0,
            "policy_ms_per_call": timing.policy_seconds * 1e3 / max(timing.policy_calls, 1),
            "policy_ms_per_call_p50": percentile(timing.call_ms, 50),
            "policy_ms_per_call_p95": percentile(timing.call_ms, 95),
            "policy_ms_per_env_step": timing.policy_seconds * 1e3 / max(timing.env_steps, 1),
        },
        "host": {"cpus": os.cpu_count(), "device": device, "torch_threads": settings.threads or 1},
    }
