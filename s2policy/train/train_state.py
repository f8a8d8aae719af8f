"""Training checkpoints: everything `resume=true` needs to continue a run on the same trajectory, in one
safetensors file (policy tensors, EMA, optimizer moments) with JSON metadata (step, optimizer hyper-parameters,
policy config). Written atomically; loading unpickles nothing."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..fileio import atomic_path, safetensors_load_safe
from ..finite import nonfinite_summary
from ..policy import Policy
from .optim import EMA

TRAIN_STATE_FORMAT = "s2policy.train_state/1"


def save_train_state(path: str | Path, policy: Policy, ema: EMA, optimizer: torch.optim.Optimizer, step: int,
                     run_config: dict[str, Any]) -> Path:
    """Atomically write the state after `step` optimisation steps (CheckpointError, nothing written, if a tensor is
    NaN/inf)."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v for k, v in policy.trainable_state().items()}
    tensors |= {f"ema.{k}": v for k, v in ema.shadow.items()}
    opt = optimizer.state_dict()
    for pid, state in opt["state"].items():
        for name, value in state.items():
            tensors[f"optim.{pid}.{name}"] = torch.as_tensor(value)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    bad = nonfinite_summary(tensors)
    if bad is not None:  # never replace the last good state with a broken one
        raise CheckpointError(f"refusing to write training checkpoint {path}: non-finite tensors {bad}")
    meta = {
        "format": TRAIN_STATE_FORMAT,
        "step": str(step),
        "ema_updates": str(ema.updates),
        "param_groups": json.dumps(opt["param_groups"]),
        "policy_config": json.dumps(asdict(policy.config)),
        "run_config": json.dumps(run_config, default=str),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_train_state(path: str | Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a training checkpoint; CheckpointError for a damaged, foreign or non-finite one.
    Cheap: `train` calls it before any expensive stage when resuming."""
    path = Path(path)
    meta, tensors = safetensors_load_safe(path, "training checkpoint")
    if meta.get("format") != TRAIN_STATE_FORMAT:
        raise CheckpointError(f"{path} is not an s2policy training checkpoint (format {meta.get('format')!r})")
    bad = nonfinite_summary(tensors)
    if bad is not None:
        raise CheckpointError(f"training checkpoint {path} holds non-finite tensors {bad}; it cannot be resumed")
    return meta, tensors


def load_train_state(path: str | Path, policy: Policy, ema: EMA, optimizer: torch.optim.Optimizer) -> int:
    """Restore model, EMA and optimizer from `path` in place; returns the step to continue from."""
    meta, tensors = read_train_state(path)
    device = policy.device
    try:
        model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        for name in ("head", "proprio_norm", "action_norm"):
            getattr(policy, name).load_state_dict({k[len(name) + 1:]: v for k, v in model.items()
                                                   if k.startswith(name + ".")})
        ema.shadow = {k[4:]: v.to(device) for k, v in tensors.items() if k.startswith("ema.")}
        ema.updates = int(meta["ema_updates"])
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v
        optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"training checkpoint {path} does not match this run's model/optimizer: {e}") from e
    return int(meta["step"])

