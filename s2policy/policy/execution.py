"""Executing action chunks, one queue per environment (receding horizon or ACT-style temporal ensembling)."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

EXECUTION_MODES = ("receding", "ensemble")


class ChunkExecutor:
    """Turns predicted chunks (horizon, A) into one action per control tick for each of `num_envs` environments.

    - receding: execute the first `n_action_steps` actions of a chunk, then ask for a new one;
    - ensemble: ask for a chunk every tick and average every chunk's prediction for the current tick with weights
      exp(-decay * age_rank), oldest first (ACT's temporal ensembling; decay 0 = plain mean).
    """

    def __init__(self, mode: str, n_action_steps: int, ensemble_decay: float, horizon: int):
        if mode not in EXECUTION_MODES:
            raise ConfigError(f"policy.execution={mode!r}: expected one of {EXECUTION_MODES}")
        if mode == "receding" and horizon > 1 and not 1 <= n_action_steps <= horizon:
            raise ConfigError(f"policy.n_action_steps={n_action_steps} must be in [1, horizon={horizon}]")
        self.mode, self.horizon, self.decay = mode, horizon, ensemble_decay
        self.n_action_steps = min(n_action_steps, horizon)
        self.reset_all(0)

    def reset_all(self, num_envs: int) -> None:
        self.num_envs = num_envs
        self._queues: list[list[np.ndarray]] = [[] for _ in range(num_envs)]  # receding: actions still to execute
        self._chunks: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(num_envs)]  # ensemble: (tick, chunk)
        self._tick = [0] * num_envs

    def reset(self, env_id: int) -> None:
        self._queues[env_id], self._chunks[env_id], self._tick[env_id] = [], [], 0

    def needs_chunk(self, env_id: int) -> bool:
        return self.mode == "ensemble" or not self._queues[env_id]

    def add_chunk(self, env_id: int, chunk: np.ndarray) -> None:
        """chunk: (horizon, A) unnormalised actions predicted at this tick."""
        if self.mode == "receding":
            self._queues[env_id] = list(chunk[: self.n_action_steps])
        else:
            tick = self._tick[env_id]
            self._chunks[env_id] = [(t, c) for t, c in self._chunks[env_id] if t + len(c) > tick] + [(tick, chunk)]

    def pop(self, env_id: int) -> np.ndarray:
        """The action (A,) to execute now; advances this environment's tick."""
        tick = self._tick[env_id]
        self._tick[env_id] += 1
        if self.mode == "receding":
            return self._queues[env_id].pop(0)
        preds = [c[tick - t] for t, c in self._chunks[env_id] if 0 <= tick - t < len(c)]
        w = np.exp(-self.decay * np.arange(len(preds)))
        return (np.stack(preds) * w[:, None]).sum(0) / w.sum()
