"""Meta-World v3 tasks behind the shared TaskEnv contract, with a fresh seeded configuration on every reset."""

from __future__ import annotations

from typing import Sequence

import mujoco
import numpy as np

from .base import TaskEnv
from .rendering import CameraSize, tune_model_for_cpu
from .tasks import TaskSpec


class MetaWorldTaskEnv(TaskEnv):
    """No variation keywords besides cameras: Meta-World fixes each task's object and goal ranges."""

    upside_down_cameras = ("corner", "corner2", "corner3", "corner4")

    def __init__(self, spec: TaskSpec, cameras: Sequence[str] | None = None, camera_size: CameraSize = 448,
                 seed: int | None = None):
        super().__init__(spec, cameras, camera_size, seed)
        self.suite = self._build_suite()
        # Meta-World pre-samples one frozen configuration and ignores reset seeds; sample from its own seeded
        # generator instead, which seed(k) makes reproducible.
        self.suite._freeze_rand_vec = False
        self.suite.seeded_rand_vec = True
        self.suite.max_path_length = spec.max_steps + 1  # our TaskEnv truncates; Meta-World would raise past its cap
        tune_model_for_cpu(self.suite.model)
        self._raw_obs = np.zeros(39)
        self._success = False

    def _build_suite(self):
        """The Meta-World env (goal-observable: its scripted experts read the goal)."""
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

        return ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{self.task.suite_task}-goal-observable"](seed=0)

    @property
    def mj_model_data(self):
        return self.suite.model, self.suite.data

    def _suite_reset(self, seed: int | None) -> None:
        self.suite.seed(seed)
        self._raw_obs, _ = self.suite.reset()
        self._success = False
        # Meta-World's reset ends with mj_step (hand settling), leaving body poses one step behind qpos; recompute
        # them so the first frame matches the stored state exactly.
        mujoco.mj_forward(self.suite.model, self.suite.data)

    def _suite_step(self, action: np.ndarray) -> float:
        self._raw_obs, reward, _, _, info = self.suite.step(action.astype(np.float32))
        self._success = bool(info["success"])
        return reward

    @property
    def suite_obs(self) -> np.ndarray:
        """Meta-World's raw 39-D observation (what its scripted policies read)."""
        return self._raw_obs

    def _proprio(self) -> np.ndarray:
        return self._raw_obs[:4]

    def _object(self) -> np.ndarray:
        return np.concatenate([self._raw_obs[4:18], self._raw_obs[36:39]])

    def is_success(self) -> bool:
        return self._success

    def get_state(self) -> np.ndarray:
        return np.concatenate([self.suite.data.qpos, self.suite.data.qvel]).astype(np.float64)

    def set_state(self, state: np.ndarray) -> None:
        """Set (qpos, qvel). Object and goal placements live partly in the model (body_pos), so reset with the
        demo's seed first."""
        nq = self.suite.model.nq
        self.suite.set_state(state[:nq], state[nq:])
