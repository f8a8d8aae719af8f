"""Where the loop's actions come from (`ActionSource`): the policy stepped in the tick's thread (`InTick`),
continuously in a background thread (`Background`), or action chunks from a chunk predictor, in-process or over the
network (`ChunkStream`). The loop's schedule, guards and report are the same for all of them.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from .chunks import ActionQueue
from .protocol import PolicySpec
from .cadence import StageTimes, TimingLog
from .robot import EPISODE_KEY, now
from .safety import DROPPED_LATE, NO_ACTION_YET, SERVER_UNAVAILABLE

log = logging.getLogger(__name__)


class Controller(Protocol):
    """What the loop drives: `PolicyRunner`, an exported policy, or a test fake. An optional `last_times`
    attribute (StageTimes) of the last `act` call feeds the per-stage timing."""

    def act(self, observation: Mapping[str, Any]) -> np.ndarray: ...

    def reset(self) -> None: ...


@dataclass(frozen=True)
class Inference:
    """One policy step: the action (A,), its stage times, and when its observation was captured (monotonic s).
    `due_at`: the time a planned action is for (chunk action i: capture + i periods); None = the capture time."""

    action: np.ndarray
    times: StageTimes
    observed_at: float
    due_at: float | None = None


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



# --- action sources: what the control loop asks for an action each tick ---------------------------------------------
Recorder = Callable[[str, str], None]  # SafetyGuard.record: (event kind, detail)


class ActionSource(Protocol):
    """Gives the loop one action per tick. `start` is called once before the first tick (in the loop's thread),
    `stop` once after the last (also after errors)."""

    mode: str

    def start(self, timing: TimingLog, record: Recorder, period: float) -> None: ...

    def next(self, observation: Mapping[str, Any], observed_at: float, now: float) -> Inference | str:
        """The action for this tick, or the event kind (a safety fault) saying why there is none."""

    def stop(self) -> None: ...


class InTick:
    """The policy steps once per tick in the tick's own thread (the tick waits for it)."""

    mode = "inference in the tick"

    def __init__(self, controller: Controller):
        self.controller = controller
        self.action_dim = getattr(controller, "action_dim", None)

    def start(self, timing: TimingLog, record: Recorder, period: float) -> None:
        self._timing = timing

    def next(self, observation: Mapping[str, Any], observed_at: float, now: float) -> Inference | str:
        result = infer(self.controller, observation, observed_at)
        self._timing.add_policy_times(result.times)
        return result

    def stop(self) -> None:
        pass


class Background:
    """The policy steps in an `InferenceWorker` on the newest observation; ticks send its newest action."""

    mode = "background inference"

    def __init__(self, controller: Controller):
        self.controller = controller
        self.action_dim = getattr(controller, "action_dim", None)
        self._worker: InferenceWorker | None = None

    def start(self, timing: TimingLog, record: Recorder, period: float) -> None:
        self._worker = InferenceWorker(self.controller, on_inference=lambda r: timing.add_policy_times(r.times))

    def next(self, observation: Mapping[str, Any], observed_at: float, now: float) -> Inference | str:
        self._worker.submit(observation, observed_at)
        return self._worker.latest() or NO_ACTION_YET

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop()


@dataclass(frozen=True)
class ChunkReply:
    """A chunk predictor's answer to one request: actions (n, A) or an error (`error` = event kind, `detail`), and
    the remote stage times in seconds ({stage in report.REMOTE_STAGES or preprocess/encode/head: s})."""

    actions: np.ndarray | None
    observed_at: float
    times: dict[str, float]
    error: str | None = None
    detail: str = ""


class ChunkPredictor(Protocol):
    """Observation -> action chunk, asynchronously: a policy server (`client.RemotePolicy`) or the same
    computation in-process (`service.LocalChunks`). `request` returns False when it cannot take a request now
    (not connected); otherwise `on_reply` is called exactly once, from another thread."""

    name: str
    spec: PolicySpec  # the served policy's interface (action_dim, horizon, n_action_steps, ...)

    @property
    def available(self) -> bool: ...

    def request(self, observation: Mapping[str, Any], observed_at: float, prev_action: np.ndarray | None,
                on_reply: Callable[[ChunkReply], None]) -> bool: ...

    def close(self) -> None: ...


class ChunkStream:
    """Action chunks from a `ChunkPredictor` executed on the loop's clock through an `ActionQueue`.

    A new chunk is requested with the tick's observation when at most `refill_threshold` queued actions are due
    after the current slot and no request is in flight (default horizon - n_action_steps: the policy's own receding
    horizon; a horizon-1 policy is asked again every time it answers).
    Actions are timed from their observation's capture (see `chunks`); a new episode (the observation's
    EPISODE_KEY changes) or a lost predictor (server gone) clears the queue, so the loop sends the fault action from
    that tick on and planned actions of a lost plan are never replayed.
    """

    def __init__(self, predictor: ChunkPredictor, refill_threshold: int | None = None, blend_steps: int = 0,
                 owns_predictor: bool = True):
        from ..errors import ConfigError

        self.predictor = predictor
        spec = predictor.spec
        self.action_dim = spec.action_dim
        default = max(spec.horizon - spec.n_action_steps, 0)
        self.refill_threshold = default if refill_threshold is None else refill_threshold
        if self.refill_threshold < 0:
            raise ConfigError(f"refill_threshold must be >= 0, got {self.refill_threshold}")
        self.blend_steps = blend_steps
        self.mode = f"action chunks from {predictor.name}"
        self._owns = owns_predictor
        self._lock = threading.Lock()
        self._in_flight = False
        self._episode: Any = None
        self._was_available = True
        self.queue: ActionQueue | None = None
        self._events: list[tuple[str, str]] = []  # from the reply thread, recorded by the loop's thread
        self.requests = self.replies = 0

    def start(self, timing: TimingLog, record: Recorder, period: float) -> None:
        self.queue = ActionQueue(period, self.blend_steps)
        self._timing, self._record = timing, record

    def next(self, observation: Mapping[str, Any], observed_at: float, now: float) -> Inference | str:
        queue = self.queue
        with self._lock:
            events, self._events = self._events, []
        for kind, detail in events:
            self._record(kind, detail)
        episode = observation.get(EPISODE_KEY)
        if episode != self._episode:
            queue.clear()
            self._episode = episode
        if not self.predictor.available:
            if self._was_available:
                queue.clear()
                self._was_available = False
            return SERVER_UNAVAILABLE
        self._was_available = True
        dropped = queue.dropped_late
        item = queue.take(now)
        for _ in range(queue.dropped_late - dropped):
            self._record(DROPPED_LATE, "an action's slot passed before it could be sent")
        with self._lock:
            refill = not self._in_flight and queue.ahead(now) <= self.refill_threshold
            self._in_flight = self._in_flight or refill
        if refill:
            # prev_action: what the robot executes while the new chunk is computed (history heads condition on it)
            on_reply = functools.partial(self._on_reply, episode)
            if self.predictor.request(observation, observed_at, None if item is None else item.action, on_reply):
                self.requests += 1
            else:
                with self._lock:
                    self._in_flight = False
        if item is None:
            return NO_ACTION_YET
        return Inference(item.action, StageTimes(), item.observed_at, item.due_at)

    def _on_reply(self, episode: Any, reply: ChunkReply) -> None:
        with self._lock:
            self._in_flight = False
            if reply.error is not None:
                self._events.append((reply.error, reply.detail))
                return
        self.replies += 1
        self._timing.inferences += 1
        self._timing.add_remote_times(reply.times)
        if episode == self._episode:  # a chunk planned in the previous episode is never executed in this one
            self.queue.add(reply.actions, reply.observed_at, now())

    def stop(self) -> None:
        if self._owns:
            self.predictor.close()


def as_source(controller: Controller | ActionSource, background: bool = False) -> ActionSource:
    """An ActionSource as is; a Controller (anything with `act`) stepped in the tick or in the background."""
    if hasattr(controller, "next") and hasattr(controller, "start"):
        return controller  # type: ignore[return-value]
    return Background(controller) if background else InTick(controller)
