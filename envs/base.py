"""The gymnasium contract every task shares; suite subclasses only say how to drive their simulator."""

from __future__ import annotations

import abc
from typing import Any, Sequence

import gymnasium as gym
import numpy as np

from s2policy.camera_model import CameraModel

from .rendering import CameraRenderer, CameraSize, image_hw
from .tasks import TaskSpec


class TaskEnv(gym.Env, abc.ABC):
    """Observation: {camera: uint8 (H, W, 3), "proprio": float32 (P,), "object": float32 (O,)};
    actions float32 (A,) in [-1, 1]; info["success"] bool. An episode terminates on success and truncates at
    spec.max_steps. reset(seed=k) gives the same initial state for the same k and a different one for another k.
    """

    metadata = {"render_modes": ["rgb_array"]}
    #: Cameras whose frames the renderer turns by 180 degrees to make them upright.
    upside_down_cameras: tuple[str, ...] = ()
    #: Geom groups the cameras do not draw (collision meshes).
    hidden_geom_groups: tuple[int, ...] = ()

    def __init__(self, spec: TaskSpec, cameras: Sequence[str] | None, camera_size: CameraSize, seed: int | None):
        self.task = spec
        self.cameras = list(cameras) if cameras is not None else [spec.default_camera]
        self.camera_hw = image_hw(camera_size)
        self._next_seed = seed
        self._steps = 0
        self.action_space = gym.spaces.Box(-1.0, 1.0, (spec.action_dim,), np.float32)
        spaces = {c: gym.spaces.Box(0, 255, (*self.camera_hw, 3), np.uint8) for c in self.cameras}
        spaces["proprio"] = gym.spaces.Box(-np.inf, np.inf, (spec.proprio_dim,), np.float32)
        spaces["object"] = gym.spaces.Box(-np.inf, np.inf, (spec.object_dim,), np.float32)
        self.observation_space = gym.spaces.Dict(spaces)
        self._renderer: CameraRenderer | None = None

    # ---- what a suite provides ----
    @abc.abstractmethod
    def _suite_reset(self, seed: int | None) -> None: ...

    @abc.abstractmethod
    def _suite_step(self, action: np.ndarray) -> float: ...

    @abc.abstractmethod
    def _proprio(self) -> np.ndarray: ...

    @abc.abstractmethod
    def _object(self) -> np.ndarray: ...

    @abc.abstractmethod
    def is_success(self) -> bool: ...

    @abc.abstractmethod
    def get_state(self) -> np.ndarray:
        """Flattened simulator state (D,) float64, as stored in a dataset's `states`."""

    @abc.abstractmethod
    def set_state(self, state: np.ndarray) -> None:
        """Put the simulator in a stored state (positions are enough for rendering)."""

    @property
    @abc.abstractmethod
    def mj_model_data(self) -> tuple[Any, Any]:
        """(MjModel, MjData) of the live simulation, for rendering."""

    # ---- the shared contract ----
    def _render_cameras(self) -> dict[str, np.ndarray]:
        if self._renderer is None:
            model, data = self.mj_model_data
            self._renderer = CameraRenderer(model, data, self.cameras, self.camera_hw, self.upside_down_cameras,
                                            self.hidden_geom_groups)
        return self._renderer.render()

    def camera_model(self, camera: str) -> CameraModel:
        """Intrinsics and extrinsics of a fixed `camera` for the frames this env renders (see
        s2policy.camera_model; raises ConfigError for a camera that moves with the robot)."""
        model, data = self.mj_model_data
        return CameraModel.from_mujoco(model, data, camera, self.camera_hw, camera in self.upside_down_cameras)

    def observation(self) -> dict[str, np.ndarray]:
        obs = self._render_cameras()
        obs["proprio"] = np.asarray(self._proprio(), dtype=np.float32)
        obs["object"] = np.asarray(self._object(), dtype=np.float32)
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None:  # the seed given at construction applies to the first reset only
            seed, self._next_seed = self._next_seed, None
        super().reset(seed=seed)
        if seed is None:  # unseeded resets still draw from gymnasium's generator so they differ
            seed = int(self.np_random.integers(2**31 - 1))
        self._suite_reset(seed)
        self._steps = 0
        return self.observation(), {"success": self.is_success(), "seed": seed}

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(self.task.action_dim), -1.0, 1.0)
        reward = self._suite_step(action)
        self._steps += 1
        success = self.is_success()
        truncated = self._steps >= self.task.max_steps and not success
        return self.observation(), float(reward), success, truncated, {"success": success}

    def render(self) -> np.ndarray:
        """The first configured camera's current frame (gymnasium's rgb_array render mode)."""
        return self._render_cameras()[self.cameras[0]]

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
