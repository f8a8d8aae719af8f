"""`Policy`: frozen S2 encoder + normalisers (processing) around a trainable head (the model), acting on raw
observations exactly as it was trained. Saved as one safetensors file whose metadata holds the JSON config.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config.groups import DEFAULT_N_ACTION_STEPS
from ..device import autocast, select_device
from ..errors import CheckpointError
from ..features.identity import encoder_identity
from ..s2_encoder import build_s2_encoder
from ..features.frames import frames_to_tensor, image_key
from ..features.maps import camera_features
from ..fileio import atomic_path, safetensors_load_safe
from ..finite import nonfinite_summary
from ..look_closer import selector_points
from ..run_folder import POLICY_FILE
from .execution import ChunkExecutor
from .heads import build_head
from .normalizer import Normalizer
from .spatial import uses_maps

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "s2policy.policy/1"
_META_KEY = "s2policy"


@dataclass
class PolicyConfig:
    """Everything needed to rebuild a policy and preprocess its inputs (stored as JSON in the checkpoint)."""

    encoder: str
    weights: str
    s2: dict[str, Any]
    cameras: list[str]
    proprio_keys: list[str]
    proprio_dim: int
    action_dim: int
    feature_dim: int
    head: str = "mlp"
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    camera_size: int | None = None
    execution: str = "receding"  # "receding" | "ensemble"
    n_action_steps: int = DEFAULT_N_ACTION_STEPS
    ensemble_decay: float = 0.01
    precision: str = "auto"
    task: str | None = None
    encoder_identity: dict[str, Any] = field(default_factory=dict)  # S2Encoder identity at training time
    provenance: dict[str, Any] = field(default_factory=dict)  # where it came from: dataset, seed, run_dir

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PolicyConfig:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


class Policy(nn.Module):
    """Raw observation -> action, with the training preprocessing.

    Observation (one environment): {<camera> or <camera>_image: uint8 (H, W, 3), <proprio key>: float (P_k,), ...};
    frames may have any size and aspect (the S2 encoder resizes them to each scale). `act` returns float32 (A,);
    `act_batch` takes N observations and returns (N, A), keeping one history and action queue per environment.
    Call `reset()` (or `reset(env_ids)`) when episodes start.
    """

    def __init__(self, config: PolicyConfig, encoder: nn.Module, head: nn.Module,
                 proprio_norm: Normalizer, action_norm: Normalizer):
        super().__init__()
        self.config = config
        self.encoder = encoder  # frozen S2Encoder: processing, never trained
        self.head = head
        self.proprio_norm = proprio_norm
        self.action_norm = action_norm
        self.executor = ChunkExecutor(config.execution, config.n_action_steps, config.ensemble_decay, self.horizon)
        self._history: list[deque] = []
        self._prev_action: list[torch.Tensor] = []

    # --- construction -------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, config: PolicyConfig, encoder: nn.Module, proprio_norm: Normalizer,
               action_norm: Normalizer) -> Policy:
        """A new policy with a freshly initialised head (`config.head`, `config.head_kwargs`)."""
        if not config.encoder_identity:
            config.encoder_identity = encoder_identity(encoder)
        head = build_head(config.head, config.feature_dim, config.proprio_dim, config.action_dim, **config.head_kwargs)
        return cls(config, encoder, head, proprio_norm, action_norm)

    @property
    def history(self) -> int:
        return int(self.head.history)

    @property
    def horizon(self) -> int:
        return int(self.head.horizon)

    @property
    def device(self) -> torch.device:
        return self.action_norm.mean.device

    # --- model-level API (normalised tensors) -------------------------------------------------------------------
    def encode_frames(self, frames: Mapping[str, np.ndarray | torch.Tensor], n: int | None = None,
                      points: torch.Tensor | None = None) -> torch.Tensor:
        """{camera: uint8 (N, H, W, 3)} -> (N, feature_dim): every camera through the same frozen S2 encoder
        (pooled embeddings, or merged maps flattened for a spatial head), concatenated in `config.cameras` order (the
        order used for the cached features). `n`: the number of observations, needed only without frames
        (encoder=none: no cameras, zero-width features). `points` (N, 3): end-effector positions for a look-closer
        gripper selector (`selector_points`)."""
        n = len(next(iter(frames.values()))) if frames else int(n or 0)
        feats = [torch.zeros(n, 0, device=self.device)]
        maps = uses_maps(self.config.head)  # a spatial head takes each camera's merged S2 map, flattened
        with torch.inference_mode(), autocast(self.device, self.config.precision):
            feats += [camera_features(self.encoder, frames_to_tensor(frames[c], self.device), maps, c, points).float()
                      for c in self.config.cameras]
        return torch.cat(feats, dim=-1)

    def selector_points(self, observations: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> torch.Tensor | None:
        """End-effector positions (N, 3) a look-closer gripper selector reads from raw observations (see
        `s2policy.look_closer.selector_points`); None for encoders that read no robot state."""
        if not self.config.cameras:
            return None
        return selector_points(self.encoder, observations if isinstance(observations, Mapping) else
                               list(observations), self.device)

    def predict_action_chunk(self, features: torch.Tensor, proprio: torch.Tensor,
                             prev_actions: torch.Tensor) -> torch.Tensor:
        """Windows (N, T, F), normalised proprio (N, T, P) and previous actions (N, T, A) -> raw actions
        (N, horizon, A) predicted at the last step."""
        with torch.inference_mode():
            out = self.head(features.float(), proprio, prev_actions)[:, -1]
        return self.action_norm.unnormalize(out)

    # --- environment-level API (raw observations) ---------------------------------------------------------------
    def reset(self, env_ids: Sequence[int] | int | None = None) -> None:
        """Forget history and queued actions of `env_ids` (all environments when None)."""
        if env_ids is None:
            self._history, self._prev_action = [], []
            self.executor.reset_all(0)
            return
        for i in [env_ids] if isinstance(env_ids, int) else env_ids:
            if i < len(self._history):
                self._history[i].clear()
                self._prev_action[i] = torch.zeros(self.config.action_dim, device=self.device)
                self.executor.reset(i)

    def act(self, observation: Mapping[str, Any]) -> np.ndarray:
        """One environment: raw observation -> float32 action (A,)."""
        return self.act_batch([observation])[0]

    def act_batch(self, observations: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> np.ndarray:
        """N environments (a list of observations, or one dict of arrays stacked on axis 0) -> float32 (N, A)."""
        frames, proprio = self.parse_observations(observations)
        n = proprio.shape[0]
        if n != len(self._history):
            if self._history:
                log.info("act_batch: number of environments changed %d -> %d; resetting", len(self._history), n)
            self._start(n)
        self.eval()
        needs = [i for i in range(n) if self.executor.needs_chunk(i)]
        # History heads need every step's features; a history-1 head only when it plans.
        encode_ids = list(range(n)) if self.history > 1 else needs
        if encode_ids:
            points = self.selector_points(observations)  # look-closer: where the gripper is (None otherwise)
            feats = self.encode_frames({c: f[encode_ids] for c, f in frames.items()}, len(encode_ids),
                                       None if points is None else points[encode_ids])
            prop = self.proprio_norm.normalize(proprio[encode_ids])
            for j, i in enumerate(encode_ids):
                self._history[i].append((feats[j], prop[j], self._prev_action[i]))
        if needs:
            window = [self._window(i) for i in needs]
            chunks = self.predict_action_chunk(*(torch.stack(x) for x in zip(*window)))
            for j, i in enumerate(needs):
                self.executor.add_chunk(i, chunks[j].cpu().numpy())
        actions = np.stack([self.executor.pop(i) for i in range(n)]).astype(np.float32)
        executed = self.action_norm.normalize(torch.as_tensor(actions, device=self.device))
        self._prev_action = list(executed)
        return actions

    def _start(self, n: int) -> None:
        self._history = [deque(maxlen=self.history) for _ in range(n)]
        self._prev_action = [torch.zeros(self.config.action_dim, device=self.device) for _ in range(n)]
        self.executor.reset_all(n)

    def _window(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return history_window(self._history[i], self.history)

    def parse_observations(self, observations: Sequence[Mapping[str, Any]] | Mapping[str, Any]):
        """-> ({camera: uint8 (N, H, W, 3)}, proprio float32 (N, P) on the policy device)."""
        batched = isinstance(observations, Mapping)
        obs_list = [observations] if batched else list(observations)
        frames = {}
        for cam in self.config.cameras:
            key = next((k for k in (cam, image_key(cam)) if k in obs_list[0]), None)
            if key is None:
                raise KeyError(f"observation has no frame for camera {cam!r} (keys: {sorted(obs_list[0])})")
            arr = np.asarray(observations[key]) if batched else np.stack([np.asarray(o[key]) for o in obs_list])
            frames[cam] = arr
        parts = []
        for k in self.config.proprio_keys:
            if k not in obs_list[0]:
                raise KeyError(f"observation has no proprio key {k!r} (keys: {sorted(obs_list[0])})")
            v = np.asarray(observations[k]) if batched else np.stack([np.asarray(o[k]) for o in obs_list])
            parts.append(v.reshape(v.shape[0], -1) if batched else v.reshape(len(obs_list), -1))
        proprio = torch.as_tensor(np.concatenate(parts, axis=1), dtype=torch.float32, device=self.device)
        if proprio.shape[1] != self.config.proprio_dim:
            raise ValueError(f"proprio has {proprio.shape[1]} values, the policy was trained on {self.config.proprio_dim}")
        return frames, proprio

    # --- checkpoints ----------------------------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Head + normaliser tensors (+ the encoder's when its weights are random: no file could rebuild them)."""
        state = {f"head.{k}": v for k, v in self.head.state_dict().items()}
        state |= {f"proprio_norm.{k}": v for k, v in self.proprio_norm.state_dict().items()}
        state |= {f"action_norm.{k}": v for k, v in self.action_norm.state_dict().items()}
        if "random_weights_sha256" in self.config.encoder_identity:
            state |= {f"encoder.{k}": v for k, v in self.encoder.encoder.state_dict().items()}
        return state

    def save(self, path: str | Path, extra_metadata: Mapping[str, str] | None = None) -> Path:
        """Write `path` (.safetensors) atomically: tensors + the JSON config in the file's metadata. No pickle.
        Refuses (CheckpointError, nothing written) a policy with a NaN/inf tensor: it could only drive a robot badly."""
        from safetensors.torch import save_file

        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in self.trainable_state().items()}
        bad = nonfinite_summary(tensors)
        if bad is not None:
            raise CheckpointError(f"refusing to write policy {path}: non-finite tensors {bad}")
        meta = {_META_KEY: json.dumps({"format": CHECKPOINT_FORMAT, "config": asdict(self.config)})}
        meta |= dict(extra_metadata or {})
        path = Path(path)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto", encoder: nn.Module | None = None) -> Policy:
        """Rebuild a saved policy on `device`. `encoder`: an already-built S2Encoder to share (checked to match).

        Raises CheckpointError for a missing, truncated or foreign file, or encoder weights that differ from the
        ones the policy was trained on.
        """
        config, tensors = read_checkpoint(path)
        try:
            if encoder is None:
                encoder = build_s2_encoder(config.encoder, config.weights, config.s2)
                enc_state = {k[8:]: v for k, v in tensors.items() if k.startswith("encoder.")}
                if enc_state:
                    encoder.encoder.load_state_dict(enc_state)
            identity = encoder_identity(encoder)
            if config.encoder_identity and identity != config.encoder_identity:
                diff = {k for k in set(identity) | set(config.encoder_identity)
                        if identity.get(k) != config.encoder_identity.get(k)}
                raise CheckpointError(
                    f"{path}: the encoder built for this policy differs from the one it was trained with in {sorted(diff)} "
                    f"(trained: { {k: config.encoder_identity.get(k) for k in diff} })"
                )
            norms = {n: Normalizer(d) for n, d in (("proprio_norm", config.proprio_dim), ("action_norm", config.action_dim))}
            policy = cls(config, encoder,
                         build_head(config.head, config.feature_dim, config.proprio_dim, config.action_dim,
                                    **config.head_kwargs),
                         norms["proprio_norm"], norms["action_norm"])
            for name in ("head", "proprio_norm", "action_norm"):
                sub = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")}
                getattr(policy, name).load_state_dict(sub)
        except CheckpointError:
            raise
        except (RuntimeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{path}: tensors do not match the policy its config describes: {e}") from e
        return policy.to(select_device(device)).eval()


def history_window(steps: Sequence[tuple[torch.Tensor, ...]], history: int) -> tuple[torch.Tensor, ...]:
    """One environment's last steps [(features (F,), proprio (P,), prev_action (A,)), ...] -> the head's window
    tensors (history, ·); steps before the episode start repeat its first step (as in training)."""
    steps = list(steps)
    steps = [steps[0]] * (history - len(steps)) + steps
    return tuple(torch.stack(x) for x in zip(*steps))


def read_checkpoint(path: str | Path) -> tuple[PolicyConfig, dict[str, torch.Tensor]]:
    """(config, tensors) of a policy file, with one CheckpointError for anything that is not one or that holds a
    NaN/inf tensor."""
    path = Path(path)
    if path.is_dir():
        path = path / POLICY_FILE
    meta, tensors = safetensors_load_safe(path, "policy checkpoint")
    # s2policy 0.1.0 stored the transformer's causal mask as float (-inf above the diagonal): the same mask as bool
    tensors = {k: (v != 0 if k.endswith("causal_mask") and v.is_floating_point() else v) for k, v in tensors.items()}
    bad = nonfinite_summary(tensors)
    if bad is not None:  # evaluation and the robot loop load through here: a NaN policy never acts
        raise CheckpointError(f"{path}: policy file holds non-finite tensors {bad}; it cannot be used (retrain, or "
                              "use an earlier checkpoint)")
    if _META_KEY not in meta:
        raise CheckpointError(f"{path} is a safetensors file but not an s2policy policy (no '{_META_KEY}' metadata)")
    try:
        blob = json.loads(meta[_META_KEY])
        if blob.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path}: checkpoint format {blob.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
        config = PolicyConfig.from_dict(blob["config"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: unreadable policy config in metadata: {e}") from e
    if not config.cameras and config.encoder != "none":
        # s2policy 0.1.0 wrote image-free controls as cameras=[] beside an unused encoder: that is encoder=none
        config = replace(config, encoder="none", weights="none", encoder_identity={})
        tensors = {k: v for k, v in tensors.items() if not k.startswith("encoder.")}
    return config, tensors


def read_policy_config(path: str | Path) -> PolicyConfig:
    """The JSON config of a policy checkpoint (task, encoder, cameras, ...) without building anything."""
    return read_checkpoint(path)[0]
