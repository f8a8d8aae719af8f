"""Meta-World push tasks where a small visual detail decides success (the detail-limited tasks of docs/envs.md).

Three designs on Meta-World's push-v3 scene (Sawyer, a red puck, 4-D actions), each with knobs:

- ``mw-push-tiny-goal``: the goal is a small marker sphere (``goal_radius``) sampled over a range wider than
  Meta-World's (``goal_x``, ``goal_y``); the marker is the only goal information in the image.
- ``mw-push-cue``: two identical goal markers left and right; a small coloured sphere elsewhere on the table
  (``cue_radius`` at ``cue_pos``) says by its colour (``cue_colours[0]`` = left, ``[1]`` = right) which one counts.
- ``mw-push-twin``: two identical pucks; the one to push carries a small disc on top (``mark_radius``). The
  deciding detail sits on the object the gripper acts on.

The vision policy sees the camera image and the hand proprioception, never the goal or the puck identity; the
privileged control reads obs["object"] = [pushed puck pose (7), second slot (7), goal (3)], where the second slot
holds the other goal (cue: xyz then zeros) or the look-alike puck's pose (twin).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import mujoco
import numpy as np

from s2policy.errors import ConfigError

from .metaworld_env import MetaWorldTaskEnv
from .rendering import CameraSize
from .tasks import TaskSpec

PUCK_RADIUS = 0.02  # push-v3's puck: a cylinder of radius 2 cm and half-height 2 cm
SUCCESS_RADIUS = 0.05  # push-v3's success: puck centre within 5 cm of the goal
PUCK_X, PUCK_Y = (-0.1, 0.1), (0.6, 0.7)  # push-v3's puck range (m)
MIN_PUSH = 0.15  # push-v3 resamples until the goal is at least this far from the puck


# ---- knobs ----
def _check_number(task: str, key: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"task {task!r}: {key} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def _check_vector(task: str, key: str, value: Any, size: int, low: float, high: float) -> tuple[float, ...]:
    ok = isinstance(value, (list, tuple)) and len(value) == size and all(
        not isinstance(v, bool) and isinstance(v, (int, float)) and low <= v <= high for v in value)
    if not ok:
        raise ConfigError(f"task {task!r}: {key} must be a list of {size} numbers in [{low}, {high}], got {value!r}")
    return tuple(float(v) for v in value)


def _check_range(task: str, key: str, value: Any, low: float, high: float) -> tuple[float, float]:
    lo, hi = _check_vector(task, key, value, 2, low, high)
    if lo > hi:
        raise ConfigError(f"task {task!r}: {key} must be [low, high] with low <= high, got {value!r}")
    return lo, hi


@dataclass(frozen=True)
class TinyGoalKnobs:
    goal_radius: float = 0.01  # m; push-v3's own marker is 0.02
    goal_x: tuple[float, float] = (-0.25, 0.25)  # m; push-v3's own range is [-0.1, 0.1]
    goal_y: tuple[float, float] = (0.75, 0.9)  # m; push-v3's own range is [0.8, 0.9]

    def check(self, task: str) -> TinyGoalKnobs:
        return TinyGoalKnobs(_check_number(task, "goal_radius", self.goal_radius, 0.002, 0.05),
                             _check_range(task, "goal_x", self.goal_x, -0.3, 0.3),
                             _check_range(task, "goal_y", self.goal_y, 0.55, 0.95))


@dataclass(frozen=True)
class CueKnobs:
    cue_radius: float = 0.008  # m, the coloured sphere whose colour picks the goal
    cue_pos: tuple[float, float, float] = (0.3, 0.9, 0.05)  # m, where the cue floats (back right of the table)
    cue_colours: tuple[tuple[float, float, float], ...] = ((1.0, 0.85, 0.0), (0.0, 0.45, 1.0))  # left, right goal
    goal_separation: float = 0.3  # m between the two goals (both at y = goal_y, symmetric about x = 0)
    goal_y: float = 0.85  # m
    goal_radius: float = 0.02  # m, both goal markers (push-v3's own size)

    def check(self, task: str) -> CueKnobs:
        colours = self.cue_colours
        if not isinstance(colours, (list, tuple)) or len(colours) != 2:
            raise ConfigError(f"task {task!r}: cue_colours must be two RGB colours [left, right], got {colours!r}")
        colours = tuple(_check_vector(task, f"cue_colours[{i}]", c, 3, 0.0, 1.0) for i, c in enumerate(colours))
        if colours[0] == colours[1]:
            raise ConfigError(f"task {task!r}: cue_colours must differ, got {list(colours)}")
        knobs = CueKnobs(_check_number(task, "cue_radius", self.cue_radius, 0.002, 0.05),
                         _check_vector(task, "cue_pos", self.cue_pos, 3, -1.0, 1.5), colours,
                         _check_number(task, "goal_separation", self.goal_separation, 0.2, 0.5),
                         _check_number(task, "goal_y", self.goal_y, 0.8, 0.95),
                         _check_number(task, "goal_radius", self.goal_radius, 0.002, 0.05))
        return knobs


@dataclass(frozen=True)
class TwinKnobs:
    mark_radius: float = 0.008  # m, the disc on top of the puck to push (the puck's own radius is 0.02)
    mark_colour: tuple[float, float, float] = (1.0, 1.0, 1.0)
    puck_x: tuple[float, float] = (0.05, 0.15)  # m, |x| of each puck; one on each side, the side drawn at random

    def check(self, task: str) -> TwinKnobs:
        return TwinKnobs(_check_number(task, "mark_radius", self.mark_radius, 0.002, PUCK_RADIUS),
                         _check_vector(task, "mark_colour", self.mark_colour, 3, 0.0, 1.0),
                         _check_range(task, "puck_x", self.puck_x, 0.03, 0.2))


KNOBS: dict[str, type] = {"mw-push-tiny-goal": TinyGoalKnobs, "mw-push-cue": CueKnobs, "mw-push-twin": TwinKnobs}


def knob_names(task: str) -> tuple[str, ...]:
    return tuple(f.name for f in fields(KNOBS[task]))


def parse_knobs(task: str, variation: dict[str, Any]):
    """The task's knobs from make_env keywords (unknown keys are rejected earlier by check_variation)."""
    return KNOBS[task](**variation).check(task)


# ---- the Meta-World scene ----
@functools.cache
def detail_push_class() -> type:
    """Meta-World's push-v3 with a scene edit at load time and a design hook after each reset. Goal-observable,
    with a fresh configuration from its seeded generator on every reset (what make_env's other Meta-World tasks do
    through env_dict's goal-observable classes, which cannot be subclassed)."""
    from metaworld.envs.sawyer_push_v3 import SawyerPushEnvV3

    class DetailPushV3(SawyerPushEnvV3):
        def __init__(self, design: PushDesign):
            self.design = design  # read by _initialize_simulation inside the parent constructor
            super().__init__()
            self._partially_observable = False
            self._set_task_called = True
            self._freeze_rand_vec = False
            self.seeded_rand_vec = True
            design.configure(self)
            del self.sawyer_observation_space  # cached with the old goal space; rebuilt on next use

        def _initialize_simulation(self):
            spec = mujoco.MjSpec.from_file(self.fullpath)
            self.design.edit_scene(spec)
            model = spec.compile()
            model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
            model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
            return model, mujoco.MjData(model)

        def reset_model(self):
            super().reset_model()
            self.design.after_reset(self)
            self.maxPushDist = np.linalg.norm(self.obj_init_pos[:2] - self._target_pos[:2])  # its reward's scale
            return self._get_obs()

    return DetailPushV3


def _set_goal(suite, goal: np.ndarray) -> None:
    suite._target_pos = np.asarray(goal, dtype=np.float64)
    suite.model.site("goal").pos = suite._target_pos


class PushDesign:
    """What makes a push task detail-limited: scene edits, knob settings, the per-reset layout, obs['object']."""

    def __init__(self, knobs):
        self.knobs = knobs

    def edit_scene(self, spec: mujoco.MjSpec) -> None:
        pass

    def configure(self, suite) -> None:
        pass

    def after_reset(self, suite) -> None:
        pass

    def object_vector(self, suite, raw_obs: np.ndarray) -> np.ndarray:
        """(17,) float: pushed puck pose (7), second slot (7), goal (3)."""
        return np.concatenate([raw_obs[4:18], raw_obs[36:39]])


class TinyGoalDesign(PushDesign):
    def configure(self, suite) -> None:
        from gymnasium.spaces import Box

        k = self.knobs
        suite.model.site("goal").size[0] = k.goal_radius
        goal_low, goal_high = (k.goal_x[0], k.goal_y[0], 0.01), (k.goal_x[1], k.goal_y[1], 0.02)
        suite._random_reset_space = Box(np.array([PUCK_X[0], PUCK_Y[0], 0.02, *goal_low]),
                                        np.array([PUCK_X[1], PUCK_Y[1], 0.02, *goal_high]), dtype=np.float64)
        suite.goal_space = Box(np.array(goal_low), np.array(goal_high), dtype=np.float64)


class CueDesign(PushDesign):
    def edit_scene(self, spec: mujoco.MjSpec) -> None:
        k = self.knobs
        spec.worldbody.add_site(name="goal_other", type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[k.goal_radius, 0, 0],
                                rgba=[0, 0.8, 0, 1], pos=[0, k.goal_y, 0.02])
        spec.worldbody.add_site(name="cue", type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[k.cue_radius, 0, 0],
                                rgba=[*k.cue_colours[0], 1], pos=list(k.cue_pos))

    def goals(self) -> np.ndarray:
        """(2, 3) the left and right goal."""
        k = self.knobs
        return np.array([[-k.goal_separation / 2, k.goal_y, 0.02], [k.goal_separation / 2, k.goal_y, 0.02]])

    def configure(self, suite) -> None:
        from gymnasium.spaces import Box

        suite.model.site("goal").size[0] = self.knobs.goal_radius
        goals = self.goals()
        suite.goal_space = Box(goals.min(0) - 1e-6, goals.max(0) + 1e-6, dtype=np.float64)

    def after_reset(self, suite) -> None:
        side = int(suite.np_random.integers(2))
        goals = self.goals()
        _set_goal(suite, goals[side])
        suite.model.site("goal_other").pos = goals[1 - side]
        suite.model.site("cue").rgba[:3] = self.knobs.cue_colours[side]
        suite.cue_side = side

    def object_vector(self, suite, raw_obs: np.ndarray) -> np.ndarray:
        other = np.zeros(7)
        other[:3] = suite.model.site("goal_other").pos
        return np.concatenate([raw_obs[4:11], other, raw_obs[36:39]])


class TwinDesign(PushDesign):
    def edit_scene(self, spec: mujoco.MjSpec) -> None:
        k = self.knobs
        puck = spec.geom("objGeom")
        body = spec.body("obj")  # the look-alike copies the puck's inertia and contact properties
        twin = spec.worldbody.add_body(name="twin", pos=[0.3, 0.6, 0.02], mass=body.mass, inertia=body.inertia,
                                       explicitinertial=True)
        twin.add_freejoint(name="twinjoint")
        twin.add_geom(name="twinGeom", type=puck.type, size=puck.size, rgba=puck.rgba, material=puck.material,
                      friction=puck.friction, condim=puck.condim, solimp=puck.solimp, solref=puck.solref)
        spec.body("obj").add_site(name="mark", type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[k.mark_radius, 0.001, 0],
                                  pos=[0, 0, PUCK_RADIUS], rgba=[*k.mark_colour, 1])

    def after_reset(self, suite) -> None:
        rng, k = suite.np_random, self.knobs
        side = 1.0 if rng.integers(2) else -1.0
        while True:  # push-v3's own rule: the goal is at least MIN_PUSH from the puck
            target = np.array([side * rng.uniform(*k.puck_x), rng.uniform(*PUCK_Y), suite.obj_init_pos[2]])
            twin = np.array([-side * rng.uniform(*k.puck_x), rng.uniform(*PUCK_Y), suite.obj_init_pos[2]])
            goal = np.array([rng.uniform(-0.1, 0.1), rng.uniform(0.8, 0.9), suite.obj_init_pos[2]])
            if np.linalg.norm(goal[:2] - target[:2]) >= MIN_PUSH:
                break
        suite.obj_init_pos = target
        suite._set_obj_xyz(target)
        joint = suite.model.joint("twinjoint")
        qpos, qvel = suite.data.qpos.copy(), suite.data.qvel.copy()
        qpos[joint.qposadr[0]:joint.qposadr[0] + 7] = [*twin, 1, 0, 0, 0]
        qvel[joint.dofadr[0]:joint.dofadr[0] + 6] = 0
        suite.set_state(qpos, qvel)
        _set_goal(suite, goal)
        suite.twin_side = -side

    def object_vector(self, suite, raw_obs: np.ndarray) -> np.ndarray:
        body = suite.data.body("twin")
        return np.concatenate([raw_obs[4:11], body.xpos, body.xquat, raw_obs[36:39]])


DESIGNS: dict[str, type[PushDesign]] = {"mw-push-tiny-goal": TinyGoalDesign, "mw-push-cue": CueDesign,
                                        "mw-push-twin": TwinDesign}


class DetailPushEnv(MetaWorldTaskEnv):
    """A detail-limited push task; variation keywords are the task's knobs (KNOBS[task] fields)."""

    def __init__(self, spec: TaskSpec, cameras: Sequence[str] | None = None, camera_size: CameraSize = 448,
                 seed: int | None = None, **variation: Any):
        self.design = DESIGNS[spec.name](parse_knobs(spec.name, variation))
        super().__init__(spec, cameras, camera_size, seed)

    def _build_suite(self):
        return detail_push_class()(self.design)

    def _object(self) -> np.ndarray:
        return self.design.object_vector(self.suite, self._raw_obs)


# ---- measurements ----
def outcome(task: str, final_object: Sequence[float]) -> dict[str, bool]:
    """Where a finished episode left things, from its last obs['object'] (episodes.json `final_object`).

    mw-push-cue: `correct_side` = the puck ended nearer the correct goal than the other one and at least half way
    there from the midline (|x| >= separation / 4): a policy that averages the goals ends near the midline and
    counts for neither side; `wrong_goal` = the puck ended within the success radius of the other goal.
    mw-push-twin: `wrong_puck_at_goal` = the look-alike puck ended within the success radius of the goal.
    """
    o = np.asarray(final_object, dtype=np.float64)
    if task in ("mw-push-cue", "mw-push-twin") and (o.ndim != 1 or o.size < 17):
        raise ValueError(f"{task}: final_object must hold puck, second object and goal (>= 17 values), got shape "
                         f"{o.shape}")
    puck, second, goal = o[:3], o[7:10], o[14:17]
    if task == "mw-push-cue":
        separation = abs(goal[0] - second[0])
        nearer = np.linalg.norm(puck[:2] - goal[:2]) < np.linalg.norm(puck[:2] - second[:2])
        return {"correct_side": bool(nearer and abs(puck[0]) >= separation / 4),
                "wrong_goal": bool(np.linalg.norm(puck[:2] - second[:2]) <= SUCCESS_RADIUS)}
    if task == "mw-push-twin":
        return {"wrong_puck_at_goal": bool(np.linalg.norm(second[:2] - goal[:2]) <= SUCCESS_RADIUS)}
    return {}


def segmentation_frame(env, camera: str) -> np.ndarray:
    """int (H, W, 2): (object id, object type) of what `camera` draws at each pixel of the env's current frame, at its
    camera size and upright like the colour frames (geom groups the env hides stay hidden)."""
    model, data = env.mj_model_data
    renderer = mujoco.Renderer(model, *env.camera_hw)
    try:
        renderer.enable_segmentation_rendering()
        option = mujoco.MjvOption()
        for group in env.hidden_geom_groups:
            option.geomgroup[group] = 0
        renderer.update_scene(data, camera=camera, scene_option=option)
        seg = renderer.render()
    finally:
        renderer.close()
    return seg[::-1, ::-1] if camera in env.upside_down_cameras else seg  # the same turn the colour frames get


def detail_mask(env, site_or_geom: str, camera: str | None = None) -> np.ndarray:
    """bool (H, W): the visible pixels of a site or geom in `camera`'s current frame at the env's camera size
    (a segmentation render, so occlusion and perspective count)."""
    model, data = env.mj_model_data
    camera = camera or env.cameras[0]
    ids = {int(kind): mujoco.mj_name2id(model, kind, site_or_geom)
           for kind in (mujoco.mjtObj.mjOBJ_SITE, mujoco.mjtObj.mjOBJ_GEOM)}
    ids = {kind: obj_id for kind, obj_id in ids.items() if obj_id >= 0}
    if not ids:
        raise ConfigError(f"no site or geom named {site_or_geom!r} in task {env.task.name!r}")
    seg = segmentation_frame(env, camera)
    return np.logical_or.reduce([(seg[..., 0] == obj_id) & (seg[..., 1] == kind) for kind, obj_id in ids.items()])


def detail_pixels(env, site_or_geom: str, camera: str | None = None) -> float:
    """Equivalent diameter in pixels, sqrt(4 * area / pi), of the visible part of a site or geom (detail_mask)."""
    return math.sqrt(4 * float(detail_mask(env, site_or_geom, camera).sum()) / math.pi)


__all__ = ["DESIGNS", "KNOBS", "CueKnobs", "DetailPushEnv", "TinyGoalKnobs", "TwinKnobs", "detail_mask",
           "detail_pixels", "knob_names", "outcome", "parse_knobs"]
