"""Collect scripted-expert demonstrations into a robomimic-format HDF5 file (library function and CLI).

    python -m envs.collect --task lift --num-demos 100 --output demos.hdf5 --camera-size 448 --workers 2
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .make import check_variation, make_env
from .rendering import CameraSize, image_hw
from .tasks import get_task

logger = logging.getLogger(__name__)

ROBOSUITE_ENV_TYPE, GYM_ENV_TYPE = 1, 2  # robomimic's EnvType values


@dataclass
class EpisodeConfig:
    """Everything a (possibly remote) worker needs to build its env and expert; picklable."""

    task: str
    cameras: list[str] | None
    camera_size: tuple[int, int]
    store_images: bool
    action_noise: float
    variation: dict[str, Any] = field(default_factory=dict)


@dataclass
class Episode:
    """One rollout. Arrays are (T, ...); images keyed `<camera>_image` inside obs."""

    seed: int
    success: bool
    actions: np.ndarray
    obs: dict[str, np.ndarray]
    states: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    model_file: str | None


LOW_DIM_KEYS = ("proprio", "object")


def dataset_obs_key(env_key: str) -> str:
    """Env observation key -> obs/<key> in the file: cameras become `<camera>_image` (robomimic's convention)."""
    return env_key if env_key in LOW_DIM_KEYS else f"{env_key}_image"


def make_collection_env(config: EpisodeConfig):
    cameras = config.cameras if config.store_images else []  # no cameras: states and low-dim obs only
    return make_env(config.task, cameras=cameras, camera_size=config.camera_size, **config.variation)


def run_episode(env, expert, seed: int) -> Episode:
    """Roll the expert out from reset(seed=seed) until success or truncation, recording obs before each action."""
    obs, _ = env.reset(seed=seed)
    expert.reset()
    recorded_obs: dict[str, list] = collections.defaultdict(list)
    actions, states, rewards, dones = [], [], [], []
    done = False
    while not done:
        action = expert.act(env, obs)
        for key, value in obs.items():
            recorded_obs[dataset_obs_key(key)].append(value)
        states.append(env.unwrapped.get_state())
        actions.append(action)
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        dones.append(terminated)
        done = terminated or truncated
    model_xml = getattr(env.unwrapped, "model_xml", None)
    return Episode(seed=seed, success=bool(info["success"]), actions=np.asarray(actions, np.float32),
                   obs={k: np.stack(v) for k, v in recorded_obs.items()}, states=np.asarray(states, np.float64),
                   rewards=np.asarray(rewards, np.float32), dones=np.asarray(dones, np.uint8),
                   model_file=model_xml() if model_xml else None)


class EpisodeRunner:
    """Builds its env and expert on first use (inside the process that runs it: GL contexts must not cross a
    fork) and runs one episode per seed."""

    def __init__(self, config: EpisodeConfig):
        self.config = config
        self.env = self.expert = None

    def __call__(self, seed: int) -> Episode:
        if self.env is None:
            from .experts import make_expert

            self.env = make_collection_env(self.config)
            self.expert = make_expert(self.config.task, self.config.action_noise)
        self.expert.rng = np.random.default_rng(seed)  # noise tied to the episode seed: same demos for any workers
        return run_episode(self.env, self.expert, seed)

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None


_worker_runner: EpisodeRunner | None = None  # one per spawned worker process


def _init_worker(config: EpisodeConfig) -> None:
    global _worker_runner
    _worker_runner = EpisodeRunner(config)


def _run_in_worker(seed: int) -> Episode:
    return _worker_runner(seed)


def _episodes_in_seed_order(config: EpisodeConfig, seeds: Sequence[int], workers: int):
    """Yield Episodes for `seeds` in order; workers > 1 runs them in spawned processes, a few ahead."""
    if workers <= 1:
        runner = EpisodeRunner(config)
        try:
            for seed in seeds:
                yield runner(seed)
        finally:
            runner.close()
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(config,)) as pool:
        pending: collections.deque = collections.deque()
        seed_iter = iter(seeds)
        try:
            while True:
                while len(pending) < 2 * workers:
                    seed = next(seed_iter, None)
                    if seed is None:
                        break
                    pending.append(pool.apply_async(_run_in_worker, (seed,)))
                if not pending:
                    return
                yield pending.popleft().get()
        finally:
            pool.terminate()


def env_args_for(task: str, cameras: Sequence[str] | None, camera_size: CameraSize,
                 variation: dict[str, Any]) -> dict[str, Any]:
    """The /data env_args record: robomimic's fields plus what envs.make_env needs to rebuild the env."""
    spec = get_task(task)
    env_type = ROBOSUITE_ENV_TYPE if spec.suite == "robosuite" else GYM_ENV_TYPE
    kwargs: dict[str, Any] = {
        "task": task,
        "cameras": list(cameras) if cameras is not None else [spec.default_camera],
        "camera_size": list(image_hw(camera_size)),
        "variation": dict(variation),
    }
    if spec.suite == "robosuite":
        kwargs.update(robots="Panda", controller="OSC_POSE", control_freq=20, hard_reset=False)
    # robomimic 0.3 reads "type"; "env_type" is the name our docs use. Both hold the same value.
    return {"env_name": spec.suite_task, "env_type": env_type, "type": env_type, "env_kwargs": kwargs}


def collect_demos(task: str, num_demos: int, output: str | os.PathLike, camera_size: CameraSize = 448,
                  cameras: Sequence[str] | None = None, seed: int = 0, workers: int = 1, store_images: bool = True,
                  action_noise: float = 0.0, max_attempts: int | None = None, progress: bool = True,
                  **variation: Any) -> dict[str, Any]:
    """Roll out the task's scripted expert from reset seeds seed, seed+1, ... and write the successful episodes
    (demo attr `seed` records each one's seed) to a robomimic-format HDF5 at `output`, atomically.

    Images are stored as obs/<camera>_image uint8 (T, H, W, 3). Gives up after max_attempts episodes (default
    2 * num_demos + 10) and writes what succeeded. Returns a summary: attempts, successes, demos, samples, seconds.
    """
    from tqdm import tqdm

    from s2policy.data import DemoWriter
    from s2policy.errors import ConfigError

    if num_demos < 1:
        raise ConfigError(f"num_demos must be >= 1, got {num_demos}")
    check_variation(get_task(task), variation)  # fail here, not inside a worker
    config = EpisodeConfig(task, list(cameras) if cameras is not None else None, image_hw(camera_size),
                           store_images, action_noise, dict(variation))
    max_attempts = max_attempts or 2 * num_demos + 10
    attempts = frames = 0
    start = time.perf_counter()
    bar = tqdm(total=num_demos, desc=f"collect {task}", unit="demo", disable=not progress)
    with DemoWriter(output) as writer:
        for episode in _episodes_in_seed_order(config, range(seed, seed + max_attempts), workers):
            attempts += 1
            if not episode.success:
                logger.info("seed %d: expert failed, episode discarded", episode.seed)
                continue
            attrs: dict[str, Any] = {"seed": episode.seed}
            if episode.model_file is not None:
                attrs["model_file"] = episode.model_file
            writer.add_demo(episode.actions, episode.obs, states=episode.states, rewards=episode.rewards,
                            dones=episode.dones, attrs=attrs)
            frames += len(episode.actions)
            bar.update(1)
            bar.set_postfix(success_rate=f"{len(writer.keys) / attempts:.2f}")
            if len(writer.keys) == num_demos:
                break
        if not writer.keys:
            raise RuntimeError(f"{task}: the expert failed all {attempts} attempts; nothing written")
        writer.finish(env_args_for(task, cameras, camera_size, variation))
    bar.close()
    seconds = time.perf_counter() - start
    if len(writer.keys) < num_demos:
        logger.warning("%s: only %d/%d demos after %d attempts", task, len(writer.keys), num_demos, attempts)
    return {"task": task, "output": str(output), "attempts": attempts, "successes": len(writer.keys),
            "demos": len(writer.keys), "samples": writer.total, "seconds": round(seconds, 2),
            "success_rate": len(writer.keys) / attempts}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--num-demos", type=int, required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--camera-size", type=int, nargs="+", default=[448], help="S, or H W")
    parser.add_argument("--cameras", nargs="+", default=None, help="default: the task's main camera")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-images", action="store_true", help="store states and low-dim obs only")
    parser.add_argument("--action-noise", type=float, default=0.0)
    parser.add_argument("--variation", type=json.loads, default={},
                        help='task variation as JSON, e.g. \'{"placement_range": 0.1}\'')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    size = args.camera_size[0] if len(args.camera_size) == 1 else tuple(args.camera_size)
    summary = collect_demos(args.task, args.num_demos, args.output, camera_size=size, cameras=args.cameras,
                            seed=args.seed, workers=args.workers, store_images=not args.no_images,
                            action_noise=args.action_noise, **args.variation)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
