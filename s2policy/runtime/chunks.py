"""Timestamped action-chunk queue: which action of which chunk the robot executes at each control tick.

A chunk predicted from an observation captured at `t_obs` plans action i for `t_obs + i * period` (its *due* time).
At a tick at time `now` the queue hands out the latest action due by the middle of the current slot
(`due <= now + period / 2`); earlier actions whose time has passed are dropped unsent (`dropped_late`). When nothing
new is due the last action handed out is held (zero-order hold) until the safety guard finds it too late
(`now - due > max_action_age`), exactly like the in-process background mode.

Chunk switching: a new chunk replaces the queued actions from its first due time on. The first `blend_steps` of its
actions whose slot has not gone by and for which the old plan still has an unsent action are cross-faded with that
action (matched by due time, within half a period): weight (blend_steps - k) / (blend_steps + 1) for the old action,
k = 0, 1, ..., so the command moves from the old plan to the new one over `blend_steps` ticks instead of jumping;
0 = replace outright.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError


@dataclass(frozen=True)
class TimedAction:
    """One planned action (A,), the capture time of the observation it came from and the time it is due at."""

    action: np.ndarray
    observed_at: float
    due_at: float
    chunk: int  # sequence number of the chunk it belongs to


class ActionQueue:
    """Thread-safe: chunks are added by the thread that receives them, actions taken by the control thread."""

    def __init__(self, period: float, blend_steps: int = 0):
        if period <= 0:
            raise ConfigError(f"control period must be positive, got {period}")
        if blend_steps < 0:
            raise ConfigError(f"blend_steps must be >= 0, got {blend_steps}")
        self.period, self.blend_steps = float(period), int(blend_steps)
        self._lock = threading.Lock()
        self._queue: list[TimedAction] = []
        self._held: TimedAction | None = None
        self._chunks = 0
        self.dropped_late = 0
        self.blended = 0

    def add(self, actions: np.ndarray, observed_at: float, now: float) -> None:
        """Merge a chunk (n, A) predicted from an observation captured at `observed_at`."""
        half = self.period / 2
        new = [TimedAction(np.asarray(a, np.float32), observed_at, observed_at + i * self.period, self._chunks)
               for i, a in enumerate(actions)]
        with self._lock:
            self._chunks += 1
            start = new[0].due_at - half
            old = {round((q.due_at - new[0].due_at) / self.period): q for q in self._queue if q.due_at >= start}
            kept = [q for q in self._queue if q.due_at < start]
            k = 0
            for i, item in enumerate(new):
                prev = old.get(i)
                if item.due_at < now - half or prev is None or abs(prev.due_at - item.due_at) > half:
                    continue  # a slot already gone, or the old plan has no action left for it
                if k < self.blend_steps:
                    w = (self.blend_steps - k) / (self.blend_steps + 1)
                    new[i] = TimedAction((w * prev.action + (1 - w) * item.action).astype(np.float32),
                                         item.observed_at, item.due_at, item.chunk)
                    self.blended += 1
                k += 1
            self._queue = kept + new

    def take(self, now: float) -> TimedAction | None:
        """The action for the tick at `now` (None if nothing was ever queued or after `clear`)."""
        with self._lock:
            due = [i for i, q in enumerate(self._queue) if q.due_at <= now + self.period / 2]
            if due:
                last = due[-1]
                self.dropped_late += last
                self._held = self._queue[last]
                del self._queue[: last + 1]
            return self._held

    def ahead(self, now: float) -> int:
        """Queued actions due after the current slot."""
        with self._lock:
            return sum(q.due_at > now + self.period / 2 for q in self._queue)

    def clear(self) -> None:
        """Forget every planned and held action (server lost, new episode)."""
        with self._lock:
            self._queue, self._held = [], None
