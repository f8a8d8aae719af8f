"""The LeRobot adapter against a fake robot implementing LeRobot's documented `Robot` interface (lerobot itself does
not install beside this package's pins): key mapping, validation, and our loop driving it with a served policy."""

from pathlib import Path

import numpy as np
import pytest

from s2policy.errors import ConfigError
from s2policy.runtime import ChunkStream, ControlLoop, LocalChunks, SafetyConfig
from s2policy.runtime.lerobot_robot import LeRobotMapping, LeRobotRobot

from .serve_support import tiny_service
from .test_runtime_support import write_tiny_checkpoint

MOTORS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "robot" / "lerobot_so101.yaml"


class FakeSO101:
    """LeRobot's Robot interface: features, connect/disconnect, get_observation, send_action (returns what it sent)."""

    name = "fake_so101"

    def __init__(self):
        self.connected = False
        self.calibrated_on_connect = None
        self.sent = []
        self.position = {f"{m}.pos": float(i) for i, m in enumerate(MOTORS)}
        self.reads = 0

    @property
    def observation_features(self):
        return {**{f"{m}.pos": float for m in MOTORS}, "front": (48, 64, 3), "wrist": (32, 32, 3)}

    @property
    def action_features(self):
        return {f"{m}.pos": float for m in MOTORS}

    @property
    def is_connected(self):
        return self.connected

    def connect(self, calibrate=True):
        self.connected, self.calibrated_on_connect = True, calibrate

    def get_observation(self):
        assert self.connected, "DeviceNotConnectedError"
        self.reads += 1
        rng = np.random.default_rng(self.reads)
        return {**self.position, "front": rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
                "wrist": np.zeros((32, 32, 3), np.uint8)}

    def send_action(self, action):
        assert self.connected, "DeviceNotConnectedError"
        assert set(action) == set(self.action_features) and all(type(v) is float for v in action.values())
        self.sent.append(dict(action))
        return action

    def disconnect(self):
        self.connected = False


def test_the_shipped_so101_mapping_reads_and_maps_every_key():
    fake = FakeSO101()
    robot = LeRobotRobot(fake, LeRobotMapping.from_yaml(CONFIG))
    assert fake.connected and fake.calibrated_on_connect is False
    obs = robot.get_observation()
    assert set(obs) == {"agentview", "proprio", "timestamp"}
    np.testing.assert_array_equal(obs["proprio"], np.arange(6, dtype=np.float32))  # the mapping's order
    assert obs["agentview"].shape == (48, 64, 3)
    robot.send_action(np.arange(6, dtype=np.float32) / 10)
    assert fake.sent[-1] == {f"{m}.pos": pytest.approx(i / 10) for i, m in enumerate(MOTORS)}
    robot.close()
    assert not fake.connected


def test_default_mapping_uses_the_robots_features():
    robot = LeRobotRobot(FakeSO101(), LeRobotMapping(proprio=["gripper.pos", "elbow_flex.pos"]))
    assert robot.mapping.cameras == {"front": "front", "wrist": "wrist"}
    assert robot.mapping.actions == [f"{m}.pos" for m in MOTORS] and robot.action_dim == 6
    np.testing.assert_array_equal(robot.get_observation()["proprio"], [5.0, 2.0])


@pytest.mark.parametrize("mapping, message", [
    ({"cameras": {"agentview": "top"}}, "camera 'agentview' -> 'top': the robot has no (H, W, 3) image"),
    ({"proprio": ["elbow.pos"]}, "proprio key 'elbow.pos' is not a scalar observation"),
    ({"actions": ["gripper.pos", "front"]}, "action key 'front' is not a scalar action"),
    ({"actions": ["gripper.pos", "gripper.pos"]}, "actions lists a key twice"),
    ({"camera": {}}, "unknown keys ['camera']"),
    ({"proprio": "gripper.pos"}, "proprio must be a list of LeRobot keys"),
])
def test_a_bad_mapping_names_the_key(mapping, message):
    fake = FakeSO101()
    with pytest.raises(ConfigError) as e:
        LeRobotRobot(fake, LeRobotMapping.from_dict(mapping))
    assert message in str(e.value)
    assert not fake.connected  # nothing was touched


def test_our_loop_drives_the_lerobot_robot_with_a_policy(tmp_path):
    ckpt = write_tiny_checkpoint(tmp_path / "p.safetensors", head="transformer", proprio_dim=6, action_dim=6)
    fake = FakeSO101()
    robot = LeRobotRobot(fake, LeRobotMapping.from_yaml(CONFIG))
    low, high = -np.ones(6), np.ones(6)
    report = ControlLoop(robot, ChunkStream(LocalChunks(tiny_service(ckpt))), hz=20,
                         safety=SafetyConfig(low=low, high=high, fault_action="hold")).run(steps=20)
    assert report.ticks == 20 and report.inferences >= 3
    values = np.array([[a[f"{m}.pos"] for m in MOTORS] for a in fake.sent])
    assert len(values) == 21 and np.isfinite(values).all() and (np.abs(values) <= 1).all()
    assert np.abs(values[-5:]).sum() > 0  # the policy's actions reached the motors
    assert not fake.connected  # the loop closed the robot: disconnected
