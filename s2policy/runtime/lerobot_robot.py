"""`LeRobotRobot`: any LeRobot `Robot` (SO-101, Koch, ...) behind our `Robot` protocol, so our control loop (in-process
or as the thin client of a policy server) drives it. No torch, and no import of lerobot itself: the adapter only calls
the documented interface of LeRobot's `Robot` base class, which any robot object passed in already implements:

    observation_features -> {key: float | (H, W, C)}   action_features -> {key: float}
    is_connected, connect(calibrate=...), get_observation() -> flat dict, send_action(dict) -> dict, disconnect()

The key mapping (which LeRobot camera is which of the policy's cameras, which joint readings form the proprio vector
and in what order, which action keys the action vector fills) is a small config (configs/robot/lerobot_so101.yaml).

LeRobot >= 0.5 needs Python 3.12 and this package pins 3.11; LeRobot 0.4.x (the last for 3.11) pins torch < 2.11.
So lerobot is not a dependency here, and the adapter is tested against a fake robot implementing that interface.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import ConfigError
from .robot import TIMESTAMP_KEY, now

log = logging.getLogger(__name__)


@dataclass
class LeRobotMapping:
    """cameras: {policy camera: LeRobot observation key of an (H, W, 3) image}; proprio: LeRobot observation keys
    of scalar readings, concatenated in this order into `proprio_key`; actions: LeRobot action keys, in the order
    of the policy's action vector. Empty fields are filled from the robot's features (`resolve`)."""

    cameras: dict[str, str] = field(default_factory=dict)
    proprio: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    proprio_key: str = "proprio"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "LeRobotMapping":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"robot mapping: unknown keys {sorted(unknown)} "
                              f"(expected {sorted(cls.__dataclass_fields__)})")
        cameras, proprio, actions = d.get("cameras") or {}, d.get("proprio") or [], d.get("actions") or []
        if not isinstance(cameras, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                       for k, v in cameras.items()):
            raise ConfigError(f"robot mapping: cameras must map policy camera names to LeRobot keys, got {cameras!r}")
        for name, keys in (("proprio", proprio), ("actions", actions)):
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise ConfigError(f"robot mapping: {name} must be a list of LeRobot keys, got {keys!r}")
            if len(set(keys)) != len(keys):
                raise ConfigError(f"robot mapping: {name} lists a key twice: {keys}")
        return cls(dict(cameras), list(proprio), list(actions), str(d.get("proprio_key", "proprio")))

    @classmethod
    def from_yaml(cls, path: str | Path) -> "LeRobotMapping":
        import yaml

        try:
            return cls.from_dict(yaml.safe_load(Path(path).read_text()))
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"{path}: cannot read the robot mapping: {e}") from e

    def resolve(self, observation_features: Mapping[str, Any], action_features: Mapping[str, Any]) -> "LeRobotMapping":
        """A complete mapping checked against a robot's features; ConfigError naming the first bad key.
        Defaults: every image feature as a camera of the same name, every scalar observation feature as proprio, every
        action feature as the action vector (each in the robot's order)."""
        images = [k for k, v in observation_features.items() if isinstance(v, tuple)]
        scalars = [k for k, v in observation_features.items() if v in (float, int)]
        cameras = self.cameras or {k: k for k in images}
        proprio = self.proprio or scalars
        actions = self.actions or list(action_features)
        for cam, key in cameras.items():
            shape = observation_features.get(key)
            if not (isinstance(shape, tuple) and len(shape) == 3 and shape[2] == 3):
                raise ConfigError(f"robot mapping: camera {cam!r} -> {key!r}: the robot has no (H, W, 3) image "
                                  f"under that key (images: {images})")
        for key in proprio:
            if key not in scalars:
                raise ConfigError(f"robot mapping: proprio key {key!r} is not a scalar observation of the robot "
                                  f"(scalars: {scalars})")
        for key in actions:
            if action_features.get(key) not in (float, int):
                raise ConfigError(f"robot mapping: action key {key!r} is not a scalar action of the robot "
                                  f"(actions: {list(action_features)})")
        if not actions:
            raise ConfigError("robot mapping: the robot has no actions")
        return LeRobotMapping(cameras, proprio, actions, self.proprio_key)


class LeRobotRobot:
    """A LeRobot robot object as our `Robot`: {camera: uint8 (H, W, 3), proprio_key: float32 (P,), timestamp} in,
    float32 (A,) action out as {action key: float}. Connects it (if needed) on construction; `close()` disconnects.

    Safety bounds are not in LeRobot's features: give them in `SafetyConfig` (joint limits of your arm).
    """

    def __init__(self, robot: Any, mapping: LeRobotMapping | None = None, calibrate: bool = False):
        self.robot = robot
        self.mapping = (mapping or LeRobotMapping()).resolve(robot.observation_features, robot.action_features)
        self.action_dim = len(self.mapping.actions)
        if not robot.is_connected:
            robot.connect(calibrate=calibrate)
        log.info("LeRobot robot %s: cameras %s, proprio %d values, %d actions", getattr(robot, "name", "?"),
                 self.mapping.cameras, len(self.mapping.proprio), self.action_dim)

    def get_observation(self) -> dict[str, Any]:
        raw = self.robot.get_observation()
        stamp = now()  # LeRobot observations carry no capture time; reading them is the capture
        m = self.mapping
        obs: dict[str, Any] = {}
        for cam, key in m.cameras.items():
            frame = np.asarray(raw[key])
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"LeRobot camera {key!r} gave {frame.dtype} {frame.shape}, expected uint8 (H, W, 3)")
            obs[cam] = frame
        obs[m.proprio_key] = np.array([float(raw[k]) for k in m.proprio], np.float32)
        obs[TIMESTAMP_KEY] = stamp
        return obs

    def send_action(self, action: np.ndarray) -> None:
        action = np.asarray(action, np.float32).reshape(-1)
        if action.shape != (self.action_dim,):
            raise ValueError(f"action has shape {action.shape}, the robot's mapping takes ({self.action_dim},)")
        self.robot.send_action({k: float(v) for k, v in zip(self.mapping.actions, action)})

    def close(self) -> None:
        if self.robot.is_connected:
            self.robot.disconnect()
