"""Scripted experts: phase machines on privileged state for robosuite, Meta-World's bundled policies otherwise.

Every expert has reset() and act(env, obs) -> float32 (A,) action in [-1, 1]; `env` is our TaskEnv (or a gymnasium
wrapper around one), whose privileged state the expert reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .tasks import get_task

OPEN, CLOSE = -1.0, 1.0
#: OSC_POSE maps action 1.0 to 5 cm; gain 10 moves at full speed until 5 mm from the target, then slows.
POSITION_GAIN = 10.0
REACHED = 0.01  # m


@dataclass(frozen=True)
class Phase:
    """Move the end effector towards target(state) with the gripper command held, until done(state, steps_in_phase)."""

    name: str
    target: Callable[[dict], np.ndarray]
    gripper: float
    done: Callable[[dict, int], bool]


def reached(offset_key: str = "target", tolerance: float = REACHED) -> Callable[[dict, int], bool]:
    return lambda s, _: np.linalg.norm(s[offset_key] - s["eef"]) < tolerance


def after(steps: int) -> Callable[[dict, int], bool]:
    return lambda _, n: n >= steps


def above(point_key: str, height: float) -> Callable[[dict], np.ndarray]:
    return lambda s: s[point_key] + np.array([0.0, 0.0, height])


class NoisyExpert:
    """Adds Gaussian action noise (std action_noise, then clipped to [-1, 1]) to a subclass's clean action."""

    def __init__(self, action_noise: float = 0.0, seed: int | None = None):
        self.action_noise = float(action_noise)
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    def clean_action(self, env, obs) -> np.ndarray:
        raise NotImplementedError

    def act(self, env, obs) -> np.ndarray:
        action = self.clean_action(getattr(env, "unwrapped", env), obs)
        if self.action_noise > 0:
            action = action + self.rng.normal(0.0, self.action_noise, action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


class PhaseMachineExpert(NoisyExpert):
    """Walks through a fixed list of phases; the last phase repeats until the episode ends."""

    phases: list[Phase] = []

    def reset(self) -> None:
        self.phase_index, self.steps_in_phase, self.memory = 0, 0, {}

    def __init__(self, action_noise: float = 0.0, seed: int | None = None):
        super().__init__(action_noise, seed)
        self.reset()

    def state(self, env) -> dict:
        """Privileged positions the phases refer to; subclasses add task points."""
        return {"eef": np.asarray(env.suite_obs["robot0_eef_pos"])}

    def clean_action(self, env, obs) -> np.ndarray:
        state = self.state(env)
        state.update(self.memory)
        phase = self.phases[self.phase_index]
        state["target"] = phase.target(state)
        if phase.done(state, self.steps_in_phase) and self.phase_index < len(self.phases) - 1:
            self.phase_index, self.steps_in_phase = self.phase_index + 1, 0
            self.on_phase_start(self.phases[self.phase_index].name, state)
            state.update(self.memory)
            phase = self.phases[self.phase_index]
            state["target"] = phase.target(state)
        self.steps_in_phase += 1
        action = np.zeros(7)
        action[:3] = np.clip(POSITION_GAIN * (state["target"] - state["eef"]), -1.0, 1.0)
        action[6] = phase.gripper
        return action

    def on_phase_start(self, name: str, state: dict) -> None:
        """Hook to remember positions at a phase boundary (e.g. where a grasp happened)."""
        if name.startswith("grasp"):
            self.memory["grasp_at"] = state["eef"].copy()


def pick_phases(obj: str, lift_to: Callable[[dict], np.ndarray]) -> list[Phase]:
    """Hover 8 cm above `obj`, descend onto it, close for 10 steps, carry to lift_to(state)."""
    return [
        Phase("hover", above(obj, 0.08), OPEN, reached()),
        Phase("descend", above(obj, 0.0), OPEN, lambda s, n: reached()(s, n) or n > 40),
        Phase("grasp", lambda s: s["grasp_at"], CLOSE, after(10)),
        Phase("lift", lift_to, CLOSE, reached(tolerance=0.02)),
    ]


class LiftExpert(PhaseMachineExpert):
    phases = pick_phases("cube", above("grasp_at", 0.15))

    def state(self, env) -> dict:
        return {**super().state(env), "cube": env.object_pose(env.task_objects()[0])[:3]}


class CanExpert(PhaseMachineExpert):
    """Pick the can, carry it high over its target bin, lower it and let go."""

    phases = pick_phases("can", lambda s: np.array([*s["grasp_at"][:2], s["bin"][2] + 0.2])) + [
        Phase("carry", above("bin", 0.2), CLOSE, reached(tolerance=0.02)),
        Phase("lower", above("bin", 0.1), CLOSE, reached(tolerance=0.02)),
        Phase("release", above("bin", 0.1), OPEN, after(8)),
        # robosuite only counts the can once the gripper is more than ~4 cm away from it.
        Phase("retreat", above("bin", 0.25), OPEN, after(1000)),
    ]

    def state(self, env) -> dict:
        suite = env.suite
        return {**super().state(env), "can": env.object_pose(env.task_objects()[0])[:3],
                "bin": np.asarray(suite.target_bin_placements[suite.object_id])}


class StackExpert(PhaseMachineExpert):
    """Pick cube A, carry it over cube B, lower it until it rests just above B, let go and back off."""

    # cube A's centre ends at B's centre + B's half height (0.025) + A's half height (0.02) + 5 mm clearance.
    _ON_B = 0.05

    phases = pick_phases("cubeA", above("grasp_at", 0.12)) + [
        Phase("carry", above("cubeB", _ON_B + 0.08), CLOSE, reached(tolerance=0.015)),
        Phase("lower", above("cubeB", _ON_B), CLOSE, lambda s, n: reached(tolerance=0.008)(s, n) or n > 40),
        Phase("release", above("cubeB", _ON_B), OPEN, after(8)),
        Phase("retreat", above("cubeB", _ON_B + 0.1), OPEN, after(1000)),
    ]

    def state(self, env) -> dict:
        cube_a, cube_b = env.task_objects()
        return {**super().state(env), "cubeA": env.object_pose(cube_a)[:3], "cubeB": env.object_pose(cube_b)[:3]}


class MetaWorldExpert(NoisyExpert):
    """Meta-World's own scripted policy for the task, reading its raw 39-D observation."""

    def __init__(self, suite_task: str, action_noise: float = 0.0, seed: int | None = None):
        super().__init__(action_noise, seed)
        from metaworld.policies import ENV_POLICY_MAP

        self.policy = ENV_POLICY_MAP[suite_task]()

    def clean_action(self, env, obs) -> np.ndarray:
        return np.asarray(self.policy.get_action(env.suite_obs), dtype=np.float64)


_ROBOSUITE_EXPERTS = {"lift": LiftExpert, "can": CanExpert, "stack": StackExpert}


def make_expert(task: str, action_noise: float = 0.0, seed: int | None = None) -> NoisyExpert:
    """Scripted expert for `task`; action_noise is the std of Gaussian noise added to every action."""
    spec = get_task(task)
    if spec.suite == "metaworld":
        return MetaWorldExpert(spec.suite_task, action_noise, seed)
    return _ROBOSUITE_EXPERTS[task](action_noise, seed)
