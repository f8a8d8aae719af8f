"""ControlLoop cadence: holds its rate with a fast policy, reports missed deadlines with a slow one, stops cleanly.

Tolerances are generous on purpose: the machine running the tests is shared and loaded.
"""

import threading

import numpy as np
import pytest

from s2policy.runtime import ControlLoop, PolicyRunner, SafetyConfig

from .test_runtime_support import ACTION_DIM, FakeController, FakeRobot, observation, write_tiny_checkpoint


def test_fast_policy_holds_the_rate():
    robot = FakeRobot()
    report = ControlLoop(robot, FakeController(delay=0.001), hz=50).run(steps=40)
    assert report.ticks == 40 and report.inferences == 40
    assert 33 <= report.achieved_hz <= 52
    assert report.missed_deadlines <= 8
    assert robot.closed and len(robot.sent) == 41  # 40 ticks + the stop action
    np.testing.assert_allclose(robot.sent[0], 0.1)
    assert report.stage_ms["encode"]["p50"] == pytest.approx(1.0, abs=0.01)


def test_slow_policy_misses_deadlines_and_skips_slots():
    report = ControlLoop(FakeRobot(), FakeController(delay=0.05), hz=40).run(steps=8)
    assert report.missed_deadlines >= 7
    assert report.skipped_slots >= 7
    assert report.achieved_hz < 25
    assert report.tick_latency_ms["p50"] >= 45


def test_background_inference_keeps_the_tick_short():
    controller = FakeController(delay=0.06)
    report = ControlLoop(FakeRobot(), controller, hz=40, background=True,
                         safety=SafetyConfig(max_action_age=1.0)).run(steps=30)
    assert report.tick_latency_ms["p50"] < 15  # the tick never waits for the 60 ms inference
    assert report.achieved_hz > 25
    assert 3 <= report.inferences <= 20
    assert report.safety_events.get("no_action_yet", 0) >= 1  # before the first inference finished
    assert report.action_age_ms["p50"] >= 50


def test_ctrl_c_and_exceptions_close_the_robot():
    def interrupt(obs):
        raise KeyboardInterrupt

    robot = FakeRobot()
    report = ControlLoop(robot, FakeController(action_fn=interrupt), hz=100).run(steps=5)
    assert report.stop_reason == "interrupted" and robot.closed
    np.testing.assert_array_equal(robot.sent[-1], np.zeros(ACTION_DIM))  # the stop action

    robot = FakeRobot(fail_at=3)
    loop = ControlLoop(robot, FakeController(), hz=100)
    with pytest.raises(OSError, match="camera unplugged"):
        loop.run(steps=10)
    assert robot.closed and loop.report.ticks == 3 and "OSError" in loop.report.stop_reason


def test_background_worker_error_stops_the_loop():
    def boom(obs):
        raise RuntimeError("head exploded")

    robot = FakeRobot()
    with pytest.raises(RuntimeError, match="background inference failed"):
        ControlLoop(robot, FakeController(action_fn=boom), hz=50, background=True).run(seconds=2)
    assert robot.closed


def test_stop_from_another_thread():
    robot = FakeRobot()
    loop = ControlLoop(robot, FakeController(), hz=100)
    threading.Timer(0.2, loop.stop).start()
    report = loop.run(seconds=10)
    assert report.stop_reason == "stopped" and report.ticks < 200 and robot.closed


def test_real_tiny_policy_in_the_loop(tmp_path):
    ckpt = write_tiny_checkpoint(tmp_path / "p.safetensors", head="transformer")
    runner = PolicyRunner.from_checkpoint(ckpt, device="cpu")
    rng = np.random.default_rng(0)
    robot = FakeRobot(make_obs=lambda i: observation(rng, episode=i // 6))
    report = ControlLoop(robot, runner, hz=20, safety=SafetyConfig(low=-1, high=1)).run(steps=12)
    assert report.ticks == 12 and report.inferences == 12
    assert all(np.isfinite(a).all() and np.abs(a).max() <= 1 for a in robot.sent)
    assert report.stage_ms["encode"]["p50"] > 0 and report.stage_ms["head"]["max"] > 0
    text = report.format()
    assert "p95" in text and "encode" in text
