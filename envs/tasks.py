"""The task table: one small declarative TaskSpec per task, read by make_env, the experts and the docs."""

from __future__ import annotations

from dataclasses import dataclass

from s2policy.errors import ConfigError


@dataclass(frozen=True)
class TaskSpec:
    """What a task is, independent of how its simulator is driven.

    suite: "robosuite" or "metaworld"; suite_task: the suite's own name (robosuite env class / Meta-World env name).
    proprio_dim / object_dim: sizes of obs["proprio"] and obs["object"]. max_steps: episode truncation.
    variations: keyword options of make_env this task supports besides cameras/camera_size.
    """

    name: str
    suite: str
    suite_task: str
    default_camera: str
    cameras: tuple[str, ...]
    action_dim: int
    proprio_dim: int
    object_dim: int
    max_steps: int
    success: str
    variations: tuple[str, ...] = ()
    detail: str | None = None  # for detail-limited tasks: the small visual detail that decides success

    @property
    def gym_id(self) -> str:
        return f"s2policy/{self.name}-v0"


_ROBOSUITE_CAMERAS = ("agentview", "robot0_eye_in_hand", "frontview", "birdview", "sideview")
_METAWORLD_CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")
# Panda proprio: eef pos (3) + eef quat (4) + gripper finger qpos (2) + arm joint pos (7).
_PANDA_PROPRIO = 16
# Sawyer proprio (Meta-World's own hand features): hand xyz (3) + gripper opening (1).
_SAWYER_PROPRIO = 4
# Meta-World object state: object 1 pos+quat (7), object 2 pos+quat (7), goal position (3).
_MW_OBJECT = 17


def _robosuite(name, suite_task, object_dim, max_steps, success, variations=()) -> TaskSpec:
    return TaskSpec(name, "robosuite", suite_task, "agentview", _ROBOSUITE_CAMERAS, 7, _PANDA_PROPRIO, object_dim,
                    max_steps, success, variations)


def _metaworld(name, max_steps=500, success="Meta-World's info['success'] (task-specific distance threshold)"):
    return TaskSpec(f"mw-{name}", "metaworld", f"{name}-v3", "corner2", _METAWORLD_CAMERAS, 4, _SAWYER_PROPRIO,
                    _MW_OBJECT, max_steps, success)


def _detail_push(name, detail, variations) -> TaskSpec:
    """A detail-limited push-v3 task (envs/detail_tasks.py); 200 steps (the expert needs ~60-100)."""
    return TaskSpec(name, "metaworld", "push-v3", "corner2", _METAWORLD_CAMERAS, 4, _SAWYER_PROPRIO, _MW_OBJECT,
                    200, "pushed puck centre within 5 cm of the correct goal", variations, detail)


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in [
        _robosuite("lift", "Lift", 7, 200, "cube centre more than 4 cm above the table",
                   ("placement_range", "object_scale", "distractors")),
        _robosuite("can", "PickPlaceCan", 7, 400, "can inside its target bin with the gripper clear of it"),
        _robosuite("stack", "Stack", 14, 400, "cube A resting on cube B and released",
                   ("placement_range",)),
        _metaworld("assembly"),
        _metaworld("bin-picking"),
        _metaworld("button-press-topdown"),
        _metaworld("drawer-open"),
        _metaworld("hammer"),
        _detail_push("mw-push-tiny-goal", "goal marker (goal_radius), the only goal information in the image",
                     ("goal_radius", "goal_x", "goal_y")),
        _detail_push("mw-push-cue", "colour of a small cue sphere (cue_radius) choosing between two goals",
                     ("cue_radius", "cue_pos", "cue_colours", "goal_separation", "goal_y", "goal_radius")),
        _detail_push("mw-push-twin", "small disc (mark_radius) on the puck to push, beside a look-alike puck",
                     ("mark_radius", "mark_colour", "puck_x")),
    ]
}


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}") from None
