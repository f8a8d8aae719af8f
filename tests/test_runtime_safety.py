"""Safety guards: non-finite inputs/outputs never reach the robot, stale frames are refused, actions are clipped
and rate limited, and each intervention is a counted event."""

import time

import numpy as np
import pytest

from s2policy.errors import ConfigError
from s2policy.runtime import TIMESTAMP_KEY, ControlLoop, SafetyConfig, SafetyGuard

from .test_runtime_support import ACTION_DIM, PROPRIO_DIM, FakeController, FakeRobot


def _proprio(value: float = 0.0) -> dict:
    return {"proprio": np.full(PROPRIO_DIM, value, np.float32)}


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_observation_never_reaches_the_policy(bad):
    controller = FakeController()
    robot = FakeRobot(make_obs=lambda i: _proprio(bad if i in (2, 3) else 0.0))
    report = ControlLoop(robot, controller, hz=200, safety=SafetyConfig(safe_action=[0.0, 0.0, -1.0])).run(steps=6)
    assert controller.calls == 4
    assert report.safety_events["nonfinite_observation"] == 2
    np.testing.assert_array_equal(robot.sent[2], [0, 0, -1])
    np.testing.assert_allclose(robot.sent[4], 0.1)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_action_is_replaced_and_the_policy_reset(bad):
    controller = FakeController(action_fn=lambda obs: np.array([0.2, bad, 0.0], np.float32))
    robot = FakeRobot()
    report = ControlLoop(robot, controller, hz=200, safety=SafetyConfig(fault_action="hold")).run(steps=3)
    assert report.safety_events["nonfinite_action"] == 3
    assert controller.resets == 3
    assert all(np.isfinite(a).all() for a in robot.sent)
    np.testing.assert_array_equal(robot.sent[0], np.zeros(ACTION_DIM))  # nothing to hold yet -> safe action


def test_stale_observation_is_refused():
    old = time.monotonic() - 5.0
    controller = FakeController()
    robot = FakeRobot(make_obs=lambda i: {**_proprio(), TIMESTAMP_KEY: old if i == 1 else time.monotonic()})
    report = ControlLoop(robot, controller, hz=100, safety=SafetyConfig(max_observation_age=0.5)).run(steps=3)
    assert report.safety_events == {"stale_observation": 1}
    assert controller.calls == 2


def test_action_from_an_old_observation_is_refused():
    controller = FakeController(delay=0.05)
    robot = FakeRobot()
    report = ControlLoop(robot, controller, hz=10, safety=SafetyConfig(max_action_age=0.02)).run(steps=2)
    assert report.safety_events["stale_action"] == 2
    np.testing.assert_array_equal(robot.sent[0], np.zeros(ACTION_DIM))


def test_hold_repeats_the_last_action():
    actions = iter([np.array([0.5, 0.5, 0.5]), np.array([np.nan, 0, 0]), np.array([0.4, 0.4, 0.4])])
    robot = FakeRobot()
    ControlLoop(robot, FakeController(action_fn=lambda o: next(actions)), hz=200,
                safety=SafetyConfig(fault_action="hold"), safe_stop=False).run(steps=3)
    np.testing.assert_allclose(np.stack(robot.sent), [[0.5] * 3, [0.5] * 3, [0.4] * 3])


def test_clipping_and_rate_limit():
    targets = iter([[3.0, -3.0, 0.0], [3.0, -3.0, 0.0], [3.0, -3.0, 0.0], [-1.0, 1.0, 0.0]])
    robot = FakeRobot()
    report = ControlLoop(
        robot, FakeController(action_fn=lambda o: np.array(next(targets), np.float32)), hz=200,
        safety=SafetyConfig(low=[-1, -1, -0.5], high=[1, 1, 0.5], max_delta=0.4), safe_stop=False,
    ).run(steps=4)
    sent = np.stack(robot.sent)
    np.testing.assert_allclose(sent, [[1, -1, 0], [1, -1, 0], [1, -1, 0], [0.6, -0.6, 0]], atol=1e-6)
    assert report.safety_events["clipped"] == 3 and report.safety_events["rate_limited"] == 1


def test_guard_rejects_wrong_action_shape_and_bad_config():
    guard = SafetyGuard(SafetyConfig(), ACTION_DIM)
    with pytest.raises(ValueError, match="shape"):
        guard.filter_action(np.zeros(ACTION_DIM + 1), time.monotonic(), time.monotonic())
    with pytest.raises(ConfigError):
        SafetyConfig(fault_action="freeze")
    with pytest.raises(ConfigError):
        SafetyConfig(low=1, high=-1)
