"""robosuite tasks (Panda, OSC_POSE) behind the shared TaskEnv contract."""

from __future__ import annotations

import functools
import logging
from typing import Sequence

import numpy as np

from s2policy.errors import ConfigError

from .base import TaskEnv
from .rendering import CameraSize, tune_model_for_cpu
from .tasks import TaskSpec

logger = logging.getLogger(__name__)

#: Distractor box colours: none of them red, so the task cube stays unambiguous.
DISTRACTOR_COLOURS = ([0.1, 0.4, 0.9, 1], [0.1, 0.7, 0.2, 1], [0.9, 0.8, 0.1, 1], [0.6, 0.2, 0.7, 1])
#: Smallest placement half-width (m) that leaves room for the cube plus distractors.
MIN_RANGE_WITH_DISTRACTORS = 0.08


@functools.cache
def lift_with_distractors_class() -> type:
    """robosuite Lift plus `num_distractors` coloured boxes placed by the same sampler as the cube.

    Defined once, on first use: robosuite registers every env class by name when the class is created."""
    from robosuite.environments.manipulation.lift import Lift
    from robosuite.models.objects import BoxObject

    class LiftWithDistractors(Lift):
        def __init__(self, *args, num_distractors: int = 0, placement_range: float = 0.03, **kwargs):
            self.num_distractors, self.placement_range = num_distractors, placement_range
            super().__init__(*args, **kwargs)

        def _load_model(self):
            super()._load_model()
            # Widen the cube's range before the constructor's first reset has to fit the distractors in.
            self.placement_initializer.x_range = [-self.placement_range, self.placement_range]
            self.placement_initializer.y_range = [-self.placement_range, self.placement_range]
            self.distractors = [BoxObject(name=f"distractor{i}", size=[0.018, 0.018, 0.018], rgba=colour)
                                for i, colour in enumerate(DISTRACTOR_COLOURS[: self.num_distractors])]
            if self.distractors:
                self.model.merge_objects(self.distractors)
                self.placement_initializer.add_objects(self.distractors)

    return LiftWithDistractors


class RobosuiteTaskEnv(TaskEnv):
    """Variation keywords: placement_range (half-width in m of the square where objects are placed; Lift's own is
    0.03, Stack's 0.08), object_scale (Lift only: cube edge multiplier, 0.5-1.4) and distractors (Lift only: 0-4
    coloured boxes on the table, needs placement_range >= 0.08)."""

    hidden_geom_groups = (0,)  # robosuite's collision meshes

    def __init__(self, spec: TaskSpec, cameras: Sequence[str] | None = None, camera_size: CameraSize = 448,
                 seed: int | None = None, placement_range: float | None = None, object_scale: float = 1.0,
                 distractors: int = 0):
        super().__init__(spec, cameras, camera_size, seed)
        import robosuite

        suite_task, extra = spec.suite_task, {}
        if distractors:
            if not 0 <= distractors <= len(DISTRACTOR_COLOURS):
                raise ConfigError(f"distractors must be in 0..{len(DISTRACTOR_COLOURS)}, got {distractors}")
            if placement_range is None or placement_range < MIN_RANGE_WITH_DISTRACTORS:
                raise ConfigError(f"distractors need placement_range >= {MIN_RANGE_WITH_DISTRACTORS} "
                                  f"(room for the cube and {distractors} boxes), got {placement_range}")
            suite_task, extra = lift_with_distractors_class().__name__, {"num_distractors": int(distractors),
                                                                "placement_range": float(placement_range)}
        self.suite = robosuite.make(
            suite_task, robots="Panda", has_renderer=False, has_offscreen_renderer=False,
            use_camera_obs=False, use_object_obs=True, reward_shaping=False, hard_reset=False,
            horizon=spec.max_steps + 1, ignore_done=True,
            seed=0,  # fixes the scene itself (Lift samples its cube size at load); reset(seed=k) varies placement
            **extra,
        )
        # We render with our own renderer (any size, several cameras, CPU-tuned); robosuite only simulates.
        tune_model_for_cpu(self.suite.sim.model._model)
        if placement_range is not None:
            self._set_placement_range(float(placement_range))
        if object_scale != 1.0:
            self._scale_lift_cube(float(object_scale))
        self._suite_obs: dict[str, np.ndarray] = {}

    # ---- variations ----
    def _set_placement_range(self, half_width: float) -> None:
        sampler = self.suite.placement_initializer
        if not hasattr(sampler, "x_range"):
            raise ConfigError(f"task {self.task.name!r} does not support placement_range")
        sampler.x_range = [-half_width, half_width]
        sampler.y_range = [-half_width, half_width]

    def _scale_lift_cube(self, scale: float) -> None:
        if self.task.name != "lift":
            raise ConfigError(f"object_scale is only supported for lift, not {self.task.name!r}")
        if not 0.5 <= scale <= 1.4:  # larger cubes would start inside the table (placement leaves 1 cm clearance)
            raise ConfigError(f"object_scale must be in [0.5, 1.4], got {scale}")
        model = self.suite.sim.model._model
        body = model.body(self.suite.cube.root_body).id
        geoms = np.flatnonzero(model.geom_bodyid == body)
        model.geom_size[geoms] *= scale
        model.geom_rbound[geoms] *= scale

    # ---- TaskEnv hooks ----
    @property
    def mj_model_data(self):
        return self.suite.sim.model._model, self.suite.sim.data._data

    def _suite_reset(self, seed: int | None) -> None:
        # Placement sampler and robot init noise share suite.rng; reseed that generator in place.
        self.suite.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        self._suite_obs = self.suite.reset()

    def _suite_step(self, action: np.ndarray) -> float:
        self._suite_obs, reward, _, _ = self.suite.step(action)
        # mj_step leaves body poses one substep behind qpos; recompute them so frames match the stored state
        # exactly (re-rendering from states relies on it).
        self.suite.sim.forward()
        return reward

    @property
    def suite_obs(self) -> dict[str, np.ndarray]:
        """robosuite's own observation dict of the current step (privileged state for scripted experts)."""
        return self._suite_obs

    def _proprio(self) -> np.ndarray:
        o = self._suite_obs
        return np.concatenate([o["robot0_eef_pos"], o["robot0_eef_quat"], o["robot0_gripper_qpos"],
                               o["robot0_joint_pos"]])

    def task_objects(self) -> list:
        """The robosuite MujocoObjects whose poses make up obs['object']."""
        env = self.suite
        if self.task.name == "lift":
            return [env.cube]
        if self.task.name == "stack":
            return [env.cubeA, env.cubeB]
        return [env.objects[env.object_id]]

    def object_pose(self, obj) -> np.ndarray:
        """(7,) position and wxyz quaternion of a task object's root body."""
        data = self.suite.sim.data._data
        body = data.body(obj.root_body)
        return np.concatenate([body.xpos, body.xquat])

    def _object(self) -> np.ndarray:
        return np.concatenate([self.object_pose(o) for o in self.task_objects()])

    def is_success(self) -> bool:
        return bool(self.suite._check_success())

    def get_state(self) -> np.ndarray:
        return np.asarray(self.suite.sim.get_state().flatten(), dtype=np.float64)

    def set_state(self, state: np.ndarray, sync_controller: bool = False) -> None:
        """Set the flattened (time, qpos, qvel) state. sync_controller=True also re-targets the arm controller at
        the new pose, which replaying stored actions from this state needs (robosuite 1.5's OSC otherwise keeps the
        nullspace target of the reset pose); rendering does not."""
        sim = self.suite.sim
        sim.set_state_from_flattened(np.asarray(state))
        sim.forward()
        if sync_controller:
            qpos = sim.data.qpos
            for controller in self.suite.robots[0].composite_controller.part_controllers.values():
                controller.update_initial_joints(qpos[controller.qpos_index])
                controller.update(force=True)
                controller.reset_goal()
        self._suite_obs = self.suite._get_observations(force_update=True)

    def model_xml(self) -> str:
        """The MJCF of the live scene (robomimic's per-demo model_file attribute)."""
        return self.suite.sim.model.get_xml()

    def close(self) -> None:
        super().close()
        self.suite.close()
