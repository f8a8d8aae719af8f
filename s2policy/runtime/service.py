"""`ChunkService`: a loaded policy answering observation -> action-chunk requests for many robot sessions at once,
batched. The policy server runs it behind the network (`server`); `LocalChunks` runs the same computation
in-process, so the loop's chunk semantics can be compared with and without a network.

A chunk is the head's full prediction from one observation: float32 (horizon, A), unnormalised, action i for the
control step i periods after the observation (the head was trained that way). Each session keeps its own history
window (history heads condition on the last `history` requests and the action executed before each).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..policy.policy import history_window
from .export import ExportedPolicy
from .inference import ChunkReply
from .protocol import BAD_OBSERVATION, INTERNAL, NONFINITE_ACTION, PolicySpec, ProtocolError
from .cadence import StageTimes
from .runner import PolicyRunner

log = logging.getLogger(__name__)


@dataclass
class Session:
    """One robot's state on the server: its history window and current episode."""

    steps: deque = field(default_factory=deque)
    episode: Any = None


@dataclass
class ChunkRequest:
    """inputs: the observation checked by `PolicySpec.check_observation`; prev_action: (A,) the action the robot
    executed before this observation (None: none, as at an episode start)."""

    session: Session
    inputs: Mapping[str, np.ndarray]
    episode: Any = None
    prev_action: np.ndarray | None = None


@dataclass
class ChunkResult:
    """actions (horizon, A) or an error (protocol error code + message); the stage times of the batch it was
    computed in and that batch's size."""

    actions: np.ndarray | None
    times: StageTimes
    batch: int
    code: str | None = None
    message: str = ""


class ChunkService:
    """A `PolicyRunner`'s policy serving chunk requests; `infer` takes a batch of requests from any sessions."""

    def __init__(self, runner: PolicyRunner):
        self.runner = runner
        self.policy = runner.policy
        cfg = self.policy.config
        self.spec = PolicySpec(
            cameras=list(cfg.cameras), proprio_keys=list(cfg.proprio_keys), proprio_dim=int(cfg.proprio_dim),
            action_dim=int(cfg.action_dim), horizon=self.policy.horizon, history=self.policy.history,
            n_action_steps=min(int(cfg.n_action_steps), self.policy.horizon), task=cfg.task, encoder=cfg.encoder,
            scales=[int(s) for s in cfg.s2.get("scales", [1])],
        )

    def session(self) -> Session:
        return Session(deque(maxlen=self.policy.history))

    def infer(self, requests: Sequence[ChunkRequest]) -> list[ChunkResult]:
        """One result per request, in order. Requests whose frames have the same sizes run as one batch; a batch
        that fails gives every request in it an `internal` error (the service keeps serving)."""
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(tuple(r.inputs[c].shape for c in self.spec.cameras), []).append(i)
        results: list[ChunkResult | None] = [None] * len(requests)
        for ids in groups.values():
            batch = [requests[i] for i in ids]
            try:
                chunks, times = self._timed(self._predict, batch)
            except Exception as e:  # a policy failure on one batch must not take the server down
                log.exception("inference failed on a batch of %d", len(batch))
                for i in ids:
                    results[i] = ChunkResult(None, StageTimes(), len(batch), INTERNAL, f"inference failed: {e}")
                continue
            for j, i in enumerate(ids):
                chunk = chunks[j]
                if np.isfinite(chunk).all():
                    results[i] = ChunkResult(chunk, times, len(batch))
                else:  # the history would carry the NaN into every later chunk of this session
                    requests[i].session.steps.clear()
                    results[i] = ChunkResult(None, times, len(batch), NONFINITE_ACTION,
                                             f"the policy produced {int((~np.isfinite(chunk)).sum())} non-finite "
                                             "actions; this session's history was reset")
        return results  # type: ignore[return-value]

    def _predict(self, batch: Sequence[ChunkRequest]) -> np.ndarray:
        """(N, horizon, A) for requests whose frames share sizes."""
        policy = self.policy
        frames, proprio = policy.parse_observations([r.inputs for r in batch])
        feats = policy.encode_frames(frames, len(batch), policy.selector_points([r.inputs for r in batch]))
        prop = policy.proprio_norm.normalize(proprio)
        prev = np.zeros((len(batch), self.spec.action_dim), np.float32)
        given = np.array([r.prev_action is not None for r in batch])
        for j in np.flatnonzero(given):
            prev[j] = batch[j].prev_action
        # No previous action (episode start) is zero in the normalised space the head was trained in.
        prev_norm = policy.action_norm.normalize(torch.as_tensor(prev, device=policy.device))
        prev_norm[torch.as_tensor(~given, device=policy.device)] = 0.0
        windows = []
        for j, r in enumerate(batch):
            remember(r, (feats[j], prop[j], prev_norm[j]))
            windows.append(history_window(r.session.steps, policy.history))
        chunks = policy.predict_action_chunk(*(torch.stack(x) for x in zip(*windows)))
        return chunks.float().cpu().numpy()

    def _timed(self, fn: Callable[..., Any], *args: Any) -> tuple[Any, StageTimes]:
        return self.runner.timed(fn, *args)

    def _example_observation(self, frame_shape: tuple[int, int] | None) -> Mapping[str, Any]:
        return self.runner.example_observation(frame_shape)

    def warmup(self, frame_shape: tuple[int, int] | None = None, steps: int = 2) -> float:
        """Throw-away requests on a black frame (allocation, first-call costs); returns the last one's seconds."""
        inputs = self.spec.check_observation(self._example_observation(frame_shape))
        elapsed = 0.0
        for _ in range(steps):
            start = time.perf_counter()
            self.infer([ChunkRequest(self.session(), inputs)])
            elapsed = time.perf_counter() - start
        log.info("chunk service warmed up: %.1f ms per request", 1e3 * elapsed)
        return elapsed


def remember(request: ChunkRequest, step: tuple) -> None:
    """Append one step (features, normalised proprio, normalised previous action) to the request's session history,
    starting it afresh when the episode changed."""
    session = request.session
    if request.episode != session.episode:
        session.steps.clear()
        session.episode = request.episode
    session.steps.append(step)


class ExportedChunkService(ChunkService):
    """The same service on graphs written by `export` (onnxruntime or TorchScript; no training stack). The graphs
    take one observation at a time, so a batch runs them request by request; frame sizes are the exported ones
    (announced in the hello's `frame_shapes`)."""

    def __init__(self, exported: ExportedPolicy):
        m = exported.manifest
        self.exported = exported
        self.spec = PolicySpec(
            cameras=list(m.cameras), proprio_keys=list(m.proprio_keys), proprio_dim=m.proprio_dim,
            action_dim=m.action_dim, horizon=m.horizon, history=m.history,
            n_action_steps=min(m.n_action_steps, m.horizon), task=m.task,
            frame_shapes={c: list(v) for c, v in m.frame_shapes.items()},
        )
        self._graph_times = [0.0, 0.0]  # encode, head seconds of the current batch

    def session(self) -> Session:
        return Session(deque(maxlen=self.exported.manifest.history))

    def _timed(self, fn: Callable[..., Any], *args: Any) -> tuple[Any, StageTimes]:
        self._graph_times = [0.0, 0.0]
        start = time.perf_counter()
        result = fn(*args)
        total = time.perf_counter() - start
        encode, head = self._graph_times
        return result, StageTimes(preprocess=max(total - encode - head, 0.0), encode=encode, head=head)

    def _predict(self, batch: Sequence[ChunkRequest]) -> np.ndarray:
        chunks = []
        zeros = np.zeros(self.spec.action_dim, np.float32)
        for r in batch:
            t0 = time.perf_counter()
            feats, prop = self.exported.encode(r.inputs)
            t1 = time.perf_counter()
            prev = zeros if r.prev_action is None else self.exported.normalize_action(r.prev_action)
            remember(r, (feats, prop, prev))
            chunks.append(self.exported.plan(r.session.steps))
            self._graph_times[0] += t1 - t0
            self._graph_times[1] += time.perf_counter() - t1
        return np.stack(chunks).astype(np.float32)

    def _example_observation(self, frame_shape: tuple[int, int] | None) -> Mapping[str, Any]:
        obs: dict[str, Any] = {c: np.zeros((*self.spec.frame_shapes[c], 3), np.uint8) for c in self.spec.cameras}
        obs[self.spec.proprio_keys[0]] = np.zeros(self.spec.proprio_dim, np.float32)
        obs |= {k: np.zeros(0, np.float32) for k in self.spec.proprio_keys[1:]}
        return obs


class LocalChunks:
    """The `ChunkPredictor` of a `ChunkService` in this process: requests run in a worker thread (the loop's tick
    never waits), exactly the computation the server runs, without a network."""

    name = "the in-process policy"

    def __init__(self, service: ChunkService):
        self.service, self.spec = service, service.spec
        self._session = service.session()
        self._requests: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="s2policy-chunks", daemon=True)
        self._thread.start()

    @property
    def available(self) -> bool:
        return self._thread.is_alive()

    def request(self, observation: Mapping[str, Any], observed_at: float, prev_action: np.ndarray | None,
                on_reply: Callable[[ChunkReply], None]) -> bool:
        self._requests.put((observation, observed_at, prev_action, on_reply))
        return True

    def _run(self) -> None:
        from .robot import EPISODE_KEY
        from .safety import SERVER_ERROR

        while (item := self._requests.get()) is not None:
            observation, observed_at, prev_action, on_reply = item
            try:
                inputs = self.service.spec.check_observation(self.service.spec.select_inputs(observation))
            except ProtocolError as e:
                on_reply(ChunkReply(None, observed_at, {}, SERVER_ERROR, f"{BAD_OBSERVATION}: {e}"))
                continue
            (result,) = self.service.infer([ChunkRequest(self._session, inputs, observation.get(EPISODE_KEY),
                                                         prev_action)])
            if result.code is not None:
                on_reply(ChunkReply(None, observed_at, {}, SERVER_ERROR, f"{result.code}: {result.message}"))
            else:
                t = result.times
                on_reply(ChunkReply(result.actions, observed_at,
                                    {"preprocess": t.preprocess, "encode": t.encode, "head": t.head}))

    def close(self) -> None:
        self._requests.put(None)
        self._thread.join(timeout=5)
