"""The rollout loop: N env handles stepped together, one batched policy call per control step for all of them.

Episodes are (index, seed) jobs pulled from an iterator as slots free up, so the same loop serves a fixed list of
seeds on the main process and a shared work queue inside a worker that holds its own policy copy.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np

from .env_handles import StepResult
from .video import VideoWriter

log = logging.getLogger(__name__)


class EnvHandle(Protocol):
    def send_reset(self, seed: int) -> None: ...
    def send_step(self, action: np.ndarray) -> None: ...
    def receive(self) -> StepResult: ...


class BatchPolicy(Protocol):
    def reset(self, env_ids: Sequence[int] | int | None = None) -> None: ...
    def act_batch(self, observations: Sequence[dict]) -> np.ndarray: ...


@dataclass(frozen=True)
class EpisodeJob:
    index: int  # position in the evaluation (videos are recorded for the first few indices)
    seed: int  # env reset seed: the initial state


@dataclass
class EpisodeResult:
    index: int
    seed: int
    success: bool
    length: int  # control steps taken
    seconds: float  # wall time of the episode
    video: str | None = None
    final_object: list[float] | None = None  # obs["object"] at the end (where the object ended up)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RolloutTiming:
    """Counters the summary turns into steps/s and policy latency."""

    env_steps: int = 0
    startup_seconds: float = 0.0  # until every slot held its first observation (env creation, first reset)
    rollout_seconds: float = 0.0  # from then until the last episode ended
    policy_calls: int = 0
    policy_seconds: float = 0.0
    call_ms: list[float] = field(default_factory=list)  # per policy call (all envs of the batch)
    batch_sizes: list[int] = field(default_factory=list)

    def merge(self, other: "RolloutTiming") -> None:
        """Add the counters of a loop that ran concurrently with this one (times: the longest)."""
        self.startup_seconds = max(self.startup_seconds, other.startup_seconds)
        self.rollout_seconds = max(self.rollout_seconds, other.rollout_seconds)
        self.env_steps += other.env_steps
        self.policy_calls += other.policy_calls
        self.policy_seconds += other.policy_seconds
        self.call_ms += other.call_ms
        self.batch_sizes += other.batch_sizes


@dataclass
class VideoPlan:
    """Record episodes whose index is below `episodes`, from `camera`, into `folder`/episode_<index>.mp4."""

    folder: Path
    episodes: int
    camera: str
    fps: float = 20.0

    def writer_for(self, index: int) -> VideoWriter | None:
        if index >= self.episodes:
            return None
        return VideoWriter(self.folder / f"episode_{index:04d}.mp4", self.fps)


@dataclass
class _Slot:
    job: EpisodeJob | None = None
    steps: int = 0
    started: float = 0.0
    video: VideoWriter | None = None


def run_episodes(envs: Sequence[EnvHandle], policy: BatchPolicy, jobs: Iterator[EpisodeJob], max_steps: int,
                 on_episode: Callable[[EpisodeResult], None], video: VideoPlan | None = None) -> RolloutTiming:
    """Run every job in `jobs` on `envs` (one episode per env at a time) and report each with `on_episode`.

    An episode ends when the env terminates (success) or truncates, or after `max_steps` control steps. The policy
    sees observations of *all* slots every step (slots left without work at the end repeat their last
    observation, and their actions are dropped), so its batch size -- and its per-env queues -- never change.
    """
    slots = [_Slot() for _ in envs]
    obs: list[dict | None] = [None] * len(envs)
    timing = RolloutTiming()
    policy.reset()
    t_start = time.perf_counter()
    try:
        _start_episodes(envs, slots, obs, range(len(envs)), jobs, policy, video, first=True)
        timing.startup_seconds = time.perf_counter() - t_start
        live = [i for i, o in enumerate(obs) if o is not None]
        envs, slots, obs = [envs[i] for i in live], [slots[i] for i in live], [obs[i] for i in live]
        while any(s.job is not None for s in slots):
            active = [i for i, s in enumerate(slots) if s.job is not None]
            t0 = time.perf_counter()
            actions = policy.act_batch(obs)
            dt = time.perf_counter() - t0
            timing.policy_calls += 1
            timing.policy_seconds += dt
            timing.call_ms.append(dt * 1e3)
            timing.batch_sizes.append(len(active))
            for i in active:
                envs[i].send_step(actions[i])
            finished = []
            for i in active:
                result = envs[i].receive()
                slot = slots[i]
                slot.steps += 1
                timing.env_steps += 1
                obs[i] = result.obs
                if slot.video is not None:
                    slot.video.add(result.obs[video.camera])
                if result.done or result.success or slot.steps >= max_steps:
                    on_episode(_finish(slot, result))
                    finished.append(i)
            if finished:
                _start_episodes(envs, slots, obs, finished, jobs, policy, video)
    finally:
        for slot in slots:
            if slot.video is not None:
                slot.video.abort()
    timing.rollout_seconds = time.perf_counter() - t_start - timing.startup_seconds
    return timing


def _start_episodes(envs, slots, obs, ids, jobs, policy, video, first: bool = False) -> None:
    """Give each slot in `ids` the next job (reset all of them, then wait), or leave it idle when jobs run out."""
    started = []
    for i in ids:
        slots[i].job = next(jobs, None)
        if slots[i].job is not None:
            envs[i].send_reset(slots[i].job.seed)
            started.append(i)
    for i in started:
        result = envs[i].receive()
        slot = slots[i]
        slot.steps, slot.started = 0, time.perf_counter()
        slot.video = video.writer_for(slot.job.index) if video is not None else None
        if slot.video is not None:
            slot.video.add(result.obs[video.camera])
        obs[i] = result.obs
    if started and not first:
        policy.reset(started)


def _finish(slot: _Slot, last: StepResult) -> EpisodeResult:
    path = slot.video.close() if slot.video is not None else None
    slot.video = None
    job, slot.job = slot.job, None
    final_object = last.obs.get("object")
    return EpisodeResult(job.index, job.seed, bool(last.success), slot.steps, time.perf_counter() - slot.started,
                         str(path) if path is not None else None,
                         [round(float(v), 6) for v in final_object] if final_object is not None else None)
