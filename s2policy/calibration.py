"""Calibration of detail-limited task variants: base vision vs the privileged control, the gap and the study gate.

    python -m s2policy.calibration queue calib_tiny_goal_r20 calib_cue_r12     # run variants in order (resumable)
    python -m s2policy.calibration report results/calibration --out docs/calibration

`queue` runs `python -m s2policy.study --config-name <name>` for each variant in turn (s2policy.study_queue), one
torch thread per process; every study reuses its finished stages, so re-running the same queue after a cut continues
it, and a cut leaves whole variants behind it. `report` reads the published records (<variant>/{base,privileged}/seed<k>/) and writes the gap
table (Wilson intervals for each rate, Newcombe's interval for the gap, the gate verdict, task-specific outcomes) as
markdown + JSON and a figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .evaluate.stats import SuccessRate, difference_interval
from .fileio import atomic_write_text
from .logs import log_to_stderr

log = logging.getLogger(__name__)

GATE_GAP = 0.25  # privileged must beat base vision by at least this much
GATE_BASE = (0.15, 0.75)  # and base vision must lie in this band
VISION, PRIVILEGED = "base", "privileged"


@dataclass(frozen=True)
class Calibration:
    """One variant's two pooled rates and what the gate makes of them."""

    variant: str
    task: str
    variation: dict
    base: SuccessRate
    privileged: SuccessRate
    outcomes: dict  # configuration -> {outcome name: count}, from envs.detail_tasks.outcome

    @property
    def gap(self) -> float:
        return self.privileged.rate - self.base.rate

    @property
    def gap_interval(self) -> tuple[float, float]:
        p, b = self.privileged, self.base
        return difference_interval(p.successes, p.trials, b.successes, b.trials)

    @property
    def passes(self) -> bool:
        return self.gap >= GATE_GAP and GATE_BASE[0] <= self.base.rate <= GATE_BASE[1]

    def to_dict(self) -> dict:
        low, high = self.gap_interval
        return {"variant": self.variant, "task": self.task, "variation": self.variation,
                "base": self.base.to_dict(), "privileged": self.privileged.to_dict(),
                "gap": self.gap, "gap_ci_low": low, "gap_ci_high": high, "passes_gate": self.passes,
                "outcomes": self.outcomes}


def _pool(config_dir: Path) -> tuple[SuccessRate, dict, str, dict]:
    """Pooled success over every seed<k> record of one configuration, its outcome counts, task and variation."""
    from .report import count_outcomes

    successes = trials = 0
    counts: dict[str, int] = {}
    task, variation = "", {}
    for summary_path in sorted(config_dir.glob("seed*/summary.json")):
        summary = json.loads(summary_path.read_text())
        task, variation = summary["task"], summary["eval"].get("variation", {})
        successes += summary["success"]["successes"]
        trials += summary["success"]["episodes"]
        for name, n in count_outcomes(task, json.loads((summary_path.parent / "episodes.json").read_text())).items():
            counts[name] = counts.get(name, 0) + n
    return SuccessRate(successes, trials), counts, task, variation


def load_calibrations(root: str | Path) -> list[Calibration]:
    """Every variant under `root` that has both a base and a privileged record, in name order."""
    found = []
    for variant_dir in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        if not all(any((variant_dir / c).glob("seed*/summary.json")) for c in (VISION, PRIVILEGED)):
            log.info("%s: no complete base + privileged pair yet; skipped", variant_dir.name)
            continue
        base, base_counts, task, variation = _pool(variant_dir / VISION)
        privileged, priv_counts, _, _ = _pool(variant_dir / PRIVILEGED)
        found.append(Calibration(variant_dir.name, task, variation, base, privileged,
                                 {VISION: base_counts, PRIVILEGED: priv_counts}))
    return found


def changed_knobs(task: str, variation: dict) -> dict:
    """The knobs that differ from the task's defaults (all of them for tasks without declared knobs)."""
    from dataclasses import asdict

    from envs.detail_tasks import KNOBS

    if task not in KNOBS:
        return dict(variation)
    defaults = json.loads(json.dumps(asdict(KNOBS[task]())))  # tuples -> lists, as stored in summaries
    return {k: v for k, v in variation.items() if defaults.get(k) != v}


def _pct(rate: SuccessRate) -> str:
    low, high = rate.interval
    return f"{rate.successes}/{rate.trials} = {100 * rate.rate:.0f}% [{100 * low:.1f}, {100 * high:.1f}]"


def markdown_table(calibrations: Sequence[Calibration]) -> str:
    header = ("| variant | task | knobs | base vision (Lite0 224) | privileged | gap, points [95% CI] | gate "
              "| outcomes (base / privileged) |")
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for c in calibrations:
        low, high = c.gap_interval
        knobs = ", ".join(f"{k}={v}" for k, v in changed_knobs(c.task, c.variation).items()) or "defaults"
        outcomes = "; ".join(f"{name} {c.outcomes[VISION].get(name, 0)} / {c.outcomes[PRIVILEGED].get(name, 0)}"
                             for name in sorted(set(c.outcomes[VISION]) | set(c.outcomes[PRIVILEGED])))
        lines.append(f"| `{c.variant}` | `{c.task}` | {knobs} | {_pct(c.base)} | {_pct(c.privileged)} | "
                     f"{100 * c.gap:+.0f} [{100 * low:+.1f}, {100 * high:+.1f}] | "
                     f"{'**pass**' if c.passes else 'fail'} | {outcomes or '-'} |")
    return "\n".join(lines) + "\n"


def plot(calibrations: Sequence[Calibration], path: Path) -> Path:
    """Both rates with their Wilson intervals per variant, the gate's base band shaded, gaps annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(calibrations) + 2), 4.2))
    ax.axhspan(100 * GATE_BASE[0], 100 * GATE_BASE[1], color="0.92", zorder=0, label="gate band for base vision")
    for offset, key, colour in ((-0.15, VISION, "tab:blue"), (0.15, PRIVILEGED, "tab:orange")):
        xs, ys, errs = [], [], [[], []]
        for i, c in enumerate(calibrations):
            rate = getattr(c, key)
            low, high = rate.interval
            xs.append(i + offset)
            ys.append(100 * rate.rate)
            errs[0].append(100 * (rate.rate - low))
            errs[1].append(100 * (high - rate.rate))
        ax.errorbar(xs, ys, yerr=errs, fmt="o", color=colour, capsize=3,
                    label="base vision (Lite0 224)" if key == VISION else "privileged (true state)")
    for i, c in enumerate(calibrations):
        ax.annotate(f"gap {100 * c.gap:+.0f}" + (" pass" if c.passes else ""), (i, 103), ha="center", fontsize=8)
    ax.set_xticks(range(len(calibrations)), [c.variant for c in calibrations], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(-3, 110)
    ax.set_ylabel("success % (Wilson 95% CI)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(root: str | Path, out_dir: str | Path) -> dict[str, Path]:
    calibrations = load_calibrations(root)
    out = Path(out_dir)
    written = {"markdown": out / "calibration.md", "json": out / "calibration.json"}
    atomic_write_text(written["markdown"], markdown_table(calibrations))
    atomic_write_text(written["json"], json.dumps([c.to_dict() for c in calibrations], indent=1) + "\n")
    if calibrations:
        written["plot"] = plot(calibrations, out / "calibration.png")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    queue = sub.add_parser("queue", help="run calibration study configs in order (resumable)")
    queue.add_argument("configs", nargs="+", help="config names, e.g. calib_tiny_goal_r20")
    queue.add_argument("--log-dir", default="studies/calibration/logs")
    report = sub.add_parser("report", help="gap table + figure from published records")
    report.add_argument("root", help="folder of <variant>/{base,privileged}/seed<k>/ records")
    report.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    log_to_stderr(logging.INFO, "%(asctime)s %(message)s")
    if args.command == "queue":
        from .study_queue import plan, run_queue

        return run_queue(plan(args.configs, None), Path(args.log_dir))
    root = Path(args.root)
    if not root.is_dir():
        print(f"error: {root}: no such folder", file=sys.stderr)
        return 2
    for kind, path in write_report(root, args.out).items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
