"""Metric logging for training runs: TensorBoard (main process only) plus the standard logger."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("s2policy.train")


class RunLogger:
    """`scalars(step, **values)` -> TensorBoard under `<out_dir>/tb` and one log line; a no-op off the main rank.

    Every scalar also goes to `<out_dir>/metrics.jsonl` so results are readable without TensorBoard.
    """

    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool = True):
        self.enabled = enabled
        self.writer = None
        self.jsonl = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(out_dir / "metrics.jsonl", "a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(out_dir / "tb"))
            except ImportError:  # tensorboard is an optional extra
                log.warning("tensorboard is not installed; metrics go to metrics.jsonl only")

    def scalars(self, step: int, **values: float) -> None:
        if not self.enabled:
            return
        for k, v in values.items():
            if self.writer is not None:
                self.writer.add_scalar(k, v, step)
        self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self.jsonl.flush()
        log.info("step %d %s", step, " ".join(f"{k}={v:.4g}" for k, v in values.items()))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.jsonl is not None:
            self.jsonl.close()

    def text(self, tag: str, value: Any) -> None:
        if self.enabled and self.writer is not None:
            self.writer.add_text(tag, str(value))
