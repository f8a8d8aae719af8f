"""On-robot inference: a policy checkpoint driving a robot at a fixed rate, safely, with latency accounting.

    runner = PolicyRunner.from_checkpoint("runs/lift/policy.safetensors")
    robot = SimRobot.for_task("lift", camera_size=224)            # or your own Robot (see docs/runtime.md)
    report = ControlLoop(robot, runner, hz=10, safety=SafetyConfig(low=-1, high=1, max_delta=0.5)).run(seconds=30)
    print(report.format())

The same loop drives a robot from a policy server (`python -m s2policy.runtime.server` on the GPU machine,
`python -m s2policy.runtime.client` on the robot; docs/runtime.md). Everything the client needs imports without
torch; the torch side (PolicyRunner, ChunkService, LocalChunks, PolicyServer) loads on first use.
"""

from .chunks import ActionQueue
from .inference import ActionSource, Background, ChunkReply, ChunkStream, Controller, InferenceWorker, InTick
from .loop import ControlLoop
from .cadence import STAGES, CadenceReport, StageTimes
from .robot import EPISODE_KEY, TIMESTAMP_KEY, Robot
from .safety import SafetyConfig, SafetyEvent, SafetyGuard
from .sim_robot import SimRobot

_LAZY = {"PolicyRunner": "runner", "ChunkService": "service", "LocalChunks": "service", "PolicyServer": "server",
         "RemotePolicy": "client"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 's2policy.runtime' has no attribute {name!r}")


__all__ = [
    "EPISODE_KEY",
    "STAGES",
    "TIMESTAMP_KEY",
    "ActionQueue",
    "ActionSource",
    "Background",
    "CadenceReport",
    "ChunkReply",
    "ChunkService",
    "ChunkStream",
    "ControlLoop",
    "Controller",
    "InTick",
    "InferenceWorker",
    "LocalChunks",
    "PolicyRunner",
    "PolicyServer",
    "RemotePolicy",
    "Robot",
    "SafetyConfig",
    "SafetyEvent",
    "SafetyGuard",
    "SimRobot",
    "StageTimes",
]
