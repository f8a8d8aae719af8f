"""Running the policy for the loop: one step in the tick's thread, or continuously in a background thread."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from .cadence import StageTimes

log = logging.getLogger(__name__)


class Controller(Protocol):
    """What the loop drives: `PolicyRunner`, an exported policy, or a test fake. An optional `last_times`
    attribute (StageTimes) of the last `act` call feeds the per-stage timing."""

    def act(self, observation: Mapping[str, Any]) -> np.ndarray: ...

    def reset(self) -> None: ...


@dataclass(frozen=True)
class Inference:
    """One policy step: the action (A,), its stage times, and when its observation was captured (monotonic s)."""

    action: np.ndarray
    times: StageTimes
    observed_at: float


def infer(controller: Controller, observation: Mapping[str, Any], observed_at: float) -> Inference:
    """Call the controller once. A non-finite action also resets it: its history and queued chunk would carry the
    NaN into every later step (the guard still blocks this one)."""
    action = np.asarray(controller.act(observation), dtype=np.float32)
    if not np.isfinite(action).all():
        controller.reset()
    times = getattr(controller, "last_times", None)
    return Inference(action, times if isinstance(times, StageTimes) else StageTimes(), observed_at)


class InferenceWorker:
    """Runs the controller in its own thread on the newest submitted observation, so the control tick never waits
    for the encoder. Observations that arrive while it is busy replace each other (only the newest is used).

    `latest()` returns the newest finished Inference (or None). An exception in the thread is re-raised by
    `latest()` in the caller's thread.
    """

    def __init__(self, controller: Controller, on_inference: Callable[[Inference], None] | None = None):
        self.controller = controller
        self._on_inference = on_inference  # called in the worker thread with each Inference (timing log)
        self._cond = threading.Condition()
        self._pending: tuple[Mapping[str, Any], float] | None = None
        self._latest: Inference | None = None
        self._error: BaseException | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="s2policy-inference", daemon=True)
        self._thread.start()

    def submit(self, observation: Mapping[str, Any], observed_at: float) -> None:
        with self._cond:
            self._pending = (observation, observed_at)
            self._cond.notify()

    def latest(self) -> Inference | None:
        with self._cond:
            if self._error is not None:
                raise RuntimeError("background inference failed") from self._error
            return self._latest

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                observation, observed_at = self._pending
                self._pending = None
            try:
                result = infer(self.controller, observation, observed_at)
            except BaseException as e:  # hand it to the control thread, which stops the robot cleanly
                with self._cond:
                    self._error = e
                return
            if self._on_inference is not None:
                self._on_inference(result)
            with self._cond:
                self._latest = result

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to finish its current step and exit; waits up to `timeout` seconds."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("inference thread still busy after %.1f s; leaving it (daemon) to finish", timeout)

