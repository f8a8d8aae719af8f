"""What a failed start leaves in a run folder: Hydra writes `.hydra/` and its log before training code runs, so a run
refused at its checks would leave a folder that looks like a run. `discard_unstarted_run_dir` removes it."""

from __future__ import annotations

import shutil
from pathlib import Path

_LAUNCHER_FILES = (".hydra",)


def discard_unstarted_run_dir(out_dir: str | Path) -> bool:
    """Remove `out_dir` if it holds nothing but the launcher's files (`.hydra/`, `*.log`); True if removed. A folder
    with anything else (checkpoints, metrics of a run that started) is left alone."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return False
    entries = list(out_dir.iterdir())
    if any(e.name not in _LAUNCHER_FILES and not (e.is_file() and e.suffix == ".log") for e in entries):
        return False
    shutil.rmtree(out_dir)
    return True
