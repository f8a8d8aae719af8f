"""Finiteness checks for tensors about to be trained on, saved, loaded or sent to a robot: one place, one message."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

#: Tensor names listed in a message before "... and N more".
_LISTED = 3


def nonfinite_summary(tensors: Mapping[str, torch.Tensor | np.ndarray]) -> str | None:
    """None when every floating-point tensor is finite, else e.g. "'head.net.0.weight' (3 of 512 values NaN/inf)"."""
    bad = []
    for name, value in tensors.items():
        t = torch.as_tensor(value)
        if not (t.is_floating_point() or t.is_complex()):
            continue  # integer and bool tensors (counters, masks) cannot hold NaN
        count = int((~torch.isfinite(t)).sum())
        if count:
            bad.append(f"{name!r} ({count} of {t.numel()} values NaN/inf)")
    if not bad:
        return None
    more = f" and {len(bad) - _LISTED} more" if len(bad) > _LISTED else ""
    return ", ".join(bad[:_LISTED]) + more
