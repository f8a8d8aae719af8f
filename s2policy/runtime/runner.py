"""`PolicyRunner`: a trained `Policy` prepared for a control loop: batch-of-one fast path, warm-up, per-stage timing.

Actions are exactly `Policy.act`'s (the runner calls it; it adds no preprocessing of its own), so a robot sees what
evaluation measured. Stage times come from forward hooks on the frozen backbone (encode) and the head (head); the
rest of the call is preprocessing (see `report.STAGES`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import numpy as np
import torch
from torch import nn

from ..device import autocast
from ..policy import Policy
from .cadence import StageTimes
from .robot import EPISODE_KEY

log = logging.getLogger(__name__)
T = TypeVar("T")


class ForwardTimer:
    """Wall time spent inside a module's forward calls since the last `reset()` (summed over calls).

    On CUDA it synchronises around each call so the time is the kernels' and not their launch.
    """

    def __init__(self, module: nn.Module, synchronize: bool = False):
        self.elapsed = 0.0
        self._started = 0.0
        self._sync = synchronize
        self._handles = [module.register_forward_pre_hook(self._pre), module.register_forward_hook(self._post)]

    def _now(self) -> float:
        if self._sync:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _pre(self, module: nn.Module, args: Any) -> None:
        self._started = self._now()

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        self.elapsed += self._now() - self._started

    def reset(self) -> None:
        self.elapsed = 0.0

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


class PolicyRunner:
    """Raw observation -> action (A,) with the training preprocessing, for one robot.

    Args:
        policy: a loaded `Policy` (the runner owns it from now on: it sets precision / memory format on it).
        precision: None keeps the checkpoint's; "auto" (bf16 on CUDA, fp32 on CPU), "fp32", "bf16" or "fp16".
        channels_last: memory format of the encoder's crops; None keeps the encoder's own hint (on for CNNs).
        compile: `torch.compile` the backbone's and the head's forward (pays off on GPU; first calls are slow, the
            warm-up absorbs them).
        threads: torch intra-op threads (process-wide). On a small shared CPU 1 thread can be many times faster than
            the default: when the other cores are busy, every layer waits for the thread that has none
            (docs/runtime.md).
        warmup_steps: `act` calls on `example_observation` (or a black frame at the training camera size) before
            the first real one, so allocation and compilation do not land on a control tick; the policy is reset
            afterwards.

    An observation whose `EPISODE_KEY` value differs from the previous one resets the policy first.
    """

    def __init__(self, policy: Policy, *, precision: str | None = None, channels_last: bool | None = None,
                 compile: bool = False, threads: int | None = None, warmup_steps: int = 2,
                 example_observation: Mapping[str, Any] | None = None):
        self.policy = policy.eval()
        if threads:
            torch.set_num_threads(int(threads))
        if precision is not None:
            autocast(policy.device, precision)  # validates the name for this device
            policy.config.precision = precision
        if channels_last is not None:
            policy.encoder.channels_last = bool(channels_last)
        backbone = policy.encoder.encoder
        if compile:
            # Compile forward only: the hooks below stay in eager mode and keep timing the compiled calls.
            backbone.forward = torch.compile(backbone.forward, dynamic=False)
            policy.head.forward = torch.compile(policy.head.forward, dynamic=False)
        sync = policy.device.type == "cuda"
        self._encode_timer = ForwardTimer(backbone, sync)
        self._head_timer = ForwardTimer(policy.head, sync)
        self.last_times = StageTimes()
        self._episode: Any = None
        if warmup_steps:
            self.warmup(example_observation, warmup_steps)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "auto", **options: Any) -> "PolicyRunner":
        """Load a policy checkpoint (file or directory; CheckpointError if unusable) and prepare it (`options` as in
        the constructor)."""
        return cls(Policy.load(path, device=device), **options)

    @property
    def action_dim(self) -> int:
        return int(self.policy.config.action_dim)

    @property
    def cameras(self) -> list[str]:
        return list(self.policy.config.cameras)

    def act(self, observation: Mapping[str, Any]) -> np.ndarray:
        """One observation -> float32 action (A,); `last_times` holds this call's stage times."""
        episode = observation.get(EPISODE_KEY)
        if episode is not None and episode != self._episode:
            if self._episode is not None:
                self.policy.reset()
            self._episode = episode
        action, self.last_times = self.timed(self.policy.act, observation)
        return action

    def timed(self, fn: Callable[..., T], *args: Any) -> tuple[T, StageTimes]:
        """`fn(*args)` in inference mode -> (its result, the stage times of the call: encode and head from the
        forward hooks, preprocess the rest). The policy server times its batched chunk calls with it."""
        self._encode_timer.reset()
        self._head_timer.reset()
        start = time.perf_counter()
        with torch.inference_mode():
            result = fn(*args)
        total = time.perf_counter() - start
        encode, head = self._encode_timer.elapsed, self._head_timer.elapsed
        return result, StageTimes(preprocess=max(total - encode - head, 0.0), encode=encode, head=head)

    def reset(self) -> None:
        """Forget history and queued actions (a new episode)."""
        self.policy.reset()

    def example_observation(self, frame_shape: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
        """A black frame per camera ((H, W) = `frame_shape`, default the training camera size, else the largest S2
        scale) and zero proprio: enough to exercise every stage."""
        cfg = self.policy.config
        side = cfg.camera_size or max(self.policy.encoder.img_sizes)
        h, w = frame_shape or (side, side)
        obs: dict[str, np.ndarray] = {cam: np.zeros((h, w, 3), np.uint8) for cam in cfg.cameras}
        # Policy concatenates proprio keys in order; only the total size is known, so the first key carries it.
        for i, key in enumerate(cfg.proprio_keys):
            obs[key] = np.zeros(cfg.proprio_dim if i == 0 else 0, np.float32)
        return obs

    def warmup(self, observation: Mapping[str, Any] | None = None, steps: int = 2) -> float:
        """Run `steps` throw-away calls, reset the policy; returns the last call's seconds."""
        obs = {k: v for k, v in (observation or self.example_observation()).items() if k != EPISODE_KEY}
        elapsed = 0.0
        for _ in range(steps):
            start = time.perf_counter()
            self.act(obs)
            elapsed = time.perf_counter() - start
        self.reset()
        log.info("policy warmed up: %.1f ms per action after %d calls", 1e3 * elapsed, steps)
        return elapsed
