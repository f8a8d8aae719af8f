"""What the control loop needs from a robot, and the observation keys it understands.

A robot is anything with `get_observation()`, `send_action(a)` and `close()`; see docs/runtime.md for a camera + arm
driver bridge in a few lines. Observations are the policy's raw inputs ({<camera>: uint8 (H, W, 3), <proprio key>:
float (P,), ...}) plus two optional bookkeeping keys the loop reads and the policy ignores.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np

#: `time.monotonic()` seconds when the observation was captured. The stale-observation watchdog compares it with the
#: loop's clock; robots that omit it are stamped when `get_observation()` returns (so only a hang is caught).
TIMESTAMP_KEY = "timestamp"
#: Integer episode counter. When it changes the runner resets the policy's history and action queue.
EPISODE_KEY = "episode"


@runtime_checkable
class Robot(Protocol):
    """The three calls the control loop makes, all from the loop's own thread."""

    def get_observation(self) -> Mapping[str, Any]:
        """The newest observation (never blocks for longer than one camera frame)."""

    def send_action(self, action: np.ndarray) -> None:
        """Command float32 (A,) (already checked finite, clipped and rate limited by the loop)."""

    def close(self) -> None:
        """Stop the hardware safely and release it; the loop always calls it, also after errors and Ctrl-C."""


def now() -> float:
    """The clock of observation timestamps and of the loop's schedule (monotonic seconds)."""
    return time.monotonic()
