"""`SimRobot`: one of our MuJoCo tasks behaving like a real robot, so the whole control loop runs here.

The simulator lives in its own thread and advances in real time at `sim_hz` (the task's controller rate), applying
the newest commanded action until another arrives, as a robot's low-level controller does. `get_observation()`
returns the newest rendered frame with its capture timestamp. Episodes restart on success or time-out; the
observation's `EPISODE_KEY` tells the runner to reset the policy.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Mapping

import numpy as np

from .robot import EPISODE_KEY, TIMESTAMP_KEY, now

log = logging.getLogger(__name__)


class SimRobot:
    """A simulated robot on a gymnasium env built by `make_env()` (called in the simulator thread: OpenGL contexts
    belong to the thread that creates them).

    Attributes after start: `action_low` / `action_high` (A,), `episodes`, `successes`, `steps`, `overruns` (steps
    that took longer than 1 / sim_hz, i.e. the simulation fell behind real time).
    """

    def __init__(self, make_env: Callable[[], Any], sim_hz: float = 20.0, seed: int | None = 0,
                 start_timeout: float = 120.0):
        self.sim_hz = float(sim_hz)
        self.seed = seed
        self.episodes = self.successes = self.steps = self.overruns = 0
        self._make_env = make_env
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._observation: dict[str, Any] | None = None
        self._command: np.ndarray | None = None
        self._thread = threading.Thread(target=self._simulate, name="s2policy-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(start_timeout):
            self.close()
            raise TimeoutError(f"simulated robot did not start within {start_timeout:.0f} s")
        self._raise_if_failed()

    @classmethod
    def for_task(cls, task: str, cameras: list[str] | None = None, camera_size: int | tuple[int, int] = 224,
                 sim_hz: float = 20.0, seed: int | None = 0, **variation: Any) -> "SimRobot":
        """A task from `envs.TASKS` (e.g. "lift") rendered at `camera_size`."""

        def make() -> Any:
            import envs

            return envs.make_env(task, cameras=cameras, camera_size=camera_size, seed=seed, **variation)

        return cls(make, sim_hz=sim_hz, seed=seed)

    # --- Robot protocol ------------------------------------------------------------------------------------------
    def get_observation(self) -> Mapping[str, Any]:
        self._raise_if_failed()
        with self._lock:
            return dict(self._observation)  # arrays are replaced, never mutated, by the simulator thread

    def send_action(self, action: np.ndarray) -> None:
        self._raise_if_failed()
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        if action.shape != self.action_low.shape:
            raise ValueError(f"action has shape {action.shape}, the simulated robot takes {self.action_low.shape}")
        with self._lock:
            self._command = action.copy()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)

    # --- simulator thread ----------------------------------------------------------------------------------------
    def _simulate(self) -> None:
        env = None
        try:
            env = self._make_env()
            self.action_low = np.asarray(env.action_space.low, dtype=np.float32)
            self.action_high = np.asarray(env.action_space.high, dtype=np.float32)
            obs, _ = env.reset(seed=self.seed)
            self._publish(obs)
            self._ready.set()
            period = 1.0 / self.sim_hz
            next_step = now() + period
            while not self._stop.is_set():
                wait = next_step - now()
                if wait > 0:
                    time.sleep(wait)
                elif wait < -period:
                    self.overruns += 1
                    if self.overruns == 1:
                        log.warning("simulation is slower than real time at %.0f Hz (rendering?); it runs slow",
                                    self.sim_hz)
                    next_step = now()
                next_step += period
                with self._lock:
                    command = self._command
                if command is None:  # nothing commanded yet: the world is frozen, so the last frame is current
                    with self._lock:
                        self._observation = {**self._observation, TIMESTAMP_KEY: now()}
                    continue
                obs, _, terminated, truncated, info = env.step(command)
                self.steps += 1
                if terminated or truncated:
                    self.successes += int(bool(info.get("success")))
                    self.episodes += 1
                    log.info("episode %d ended (%s)", self.episodes, "success" if info.get("success") else "time-out")
                    obs, _ = env.reset()
                    with self._lock:
                        self._command = None  # a new episode starts at rest
                self._publish(obs)
        except BaseException as e:
            self._error = e
            self._ready.set()
        finally:
            if env is not None:
                env.close()

    def _publish(self, obs: Mapping[str, Any]) -> None:
        stamped = dict(obs)
        stamped[TIMESTAMP_KEY] = now()
        stamped[EPISODE_KEY] = self.episodes
        with self._lock:
            self._observation = stamped

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError("the simulated robot stopped") from self._error
