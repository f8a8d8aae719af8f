"""Stop a run at the first non-finite loss or gradient, before the optimiser applies it: the weights, the EMA and
the last checkpoint stay as they were, no final policy is written, and the message says where to look."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..errors import TrainingDivergedError

_DEMOS_LISTED = 8


def check_step_is_finite(loss: torch.Tensor, grad_norm: torch.Tensor, step: int,
                         locate_batch: Callable[[], Sequence[tuple[str, int]]], checkpoint: Path,
                         checkpoint_step: int | None, lr: float) -> None:
    """Raise TrainingDivergedError when `loss` or `grad_norm` (the total norm before clipping) is NaN/inf.

    One host sync per step; under DDP the gradients are already all-reduced, so every rank sees the same norm and
    stops at the same step. `locate_batch` -> (demo, step) of this rank's batch; only called on failure.
    """
    loss, grad_norm = loss.detach(), grad_norm.detach()
    if bool(torch.isfinite(loss)) and bool(torch.isfinite(grad_norm)):
        return
    demos = sorted({demo for demo, _ in locate_batch()})
    listed = ", ".join(demos[:_DEMOS_LISTED]) + (f" and {len(demos) - _DEMOS_LISTED} more" if len(demos) > _DEMOS_LISTED
                                                 else "")
    remedy = f"a lower train.lr than {lr:g} (and precision=fp32 if it ran in fp16/bf16)"
    if checkpoint_step is not None:
        resume = (f"the last good checkpoint {checkpoint} (step {checkpoint_step}) is kept: continue from it with "
                  f"resume=true, e.g. with {remedy}")
    else:
        resume = f"no checkpoint was saved before it: rerun with {remedy}"
    raise TrainingDivergedError(
        f"training stopped at step {step}: loss {float(loss):.4g}, gradient norm {float(grad_norm):.4g} (not finite) "
        f"on a batch from demos {listed}. No weight was updated by this step and no policy file was written; "
        f"{resume}. To inspect: those demos' data and features, and train/loss and train/grad_norm in metrics.jsonl."
    )
