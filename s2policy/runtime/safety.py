"""Safety guards between the policy and the robot: nothing non-finite, stale, out of bounds or too abrupt is sent.

Every intervention is counted and logged; faults (inputs or outputs the policy must not act on) replace the policy's
action with the fault action, limits (clipping, rate limiting) only reshape it.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError
from .robot import TIMESTAMP_KEY

log = logging.getLogger(__name__)

FAULT_ACTIONS = ("safe", "hold")
#: Kinds of events; the first four are faults (the policy's action is not sent).
NONFINITE_OBSERVATION = "nonfinite_observation"
STALE_OBSERVATION = "stale_observation"
NONFINITE_ACTION = "nonfinite_action"
STALE_ACTION = "stale_action"
NO_ACTION_YET = "no_action_yet"  # background inference / the first chunk has not arrived yet
SERVER_UNAVAILABLE = "server_unavailable"  # a remote policy is not connected (its planned actions are dropped)
BAD_REPLY = "bad_reply"  # a remote policy's reply broke the protocol (garbage, wrong shape, non-finite): ignored
SERVER_ERROR = "server_error"  # the server answered a request with an error reply
REPLY_TIMEOUT = "reply_timeout"  # no reply within the client's request timeout
CLIPPED = "clipped"
RATE_LIMITED = "rate_limited"
DROPPED_LATE = "dropped_late"  # a planned action whose slot passed before it could be sent
FAULTS = (NONFINITE_OBSERVATION, STALE_OBSERVATION, NONFINITE_ACTION, STALE_ACTION, NO_ACTION_YET, SERVER_UNAVAILABLE,
          BAD_REPLY, SERVER_ERROR, REPLY_TIMEOUT)

ArrayLike = float | Sequence[float] | np.ndarray


@dataclass
class SafetyConfig:
    """Limits for one robot. Bounds and deltas are scalars or per-dimension (A,) arrays; None disables a guard.

    fault_action: what is sent instead of an action the policy must not act on: "safe" sends `safe_action`
        (default zeros: no motion for delta / velocity control, as in our simulated tasks), "hold" repeats the last
        action sent (for absolute position targets, where zeros would be a jump). Before any action was sent, "hold"
        falls back to `safe_action`.
    max_observation_age / max_action_age: seconds from capture (the observation's timestamp) to the tick / to
        sending. None = 3 / 5 control periods (the loop fills them in).
    """

    low: ArrayLike | None = None
    high: ArrayLike | None = None
    max_delta: ArrayLike | None = None
    max_observation_age: float | None = None
    max_action_age: float | None = None
    fault_action: str = "safe"
    safe_action: ArrayLike | None = None

    def __post_init__(self) -> None:
        if self.fault_action not in FAULT_ACTIONS:
            raise ConfigError(f"fault_action={self.fault_action!r}: expected one of {FAULT_ACTIONS}")
        if self.max_delta is not None and np.any(np.asarray(self.max_delta) <= 0):
            raise ConfigError(f"max_delta must be positive, got {self.max_delta}")
        if self.low is not None and self.high is not None and np.any(np.asarray(self.low) > np.asarray(self.high)):
            raise ConfigError(f"action bounds low={self.low} exceed high={self.high}")

    def with_period(self, period: float) -> "SafetyConfig":
        """A copy whose unset ages are filled in from the control period (seconds)."""
        from dataclasses import replace

        return replace(
            self,
            max_observation_age=self.max_observation_age if self.max_observation_age is not None else 3 * period,
            max_action_age=self.max_action_age if self.max_action_age is not None else 5 * period,
        )


@dataclass(frozen=True)
class SafetyEvent:
    tick: int
    kind: str
    detail: str


class SafetyGuard:
    """Checks observations and actions for one robot with action dimension `action_dim`; keeps the last action sent.

    Call `check_observation` before inference and `filter_action` (or `fault`) on every tick; both return what may be
    sent. `counts` holds how often each event kind happened; `events` the most recent ones.
    """

    def __init__(self, config: SafetyConfig, action_dim: int, max_events: int = 1000, log_every: int = 50):
        self.config = config
        self.action_dim = action_dim
        self.low = self._per_dim(config.low, -np.inf)
        self.high = self._per_dim(config.high, np.inf)
        self.max_delta = self._per_dim(config.max_delta, np.inf)
        self.safe_action = np.clip(self._per_dim(config.safe_action, 0.0), self.low, self.high).astype(np.float32)
        self.last_sent: np.ndarray | None = None
        self.counts: Counter[str] = Counter()
        self.events: deque[SafetyEvent] = deque(maxlen=max_events)
        self._log_every = log_every
        self.tick = 0

    def _per_dim(self, value: ArrayLike | None, default: float) -> np.ndarray:
        arr = np.broadcast_to(np.asarray(default if value is None else value, dtype=np.float64), (self.action_dim,))
        return arr.copy()

    def record(self, kind: str, detail: str) -> None:
        """Count an event; log faults as warnings (first one, then every `log_every`-th), limits at debug level."""
        self.counts[kind] += 1
        self.events.append(SafetyEvent(self.tick, kind, detail))
        n = self.counts[kind]
        if kind in FAULTS and kind not in (NO_ACTION_YET, SERVER_UNAVAILABLE) and (n == 1 or n % self._log_every == 0):
            log.warning("tick %d: %s (%s); sending the %s action [%d so far]", self.tick, kind, detail,
                        self.config.fault_action, n)
        else:
            log.debug("tick %d: %s (%s)", self.tick, kind, detail)

    # --- inputs --------------------------------------------------------------------------------------------------
    def check_observation(self, observation: Mapping[str, Any], now: float) -> str | None:
        """The fault kind if the policy must not see `observation` (non-finite float values, or too old), else None."""
        for key, value in observation.items():
            arr = np.asarray(value)
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                self.record(NONFINITE_OBSERVATION, f"{key!r} has {int((~np.isfinite(arr)).sum())} non-finite values")
                return NONFINITE_OBSERVATION
        stamp = observation.get(TIMESTAMP_KEY)
        max_age = self.config.max_observation_age
        if stamp is not None and max_age is not None and now - float(stamp) > max_age:
            self.record(STALE_OBSERVATION, f"age {1e3 * (now - float(stamp)):.0f} ms > {1e3 * max_age:.0f} ms")
            return STALE_OBSERVATION
        return None

    # --- outputs -------------------------------------------------------------------------------------------------
    def filter_action(self, action: np.ndarray, observed_at: float, now: float,
                      due_at: float | None = None) -> tuple[np.ndarray, str | None]:
        """Policy action (A,) computed from an observation captured at `observed_at` -> (action to send, fault kind
        or None). Faults give the fault action; otherwise the action is clipped to bounds and rate limited.
        `due_at`: when a planned (chunk) action is for; its staleness is counted from then instead of from capture."""
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (self.action_dim,):
            raise ValueError(f"policy returned an action of shape {action.shape}, the robot takes ({self.action_dim},)")
        if not np.isfinite(action).all():
            self.record(NONFINITE_ACTION, f"{int((~np.isfinite(action)).sum())} non-finite values")
            return self.fault(), NONFINITE_ACTION
        max_age = self.config.max_action_age
        since = observed_at if due_at is None else due_at
        if max_age is not None and now - since > max_age:
            what = "computed from an observation" if due_at is None else "planned for a slot"
            self.record(STALE_ACTION, f"{what} {1e3 * (now - since):.0f} ms old > {1e3 * max_age:.0f} ms")
            return self.fault(), STALE_ACTION
        return self._limit(action), None

    def fault(self) -> np.ndarray:
        """The action sent instead of the policy's (rate limited like any other)."""
        if self.config.fault_action == "hold" and self.last_sent is not None:
            return self.last_sent.copy()
        return self._limit(self.safe_action.astype(np.float64), record=False)

    def _limit(self, action: np.ndarray, record: bool = True) -> np.ndarray:
        clipped = np.clip(action, self.low, self.high)
        if record and not np.array_equal(clipped, action):
            self.record(CLIPPED, f"max excess {np.max(np.abs(clipped - action)):.3g}")
        out = clipped
        if self.last_sent is not None:
            out = np.clip(clipped, self.last_sent - self.max_delta, self.last_sent + self.max_delta)
            if record and not np.array_equal(out, clipped):
                self.record(RATE_LIMITED, f"max step {np.max(np.abs(clipped - self.last_sent)):.3g}")
        return out.astype(np.float32)

    def sent(self, action: np.ndarray) -> None:
        """Remember what reached the robot (the reference for rate limiting and "hold") and advance the tick."""
        self.last_sent = np.asarray(action, dtype=np.float32).copy()
        self.tick += 1
