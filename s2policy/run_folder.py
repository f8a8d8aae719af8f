"""What a training run folder holds, shared by the stages that write it (train) and read it (evaluate, study):

    <run>/policy.safetensors              the final policy (s2policy.policy.Policy.save)
    <run>/checkpoints/last.safetensors    the training state `resume=true` continues from (s2policy.train)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

POLICY_FILE = "policy.safetensors"
TRAIN_STATE_FILE = "checkpoints/last.safetensors"


def read_run_config(state_file: str | Path) -> dict[str, Any]:
    """The run config (plain dict) stored in a training state file's metadata; nothing is unpickled."""
    from safetensors.torch import safe_open

    with safe_open(str(state_file), framework="pt") as f:
        return json.loads((f.metadata() or {})["run_config"])
