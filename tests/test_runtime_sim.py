"""The simulated robot: a MuJoCo task stepping in real time behind the Robot protocol, driven by the loop."""

import numpy as np
import pytest

from s2policy.runtime import EPISODE_KEY, TIMESTAMP_KEY, ControlLoop, Robot, SafetyConfig, SimRobot

from .test_runtime_support import FakeController

pytest.importorskip("envs")  # first: it picks the headless GL backend before mujoco loads


def test_sim_robot_runs_in_the_loop():
    robot = SimRobot.for_task("lift", camera_size=48, sim_hz=20)
    assert isinstance(robot, Robot)
    obs = robot.get_observation()
    assert obs["agentview"].shape == (48, 48, 3) and obs["agentview"].dtype == np.uint8
    assert obs["proprio"].shape == (16,) and obs[EPISODE_KEY] == 0 and TIMESTAMP_KEY in obs
    controller = FakeController(action_fn=lambda o: np.zeros(7, np.float32), action_dim=7)
    safety = SafetyConfig(low=robot.action_low, high=robot.action_high, max_observation_age=1.0)
    report = ControlLoop(robot, controller, hz=10, safety=safety).run(seconds=1.0)
    assert robot.steps >= 5  # the simulator advanced in real time while the loop ran
    assert report.ticks >= 5 and report.safety_events.get("stale_observation", 0) <= 2
    assert not robot._thread.is_alive()  # closed by the loop
    with pytest.raises(ValueError, match="shape"):
        robot.send_action(np.zeros(3))
