"""Comparison report over evaluated runs: a Markdown + CSV table and a success-vs-compute plot.

Runs are pooled per configuration (task, encoder, weights, S2 image sizes, camera size, cameras, head, inputs,
env variation): successes and episodes of every training seed are summed and one Wilson interval is computed on the
pooled counts; per-seed rates are listed beside it so between-seed spread stays visible.

    python -m s2policy.report runs/ --out reports/lift [--title "Lift: base vs S2 vs larger backbone"]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import S2PolicyError
from .evaluate.evaluator import SUMMARY_FILE, SUMMARY_FORMAT
from .evaluate.stats import SuccessRate
from .fileio import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

CSV_FIELDS = ["task", "configuration", "encoder", "weights", "img_sizes", "camera_size", "head", "inputs",
              "variation", "encoder_params_m", "gmacs_per_frame", "seeds", "runs", "episodes", "successes",
              "success_rate", "ci_low", "ci_high", "per_seed", "policy_ms_per_step", "mean_length"]


class ReportError(S2PolicyError):
    """No usable evaluation summaries, or a summary file that is not one."""


@dataclass
class Configuration:
    """One row of the table: every evaluated run of one configuration, pooled."""

    task: str
    encoder: str
    weights: str
    img_sizes: list[int]
    camera_size: list[int]
    cameras: list[str]
    head: str
    inputs: list[str]
    variation: dict[str, Any]
    encoder_params: int
    gmacs_per_frame: float
    runs: list[dict] = field(default_factory=list)
    look_closer: dict[str, Any] | None = None  # {selector, crops, crop_scale_px} of a look-closer encoder
    map_size: int | None = None  # spatial heads: image size of the S2 scale whose grid the map is merged to

    @property
    def head_label(self) -> str:
        """"mlp head", or for a head on S2 maps the grid it sees: "spatial head (448 grid)"."""
        return f"{self.head} head" + (f" ({self.map_size} grid)" if self.map_size else "")

    @property
    def label(self) -> str:
        if not self.cameras:  # a control that sees no image: what it gets instead is the configuration
            return f"no image: {'+'.join(self.inputs)}, {self.head_label}"
        scales = (f"S2 {'+'.join(str(s) for s in self.img_sizes)}" if len(self.img_sizes) > 1
                  else f"{self.img_sizes[0]}px")
        if self.look_closer:  # the base scale whole, k crops of the larger one
            lc = self.look_closer
            scales = f"{self.img_sizes[0]}px + look-closer {lc['selector']} {lc['crops']}x{lc['crop_scale_px']}px"
        extra = [k for k in self.inputs if k != "proprio"]
        return f"{self.encoder} {scales}" + (f" +{'+'.join(extra)}" if extra else "") + f", {self.head_label}"

    @property
    def pooled(self) -> SuccessRate:
        return SuccessRate(sum(r["success"]["successes"] for r in self.runs),
                           sum(r["success"]["episodes"] for r in self.runs))

    def per_seed(self) -> dict[str, SuccessRate]:
        """Training seed -> pooled rate of that seed's runs (runs without a recorded seed are 'unknown')."""
        counts: dict[str, list[int]] = {}
        for r in self.runs:
            c = counts.setdefault(str(r.get("train_seed", "unknown")), [0, 0])
            c[0] += r["success"]["successes"]
            c[1] += r["success"]["episodes"]
        return {seed: SuccessRate(k, n) for seed, (k, n) in sorted(counts.items())}

    def mean_of(self, *keys: str) -> float:
        values = []
        for r in self.runs:
            v: Any = r
            for k in keys:
                v = v[k]
            values.append(float(v))
        return sum(values) / len(values)


def find_summaries(paths: Iterable[str | Path]) -> list[Path]:
    """summary.json files: given directly, or found anywhere below the given folders (sorted, unique)."""
    found: set[Path] = set()
    for p in map(Path, paths):
        if p.is_file():
            found.add(p.resolve())
        elif p.is_dir():
            found.update(q.resolve() for q in p.rglob(SUMMARY_FILE))
        else:
            raise ReportError(f"{p}: no such file or folder")
    return sorted(found)


def load_summary(path: Path) -> dict:
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: unreadable evaluation summary: {e}") from e
    if not isinstance(summary, dict) or summary.get("format") != SUMMARY_FORMAT:
        raise ReportError(f"{path}: not an s2policy evaluation summary (expected format {SUMMARY_FORMAT!r})")
    return summary


def pool_runs(summaries: Sequence[dict]) -> list[Configuration]:
    """Group runs by configuration (first-seen order); the same checkpoint on the same seeds counts once."""
    groups: dict[str, Configuration] = {}
    seen: set[tuple] = set()
    for s in summaries:
        ident = (s["checkpoint_sha256"], s["eval"]["first_seed"], s["success"]["episodes"])
        if ident in seen:
            log.info("skipping a duplicate evaluation of %s", s["checkpoint"])
            continue
        seen.add(ident)
        p, ev = s["policy"], s["eval"]
        weights = p["weights"] if p["weights"] in ("pretrained", "random") else "file"
        map_size = _map_size(p)
        key = json.dumps([s["task"], p["encoder"], weights, p["img_sizes"], p["camera_size"], p["cameras"],
                          p["head"], p["proprio_keys"], ev.get("variation", {}), p.get("look_closer")]
                         + ([map_size] if map_size else []), sort_keys=True)
        if key not in groups:
            groups[key] = Configuration(s["task"], p["encoder"], weights, list(p["img_sizes"]),
                                        list(p["camera_size"]), list(p["cameras"]), p["head"],
                                        list(p["proprio_keys"]),
                                        dict(ev.get("variation", {})), int(s["cost"]["encoder_params"]),
                                        float(s["cost"]["gmacs_per_frame"]), map_size=map_size,
                                        look_closer=p.get("look_closer"))
        groups[key].runs.append(s)
    return list(groups.values())


def _map_size(policy: dict) -> int | None:
    """For a head on S2 maps, the image size of the scale whose grid the maps are merged to (s2's
    resize_output_to_idx indexes the image sizes as given); None for pooled heads."""
    from .policy import uses_maps

    if not uses_maps(policy["head"]) or not policy["img_sizes"]:
        return None
    return int(policy["img_sizes"][int(policy.get("s2", {}).get("resize_output_to_idx", 0))])


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.1f}"


def csv_rows(configs: Sequence[Configuration]) -> list[dict]:
    rows = []
    for c in configs:
        rate = c.pooled
        low, high = rate.interval
        rows.append({
            "task": c.task, "configuration": c.label, "encoder": c.encoder, "weights": c.weights,
            "img_sizes": " ".join(map(str, c.img_sizes)), "camera_size": "x".join(map(str, c.camera_size)),
            "head": c.head, "inputs": " ".join(c.inputs), "variation": json.dumps(c.variation, sort_keys=True),
            "encoder_params_m": round(c.encoder_params / 1e6, 3), "gmacs_per_frame": round(c.gmacs_per_frame, 4),
            "seeds": len(c.per_seed()), "runs": len(c.runs), "episodes": rate.trials, "successes": rate.successes,
            "success_rate": round(rate.rate, 4), "ci_low": round(low, 4), "ci_high": round(high, 4),
            "per_seed": " ".join(f"{seed}:{r.successes}/{r.trials}" for seed, r in c.per_seed().items()),
            "policy_ms_per_step": round(c.mean_of("speed", "policy_ms_per_env_step"), 2),
            "mean_length": round(c.mean_of("mean_length"), 1),
        })
    return rows


def markdown_table(configs: Sequence[Configuration]) -> str:
    lines = ["| Task | Configuration | Encoder params (M) | GMACs / frame | Seeds | Episodes | Success % [95% CI] "
             "| Per seed | Policy ms / step |",
             "|---|---|---:|---:|---:|---:|---|---|---:|"]
    for c in configs:
        rate = c.pooled
        low, high = rate.interval
        per_seed = ", ".join(f"{_pct(r.rate)}" for r in c.per_seed().values())
        lines.append(f"| {c.task} | {c.label} | {c.encoder_params / 1e6:.3g} | {c.gmacs_per_frame:.3g} "
                     f"| {len(c.per_seed())} | {rate.trials} | **{_pct(rate.rate)}** [{_pct(low)}, {_pct(high)}] "
                     f"| {per_seed} | {c.mean_of('speed', 'policy_ms_per_env_step'):.1f} |")
    return "\n".join(lines)


def plot_success_vs_gmacs(configs: Sequence[Configuration], path: Path, title: str) -> Path:
    """One point per configuration: pooled success rate with its Wilson interval against GMACs per frame."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(c.task for c in configs)) or [""]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.4 * len(tasks), 4.4), dpi=120, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        mine = [c for c in configs if c.task == task]
        for i, c in enumerate(mine):
            rate = c.pooled
            low, high = rate.interval
            y = 100 * rate.rate
            if not c.cameras:  # image-free controls cost no encoder pass: a reference band, not a point
                colour = f"C{i}"
                ax.axhline(y, color=colour, linestyle="--", linewidth=1, label=c.label)
                ax.axhspan(100 * low, 100 * high, color=colour, alpha=0.08)
                continue
            ax.errorbar([c.gmacs_per_frame], [y], yerr=[[y - 100 * low], [100 * high - y]], fmt="o", capsize=4,
                        color=f"C{i}", label=c.label)
        gmacs = [c.gmacs_per_frame for c in mine if c.cameras]
        if gmacs and min(gmacs) > 0 and max(gmacs) / min(gmacs) > 8:
            ax.set_xscale("log")
        ax.set_xlabel("encoder GMACs per frame (all scales and cameras)")
        ax.set_ylabel("success rate (%), Wilson 95% interval")
        ax.set_ylim(-2, 102)
        ax.set_title(f"{title}: {task}" if len(tasks) > 1 else title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def write_report(paths: Iterable[str | Path], out_dir: str | Path, title: str = "Policy comparison") -> dict[str, Path]:
    """Read every evaluation summary under `paths`, pool per configuration, and write report.md, results.csv and
    success_vs_gmacs.png into `out_dir`. Returns the written paths."""
    files = find_summaries(paths)
    if not files:
        raise ReportError(f"no {SUMMARY_FILE} found under {[str(p) for p in paths]}")
    configs = pool_runs([load_summary(f) for f in files])
    out_dir = Path(out_dir)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(configs))
    atomic_write_text(out_dir / "results.csv", buf.getvalue())
    plot = plot_success_vs_gmacs(configs, out_dir / "success_vs_gmacs.png", title)
    runs = sum(len(c.runs) for c in configs)
    md = [f"# {title}", "",
          f"{runs} evaluated runs in {len(configs)} configurations. Success is pooled over training seeds "
          "(successes and episodes summed) with a Wilson 95% interval; 'Per seed' lists each seed's rate. "
          "GMACs are counted encoder multiply-accumulates per control step (every S2 crop, every camera).", "",
          markdown_table(configs), "", f"![success vs GMACs]({plot.name})", ""]
    atomic_write_text(out_dir / "report.md", "\n".join(md))
    return {"markdown": out_dir / "report.md", "csv": out_dir / "results.csv", "plot": plot}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2policy.report", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="summary.json files or folders searched for them")
    parser.add_argument("--out", required=True, help="folder for report.md, results.csv, success_vs_gmacs.png")
    parser.add_argument("--title", default="Policy comparison")
    args = parser.parse_args(argv)
    try:
        written = write_report(args.paths, args.out, args.title)
    except S2PolicyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(Path(written["markdown"]).read_text())
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
