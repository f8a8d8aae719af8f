"""On-robot inference: a policy checkpoint driving a robot at a fixed rate, safely, with latency accounting.

    runner = PolicyRunner.from_checkpoint("runs/lift/policy.safetensors")
    robot = SimRobot.for_task("lift", camera_size=224)            # or your own Robot (see docs/runtime.md)
    report = ControlLoop(robot, runner, hz=10, safety=SafetyConfig(low=-1, high=1, max_delta=0.5)).run(seconds=30)
    print(report.format())
"""

from .inference import Controller, InferenceWorker
from .loop import ControlLoop
from .cadence import STAGES, CadenceReport, StageTimes
from .robot import EPISODE_KEY, TIMESTAMP_KEY, Robot
from .runner import PolicyRunner
from .safety import SafetyConfig, SafetyEvent, SafetyGuard
from .sim_robot import SimRobot

__all__ = [
    "EPISODE_KEY",
    "STAGES",
    "TIMESTAMP_KEY",
    "CadenceReport",
    "ControlLoop",
    "Controller",
    "InferenceWorker",
    "PolicyRunner",
    "Robot",
    "SafetyConfig",
    "SafetyEvent",
    "SafetyGuard",
    "SimRobot",
    "StageTimes",
]
