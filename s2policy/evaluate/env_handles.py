"""Environment handles for rollouts: one in this process, or one in a spawned worker process.

Both expose the same split-phase API (`send_reset` / `send_step`, then `receive`), so the rollout loop can ask every
worker to step before waiting for any of them, and runs unchanged with in-process envs. Workers are *spawned* and
create their env lazily on the first command: a forked child of a process that already holds a GL context crashes.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import traceback
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ..errors import S2PolicyError

log = logging.getLogger(__name__)


class EnvWorkerError(S2PolicyError, RuntimeError):
    """An environment worker raised or died; the message carries its traceback."""


@dataclass(frozen=True)
class EnvSpec:
    """Everything `envs.make_env` needs; small and picklable so it can be sent to a spawned worker."""

    task: str
    cameras: tuple[str, ...]
    camera_size: int | tuple[int, int]
    variation: dict[str, Any] = field(default_factory=dict)

    def make(self):
        import envs

        return envs.make_env(self.task, cameras=list(self.cameras), camera_size=self.camera_size, **self.variation)


class StepResult(NamedTuple):
    """What a handle returns: the observation, and whether the episode ended (success ends it)."""

    obs: dict[str, np.ndarray]
    success: bool
    done: bool


def apply_command(env, command: str, arg: Any) -> StepResult:
    if command == "reset":
        obs, info = env.reset(seed=int(arg))
        return StepResult(obs, bool(info["success"]), False)
    if command == "step":
        obs, _, terminated, truncated, info = env.step(arg)
        return StepResult(obs, bool(info["success"]), bool(terminated or truncated))
    raise ValueError(f"unknown env command {command!r}")


class LocalEnv:
    """An env in this process (serial evaluation, or the env of a worker that also holds a policy)."""

    def __init__(self, spec: EnvSpec):
        self.spec = spec
        self._env = None
        self._pending: StepResult | None = None

    def send_reset(self, seed: int) -> None:
        self._send("reset", seed)

    def send_step(self, action: np.ndarray) -> None:
        self._send("step", action)

    def _send(self, command: str, arg: Any) -> None:
        if self._env is None:
            self._env = self.spec.make()
        self._pending = apply_command(self._env, command, arg)

    def receive(self) -> StepResult:
        result, self._pending = self._pending, None
        if result is None:
            raise RuntimeError("receive() without a pending command")
        return result

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def _serve(conn, spec: EnvSpec) -> None:
    """Worker process main: answer (command, arg) messages with StepResults until "close" or the pipe closes."""
    env = None
    try:
        while True:
            try:
                command, arg = conn.recv()
            except EOFError:
                return
            if command == "close":
                return
            try:
                if env is None:
                    env = spec.make()
                conn.send(("ok", apply_command(env, command, arg)))
            except Exception as e:  # sent back so the main process raises it with the worker's traceback
                conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
    finally:
        if env is not None:
            env.close()
        conn.close()


class WorkerEnv:
    """An env living in its own spawned process, driven over a pipe."""

    def __init__(self, spec: EnvSpec, name: str = "env-worker"):
        self.spec = spec
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child, spec), name=name, daemon=True)
        self._process.start()
        child.close()

    def send_reset(self, seed: int) -> None:
        self._conn.send(("reset", seed))

    def send_step(self, action: np.ndarray) -> None:
        self._conn.send(("step", np.asarray(action)))

    def receive(self) -> StepResult:
        try:
            status, payload = self._conn.recv()
        except (EOFError, ConnectionResetError) as e:
            raise EnvWorkerError(f"{self._process.name} (pid {self._process.pid}) died "
                                 f"(exit code {self._process.exitcode})") from e
        if status == "error":
            raise EnvWorkerError(f"{self._process.name}: {payload}")
        return payload

    def close(self) -> None:
        try:
            self._conn.send(("close", None))
        except (BrokenPipeError, OSError):
            pass
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=5)
        self._conn.close()
