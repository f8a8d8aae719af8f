"""`ControlLoop`: drive a robot at a fixed rate with a policy, safety guards and a cadence report.

One tick: observe -> check the observation -> ask the action source (`inference`: the policy in the tick, its
background worker's newest action, or the queued action chunk of a local or remote chunk predictor) -> guard the
action -> send. Ticks are scheduled on absolute deadlines (start_k = t0 + k / hz); a tick that ends after its deadline
counts as missed, and slots that already passed are skipped rather than run in a burst.
"""

from __future__ import annotations

import logging
import threading
import time

from ..errors import ConfigError
from .inference import ActionSource, Controller, InTick, as_source
from .cadence import CadenceReport, TimingLog
from .robot import TIMESTAMP_KEY, Robot, now
from .safety import SafetyConfig, SafetyGuard

log = logging.getLogger(__name__)


class ControlLoop:
    """Args:
        robot: see `robot.Robot`. controller: an `inference.Controller` (e.g. a `PolicyRunner`), or an
            `inference.ActionSource` such as a `ChunkStream` over a policy server.
        hz: control rate. action_dim: the robot's action size (default: `controller.action_dim`).
        safety: limits (default: no bounds or rate limit, non-finite and stale checks on, fault action zeros).
        background: (Controllers) run inference in a worker thread; each tick sends the newest action (zero-order
            hold while the worker is busy, up to `safety.max_action_age`).
        safe_stop: send the fault action once when the loop ends, before `robot.close()`.
    """

    def __init__(self, robot: Robot, controller: Controller | ActionSource, hz: float, *,
                 action_dim: int | None = None, safety: SafetyConfig | None = None, background: bool = False,
                 safe_stop: bool = True):
        if hz <= 0:
            raise ConfigError(f"control rate must be positive, got {hz} Hz")
        self.source = as_source(controller, background)
        action_dim = action_dim if action_dim is not None else getattr(self.source, "action_dim", None)
        if action_dim is None:
            raise ConfigError("ControlLoop needs action_dim (the controller has no action_dim attribute)")
        self.robot, self.controller, self.hz = robot, controller, float(hz)
        self.period = 1.0 / self.hz
        self.guard = SafetyGuard((safety or SafetyConfig()).with_period(self.period), int(action_dim))
        self.background = not isinstance(self.source, InTick)  # the tick does not wait for inference
        self.safe_stop = safe_stop
        self.timing = TimingLog()
        self.report: CadenceReport | None = None
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask a running loop (in another thread) to finish after the current tick."""
        self._stop.set()

    def run(self, seconds: float | None = None, steps: int | None = None) -> CadenceReport:
        """Run until `seconds` / `steps` (whichever first; None for both = until `stop()` or Ctrl-C).

        A loop runs once; the robot is always closed at the end. Ctrl-C ends the run normally (stop_reason "interrupted"); any other exception is
        re-raised after the robot is stopped and closed, with `self.report` filled in.
        """
        if self.report is not None or self.timing.tick_start:
            raise RuntimeError("a ControlLoop runs once (it has closed its robot); make a new one")
        reason = "stopped"
        error: BaseException | None = None
        started = False
        start = now()
        next_tick = start
        try:
            self.source.start(self.timing, self.guard.record, self.period)
            started = True
            while not self._stop.is_set():
                if steps is not None and len(self.timing.tick_start) >= steps:
                    reason = f"{steps} steps"
                    break
                if seconds is not None and next_tick - start >= seconds:
                    reason = f"{seconds:g} s"
                    break
                wait = next_tick - now()
                if wait > 0:
                    time.sleep(wait)
                self._tick(next_tick)
                next_tick = self._next_slot(next_tick)
        except KeyboardInterrupt:
            reason = "interrupted"
            log.info("Ctrl-C: stopping the robot")
        except BaseException as e:
            reason, error = f"error: {type(e).__name__}: {e}", e
            log.error("control loop failed at tick %d; stopping the robot", self.guard.tick, exc_info=True)
        finally:
            self._shutdown(started)
        self.report = CadenceReport.from_log(self.timing, self.hz, self.background, dict(self.guard.counts), reason,
                                             mode=self.source.mode)
        if error is not None:
            raise error
        return self.report

    # --- one tick --------------------------------------------------------------------------------------------------
    def _tick(self, scheduled: float) -> None:
        t = self.timing
        tick_start = now()
        observation = self.robot.get_observation()
        observed = now()
        t.stages["observe"].append(observed - tick_start)
        observed_at = float(observation.get(TIMESTAMP_KEY, observed))
        fault = self.guard.check_observation(observation, observed)
        result = fault or self.source.next(observation, observed_at, observed)
        act_start = now()
        if isinstance(result, str):
            if fault is None:  # the source has no action (first inference pending, server unavailable, ...)
                self.guard.record(result, f"no action from the {self.source.mode}")
            action, action_from = self.guard.fault(), None
        else:
            action, fault = self.guard.filter_action(result.action, result.observed_at, act_start, result.due_at)
            action_from = None if fault else result.observed_at
        self.robot.send_action(action)
        self.guard.sent(action)
        sent = now()
        t.stages["act"].append(sent - act_start)
        t.tick_start.append(tick_start)
        t.tick_latency.append(sent - tick_start)
        if action_from is not None:
            t.action_age.append(sent - action_from)
        if sent > scheduled + self.period:
            t.missed_deadlines += 1

    def _next_slot(self, scheduled: float) -> float:
        """The next deadline-aligned start; slots already in the past are counted and skipped."""
        nxt = scheduled + self.period
        late = now() - nxt
        if late > 0:
            skipped = int(late // self.period) + 1
            self.timing.skipped_slots += skipped
            nxt += skipped * self.period
        return nxt

    def _shutdown(self, started: bool) -> None:
        try:
            if started:
                self.source.stop()
        except Exception:
            log.exception("stopping the action source failed")
        try:
            if self.safe_stop:
                self.robot.send_action(self.guard.fault())
        except Exception:
            log.exception("sending the stop action failed")
        finally:
            try:
                self.robot.close()
            except Exception:
                log.exception("robot.close() failed")

