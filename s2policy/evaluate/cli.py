"""What eval_policy.py does after Hydra has parsed its config: output folders, progress bars, printed results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import load
from .provenance import resolve_policy_file
from .evaluator import SUMMARY_FILE, EvalSettings, evaluate
from .rollout import EpisodeResult
from .stats import SuccessRate


def output_dirs(checkpoints: Sequence[str], out_dir: str | None) -> list[Path]:
    """<run folder>/eval per checkpoint; with `out_dir`: out_dir itself for one checkpoint, else
    out_dir/<run folder name> (suffixed -2, -3, ... when names repeat)."""
    runs = [resolve_policy_file(c).parent for c in checkpoints]
    if out_dir is None:
        return [run / "eval" for run in runs]
    if len(runs) == 1:
        return [Path(out_dir)]
    seen: dict[str, int] = {}
    dirs = []
    for run in runs:
        seen[run.name] = seen.get(run.name, 0) + 1
        dirs.append(Path(out_dir) / (run.name if seen[run.name] == 1 else f"{run.name}-{seen[run.name]}"))
    return dirs


def format_summary(summary: Mapping[str, Any]) -> str:
    s, sp = summary["success"], summary["speed"]
    rate = SuccessRate(s["successes"], s["episodes"], s["confidence"])
    p = summary["policy"]
    what = (f"{p['encoder']} img_sizes={p['img_sizes']}" if p.get("cameras", True)
            else f"no image, inputs {'+'.join(p['proprio_keys'])}")
    return (f"{summary['task']} {what}: success {rate}; mean length {summary['mean_length']:.1f}; "
            f"{sp['steps_per_second']:.1f} env steps/s; policy {sp['policy_ms_per_env_step']:.1f} ms/step")


def episode_progress(total: int, desc: str, enabled: bool = True):
    """A tqdm bar over episodes showing the running success count, and the `on_episode` callback that advances it."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="ep", disable=not enabled)
    done = {"n": 0, "ok": 0}

    def update(result: EpisodeResult) -> None:
        done["n"] += 1
        done["ok"] += int(result.success)
        bar.update(1)
        bar.set_postfix(success=f"{done['ok']}/{done['n']} ({done['ok'] / done['n']:.0%})")

    return bar, update


def evaluate_checkpoints(checkpoints: str | Sequence[str], out_dir: str | None,
                         settings: EvalSettings | Mapping[str, Any], progress: bool = True) -> list[dict]:
    """Evaluate each checkpoint with the same settings, printing a result line and where the files went."""
    checkpoints = [checkpoints] if isinstance(checkpoints, str) else list(checkpoints)
    settings = load(EvalSettings, settings)
    summaries = []
    for checkpoint, folder in zip(checkpoints, output_dirs(checkpoints, out_dir)):
        bar, update = episode_progress(settings.episodes, f"eval {Path(checkpoint).name}", progress)
        try:
            summary = evaluate(checkpoint, folder, settings, on_episode=update)
        finally:
            bar.close()
        print(format_summary(summary))
        print(f"results: {folder / SUMMARY_FILE}")
        summaries.append(summary)
    return summaries
