"""What evaluation needs to know about a checkpoint beyond the policy itself: where it came from.

The policy file records its task, cameras and camera size, and its provenance: the training dataset, the training
seed and the run folder. Files written by s2policy 0.1.0 have no provenance; for them the training state file that
`train_policy` kept beside the policy (<run>/checkpoints/last.safetensors) is read instead. Evaluation needs nothing
from the training package.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..run_folder import POLICY_FILE, TRAIN_STATE_FILE, read_run_config

log = logging.getLogger(__name__)


@dataclass
class CheckpointInfo:
    """A resolved policy checkpoint: its file, policy config, and where it came from."""

    path: Path
    config: Any  # s2policy.policy.PolicyConfig
    provenance: dict[str, Any]  # {"dataset", "seed", "run_dir"}; values None when unknown
    sha256: str

    @property
    def task(self) -> str | None:
        return self.config.task

    @property
    def train_seed(self) -> int | None:
        seed = self.provenance.get("seed")
        return int(seed) if seed is not None else None

    @property
    def dataset(self) -> Path | None:
        """The training dataset, when the run recorded it (and it still exists)."""
        path = self.provenance.get("dataset")
        if not path:
            return None
        path = Path(path)
        if not path.is_absolute() and not path.exists():
            path = self.path.parent / path
        return path if path.exists() else None  # a robomimic file or a LeRobot dataset folder


def resolve_policy_file(path: str | Path) -> Path:
    """A policy file, or a training run folder holding policy.safetensors -> the policy file (CheckpointError if
    there is none)."""
    p = Path(path)
    if p.is_dir():
        p = p / POLICY_FILE
    if not p.is_file():
        hint = " (the run may still be training: its final policy is written when training ends)" \
            if (p.parent / TRAIN_STATE_FILE).is_file() else ""
        raise CheckpointError(f"policy checkpoint not found: {p}{hint}")
    return p


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_checkpoint_info(path: str | Path, expected_task: str | None = None) -> CheckpointInfo:
    """Resolve and read a checkpoint; raise one CheckpointError for a missing/corrupt file or a task mismatch."""
    from ..policy import read_policy_config

    file = resolve_policy_file(path)
    config = read_policy_config(file)
    info = CheckpointInfo(file, config, config.provenance or _provenance_of_0_1(file), file_sha256(file))
    if info.task is None:
        raise CheckpointError(f"{file}: the checkpoint does not record which task it was trained on")
    if expected_task is not None and info.task != expected_task:
        raise CheckpointError(f"{file} was trained on task {info.task!r}, but evaluation asked for task "
                              f"{expected_task!r}; evaluate it on {info.task!r} or pass a {expected_task!r} checkpoint")
    return info


def _provenance_of_0_1(policy_file: Path) -> dict[str, Any]:
    """Provenance of a policy file written before policy files recorded it: from the training state beside it."""
    state = policy_file.parent / TRAIN_STATE_FILE
    run: dict[str, Any] = {}
    if state.is_file():
        try:
            run = read_run_config(state)
        except Exception as e:  # a damaged training state must not block evaluating a good policy file
            log.warning("cannot read the training run config in %s: %s", state, e)
    return {"dataset": run.get("dataset") or (run.get("collect") or {}).get("output"), "seed": run.get("seed"),
            "run_dir": str(policy_file.parent)}
