"""Detail-limited push tasks: their knobs do what they say, bad knobs fail with one message, experts succeed,
re-rendered frames equal stored ones. (The shared observation/seeding contract runs in test_envs.py for every task.)"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("mujoco")
pytest.importorskip("metaworld")

import envs  # noqa: E402
from envs.detail_tasks import detail_pixels, outcome  # noqa: E402
from s2policy.errors import ConfigError  # noqa: E402

pytestmark = pytest.mark.simulator

DETAIL_TASKS = ["mw-push-tiny-goal", "mw-push-cue", "mw-push-twin"]


@pytest.mark.parametrize("task", DETAIL_TASKS)
def test_expert_succeeds_and_rerender_equals_stored_frames(task, tmp_path):
    summary = envs.collect_demos(task, 2, tmp_path / "demos.hdf5", camera_size=(16, 20), seed=7, progress=False)
    assert summary["attempts"] == 2 and summary["successes"] == 2  # the expert succeeds from both seeds
    from s2policy.data import open_dataset

    with open_dataset(tmp_path / "demos.hdf5") as ds:
        stored = ds.obs_array("demo_1", "corner2_image")[:]
        assert ds.env_args["env_kwargs"]["task"] == task
    np.testing.assert_array_equal(envs.rerender(tmp_path / "demos.hdf5", "demo_1"), stored)


def test_goal_radius_sets_marker_pixels_and_goal_range_is_wide():
    sizes = {}
    for radius in (0.01, 0.03):
        env = envs.make_env("mw-push-tiny-goal", camera_size=224, goal_radius=radius)
        env.reset(seed=4)
        sizes[radius] = detail_pixels(env, "goal")
        env.close()
    env = envs.make_env("mw-push-tiny-goal", cameras=[])
    goals = np.array([env.reset(seed=k)[0]["object"][14:16] for k in range(30)])
    env.close()
    assert 1.0 < sizes[0.01] < 3.5 and sizes[0.03] == pytest.approx(3 * sizes[0.01], rel=0.35)
    assert np.ptp(goals[:, 0]) > 0.3  # push-v3's own goal range is 0.2 wide
    assert goals[:, 0].min() >= -0.25 and goals[:, 0].max() <= 0.25


def test_cue_colour_selects_the_goal():
    colours = [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    env = envs.make_env("mw-push-cue", camera_size=224, cue_radius=0.02, cue_colours=colours)
    model = env.suite.model
    sides = set()
    for k in range(12):
        obs, _ = env.reset(seed=k)
        goal, other = obs["object"][14:17], obs["object"][7:10]
        side = int(goal[0] > 0)  # left goal <-> cue_colours[0]
        sides.add(side)
        np.testing.assert_allclose(model.site("cue").rgba[:3], colours[side])
        assert goal[0] == pytest.approx(-other[0]) and abs(goal[0]) == pytest.approx(0.15)
        # the cue's pixels in the frame carry that colour
        frame = obs["corner2"].astype(int)
        hue = frame[..., 0] - frame[..., 2] if side == 0 else frame[..., 2] - frame[..., 0]
        assert (hue > 150).sum() >= 4
    env.close()
    assert sides == {0, 1}


def test_twin_mark_is_on_the_puck_to_push():
    env = envs.make_env("mw-push-twin", cameras=[], mark_radius=0.01)
    data = env.suite.data
    sides = set()
    for k in range(10):
        obs, _ = env.reset(seed=k)
        target, twin = obs["object"][:3], obs["object"][7:10]
        np.testing.assert_allclose(data.site("mark").xpos[:2], target[:2], atol=1e-4)  # obs is float32
        assert np.sign(target[0]) == -np.sign(twin[0]) and np.linalg.norm(target[:2] - twin[:2]) > 0.09
        sides.add(bool(target[0] > 0))
    assert sides == {True, False}
    assert env.suite.model.site("mark").size[0] == pytest.approx(0.01)
    env.close()


@pytest.mark.parametrize("task, knobs, message", [
    ("mw-push-tiny-goal", {"goal_radius": -0.01}, "goal_radius must be a number in [0.002, 0.05], got -0.01"),
    ("mw-push-tiny-goal", {"goal_x": [0.2, -0.2]}, "goal_x must be [low, high] with low <= high, got [0.2, -0.2]"),
    ("mw-push-tiny-goal", {"goal_y": [0.8]}, "goal_y must be a list of 2 numbers in [0.55, 0.95], got [0.8]"),
    ("mw-push-cue", {"cue_radius": "big"}, "cue_radius must be a number in [0.002, 0.05], got 'big'"),
    ("mw-push-cue", {"cue_colours": [[1, 0, 0], [1, 0, 0]]}, "cue_colours must differ"),
    ("mw-push-cue", {"cue_colours": [[1, 0, 0]]}, "cue_colours must be two RGB colours"),
    ("mw-push-cue", {"cue_colours": [[1, 0, 0], [0, 0, 2]]},
     "cue_colours[1] must be a list of 3 numbers in [0.0, 1.0]"),
    ("mw-push-twin", {"mark_radius": 0.05}, "mark_radius must be a number in [0.002, 0.02], got 0.05"),
    ("mw-push-twin", {"mark_size": 0.01}, "does not support ['mark_size']"),
])
def test_bad_knob_is_one_clear_error(task, knobs, message):
    with pytest.raises(ConfigError) as error:
        envs.make_env(task, cameras=[], **knobs)
    assert message in str(error.value) and str(error.value).count("must") <= 1
    with pytest.raises(ConfigError, match="must|does not support"):  # the study/collect path checks before any work
        envs.task_variation(task, {}, knobs)


def test_outcomes_from_final_object():
    def final(puck, second, goal):
        return [*puck, 1, 0, 0, 0, *second, 0, 0, 0, 0, *goal]

    left, right = [-0.15, 0.85, 0.02], [0.15, 0.85, 0.02]
    assert outcome("mw-push-cue", final([-0.14, 0.84, 0.02], right, left)) == {"correct_side": True,
                                                                              "wrong_goal": False}
    assert outcome("mw-push-cue", final([0.0, 0.85, 0.02], right, left)) == {"correct_side": False,
                                                                            "wrong_goal": False}  # averaged
    assert outcome("mw-push-cue", final([0.15, 0.83, 0.02], right, left)) == {"correct_side": False,
                                                                             "wrong_goal": True}
    assert outcome("mw-push-twin", final([0.1, 0.6, 0.02], [0.0, 0.84, 0.02], [0.0, 0.85, 0.02])) == {
        "wrong_puck_at_goal": True}
    assert outcome("mw-push-tiny-goal", final([0, 0, 0], [0, 0, 0], [0, 0, 0])) == {}
