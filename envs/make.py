"""make_env and the gymnasium registry entries (s2policy/<task>-v0)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from s2policy.errors import ConfigError

from .base import TaskEnv
from .rendering import CameraSize
from .tasks import TASKS, TaskSpec, get_task


def check_variation(spec: TaskSpec, variation: dict[str, Any]) -> None:
    """Raise ConfigError for variation keywords the task does not support."""
    unsupported = sorted(set(variation) - set(spec.variations))
    if unsupported:
        raise ConfigError(f"task {spec.name!r} does not support {unsupported}; it supports {list(spec.variations)}")
    if spec.detail is not None:  # knob values too, so a bad one fails before any env or worker starts
        from .detail_tasks import parse_knobs

        parse_knobs(spec.name, variation)


def task_variation(task: str, defaults: Mapping[str, Any] | None = None,
                   overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The make_env keywords of `task`: its config's knobs (task.variation, declared in configs/task/<task>.yaml)
    with `overrides` (collect.variation) on top, checked so a bad knob fails before any work. The one place configs
    turn into task knobs."""
    variation = {**(defaults or {}), **(overrides or {})}
    check_variation(get_task(task), variation)
    return variation


def make_env(task: str, cameras: Sequence[str] | None = None, camera_size: CameraSize = 448,
             seed: int | None = None, **variation: Any) -> TaskEnv:
    """Create a task env. cameras: names to render (default the task's main camera; [] renders nothing, fastest);
    camera_size: int or (H, W); seed: seed of the first reset; variation: task keywords listed in
    TASKS[task].variations (e.g. placement_range=0.1 for lift)."""
    spec = get_task(task)
    check_variation(spec, variation)
    if cameras is not None:
        unknown = [c for c in cameras if c not in spec.cameras]
        if unknown:
            raise ConfigError(f"task {task!r} has no camera(s) {unknown}; choose from {list(spec.cameras)}")
    if spec.suite == "robosuite":
        from .robosuite_env import RobosuiteTaskEnv as env_cls
    elif spec.detail is not None:
        from .detail_tasks import DetailPushEnv as env_cls
    else:
        from .metaworld_env import MetaWorldTaskEnv as env_cls
    return env_cls(spec, cameras=cameras, camera_size=camera_size, seed=seed, **variation)


def register_gym_envs() -> None:
    """Register every task as gymnasium id s2policy/<task>-v0 (gym.make passes keywords on to make_env)."""
    import gymnasium as gym

    for spec in TASKS.values():
        if spec.gym_id not in gym.registry:
            gym.register(spec.gym_id, entry_point="envs.make:make_env", kwargs={"task": spec.name},
                         max_episode_steps=None, disable_env_checker=True)
