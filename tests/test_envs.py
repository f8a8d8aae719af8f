"""envs: the observation/seeding contract of every task and the scripted experts (tiny cameras, few steps)."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")  # must precede the first mujoco import (envs does the same)
pytest.importorskip("mujoco")
pytest.importorskip("robosuite")
pytest.importorskip("metaworld")

import gymnasium as gym  # noqa: E402

import envs  # noqa: E402
from s2policy.errors import ConfigError  # noqa: E402

pytestmark = pytest.mark.simulator
SIZE = (24, 32)  # non-square on purpose


@pytest.fixture(scope="module", params=sorted(envs.TASKS))
def task_env(request):
    env = envs.make_env(request.param, camera_size=SIZE)
    yield env
    env.close()


def test_env_contract(task_env):
    spec = task_env.task
    obs, info = task_env.reset(seed=3)
    assert set(obs) == {spec.default_camera, "proprio", "object"}
    image = obs[spec.default_camera]
    assert image.dtype == np.uint8 and image.shape == (*SIZE, 3) and image.std() > 0
    assert obs["proprio"].dtype == np.float32 and obs["proprio"].shape == (spec.proprio_dim,)
    assert obs["object"].dtype == np.float32 and obs["object"].shape == (spec.object_dim,)
    assert task_env.observation_space.contains(obs)
    assert info["success"] is False
    assert task_env.action_space.shape == (spec.action_dim,)
    assert (task_env.action_space.low == -1).all() and (task_env.action_space.high == 1).all()
    obs, reward, terminated, truncated, info = task_env.step(np.zeros(spec.action_dim, np.float32))
    assert isinstance(info["success"], bool) and isinstance(reward, float)
    assert terminated is False and truncated is False


def test_reset_seeds_reproducible_and_distinct(task_env):
    first, _ = task_env.reset(seed=11)
    other, _ = task_env.reset(seed=12)
    again, _ = task_env.reset(seed=11)
    np.testing.assert_array_equal(first["object"], again["object"])
    np.testing.assert_array_equal(first[task_env.task.default_camera], again[task_env.task.default_camera])
    assert not np.allclose(first["object"], other["object"])


def test_state_round_trip_reproduces_frame(task_env):
    task_env.reset(seed=5)
    for _ in range(3):
        obs, *_ = task_env.step(task_env.action_space.sample())
    state = task_env.get_state()
    task_env.reset(seed=5)
    task_env.set_state(state)
    np.testing.assert_array_equal(task_env.observation()[task_env.task.default_camera],
                                  obs[task_env.task.default_camera])


def test_gym_registration_and_camera_choice():
    env = gym.make("s2policy/mw-drawer-open-v0", cameras=["topview", "corner"], camera_size=16)
    obs, _ = env.reset(seed=0)
    assert obs["topview"].shape == obs["corner"].shape == (16, 16, 3)
    env.close()


def test_unknown_options_are_config_errors():
    with pytest.raises(ConfigError, match="unknown task"):
        envs.make_env("pour")
    with pytest.raises(ConfigError, match="does not support"):
        envs.make_env("mw-hammer", placement_range=0.1)
    with pytest.raises(ConfigError, match="no camera"):
        envs.make_env("lift", cameras=["corner2"])


def test_lift_variations():
    wide = envs.make_env("lift", cameras=[], placement_range=0.15, object_scale=1.3, distractors=2)
    xy = np.array([wide.reset(seed=k)[0]["object"][:2] for k in range(8)])
    assert len(wide.suite.distractors) == 2
    wide.close()
    assert np.ptp(xy, axis=0).max() > 0.08  # the default +-3 cm range could not spread this far
    with pytest.raises(ConfigError, match="distractors need placement_range"):
        envs.make_env("lift", distractors=1)


@pytest.mark.parametrize("task,episodes", [("lift", 3), ("mw-button-press-topdown", 3)])
def test_expert_succeeds(task, episodes):
    env = envs.make_env(task, cameras=[])
    expert = envs.make_expert(task)
    for k in range(episodes):
        obs, info = env.reset(seed=500 + k)
        expert.reset()
        for _ in range(env.task.max_steps):
            obs, _, terminated, truncated, info = env.step(expert.act(env, obs))
            if terminated or truncated:
                break
        assert info["success"], f"{task} expert failed from seed {500 + k}"
    env.close()
