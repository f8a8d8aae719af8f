"""Comparison report over evaluated runs: a Markdown + CSV table, success-vs-compute and -latency plots.

Runs are pooled per configuration (task, encoder, weights, S2 image sizes, camera size, cameras, head, inputs,
env variation): successes and episodes of every training seed are summed and one Wilson interval is computed on the
pooled counts; per-seed rates are listed beside it so between-seed spread stays visible.

    python -m s2policy.report runs/ --out reports/lift [--title "Lift: base vs S2 vs larger backbone"]
    python -m s2policy.report results/v2/twin_m12 --out docs/results_v2 --compare base_s2:larger base_s2:base \
        --latency results/v2/latency.json        # differences with intervals; latency measured apart

A stages.json of the study driver at or below a given folder adds each stage's wall time per configuration.

A run's study configuration ("arm") is read from the study driver's layout, .../<arm>/seed<k>/<policy file>.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Callable, Iterable, Mapping, Sequence

from .errors import S2PolicyError
from .evaluate.evaluator import EPISODES_FILE, SUMMARY_FILE, SUMMARY_FORMAT
from .evaluate.stats import SuccessRate, difference_interval
from .fileio import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

CSV_FIELDS = ["task", "configuration", "encoder", "weights", "img_sizes", "camera_size", "head", "inputs",
              "variation", "encoder_params_m", "gmacs_per_frame", "seeds", "runs", "episodes", "successes",
              "success_rate", "ci_low", "ci_high", "per_seed", "policy_ms_per_step", "mean_length"]


OUTCOMES_KEY = "_outcomes"  # added to a loaded summary: outcome counts of its episodes.json


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
    latency_ms: float | None = None  # policy ms per step measured apart (report --latency), else the evals' mean

    @property
    def outcomes(self) -> dict[str, int]:
        """Task-specific outcome counts over every episode (envs.detail_tasks.outcome; {} for tasks without)."""
        counts: dict[str, int] = {}
        for r in self.runs:
            for name, n in r.get(OUTCOMES_KEY, {}).items():
                counts[name] = counts.get(name, 0) + n
        return counts

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

    @property
    def arms(self) -> list[str]:
        """The study configuration names (study_arm) of this configuration's runs, first-seen order."""
        return list(dict.fromkeys(a for a in map(study_arm, self.runs) if a))

    @property
    def policy_ms(self) -> float:
        """Policy milliseconds per control step: measured apart when given, else the mean over the evaluations."""
        return self.latency_ms if self.latency_ms is not None else self.mean_of("speed", "policy_ms_per_env_step")

    def mean_of(self, *keys: str) -> float:
        values = []
        for r in self.runs:
            v: Any = r
            for k in keys:
                v = v[k]
            values.append(float(v))
        return sum(values) / len(values)


def study_arm(summary: dict) -> str | None:
    """The study configuration a run belongs to, from the study driver's layout .../<arm>/seed<k>/<policy file>;
    None for a checkpoint stored elsewhere."""
    folder = PurePath(summary["checkpoint"].replace("\\", "/")).parent
    return folder.parent.name if re.fullmatch(r"seed\d+", folder.name) else None


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
    """An evaluation summary, with the outcome counts of the episodes.json beside it when it has one."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: unreadable evaluation summary: {e}") from e
    if not isinstance(summary, dict) or summary.get("format") != SUMMARY_FORMAT:
        raise ReportError(f"{path}: not an s2policy evaluation summary (expected format {SUMMARY_FORMAT!r})")
    episodes = path.parent / EPISODES_FILE
    if episodes.is_file():
        try:
            summary[OUTCOMES_KEY] = count_outcomes(summary["task"], json.loads(episodes.read_text()))
        except (OSError, ValueError, TypeError, KeyError, IndexError) as e:
            raise ReportError(f"{episodes}: unreadable per-episode record: {e!r}") from e
    return summary


def count_outcomes(task: str, episodes: Sequence[dict]) -> dict[str, int]:
    """How many episodes ended in each of the task's outcomes (envs.detail_tasks.outcome on the final object
    state); {} for tasks that define none or records without final object states."""
    from envs.detail_tasks import outcome  # needs no simulator

    counts: dict[str, int] = {}
    for episode in episodes:
        if episode.get("final_object") is not None:
            for name, hit in outcome(task, episode["final_object"]).items():
                counts[name] = counts.get(name, 0) + int(hit)
    return counts


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
            "policy_ms_per_step": round(c.policy_ms, 2),
            "mean_length": round(c.mean_of("mean_length"), 1),
            **({"outcomes": _outcomes_text(c)} if any(x.outcomes for x in configs) else {}),
        })
    return rows


def markdown_table(configs: Sequence[Configuration]) -> str:
    """One row per configuration; an Outcomes column (task-specific episode outcomes) when any run has one."""
    with_outcomes = any(c.outcomes for c in configs)
    lines = ["| Task | Configuration | Encoder params (M) | GMACs / frame | Seeds | Episodes | Success % [95% CI] "
             "| Per seed | Policy ms / step |" + (" Outcomes |" if with_outcomes else ""),
             "|---|---|---:|---:|---:|---:|---|---|---:|" + ("---|" if with_outcomes else "")]
    for c in configs:
        rate = c.pooled
        low, high = rate.interval
        per_seed = ", ".join(f"{_pct(r.rate)}" for r in c.per_seed().values())
        lines.append(f"| {c.task} | {c.label} | {c.encoder_params / 1e6:.3g} | {c.gmacs_per_frame:.3g} "
                     f"| {len(c.per_seed())} | {rate.trials} | **{_pct(rate.rate)}** [{_pct(low)}, {_pct(high)}] "
                     f"| {per_seed} | {c.policy_ms:.1f} |" + (f" {_outcomes_text(c)} |" if with_outcomes else ""))
    return "\n".join(lines)


def _outcomes_text(c: Configuration) -> str:
    return "; ".join(f"{name} {n}/{c.pooled.trials}" for name, n in sorted(c.outcomes.items())) or "-"


def plot_success_vs_gmacs(configs: Sequence[Configuration], path: Path, title: str) -> Path:
    """One point per configuration: pooled success rate with its Wilson interval against GMACs per frame."""
    return _plot_success(configs, path, title, lambda c: c.gmacs_per_frame,
                         "encoder GMACs per frame (all scales and cameras)")


def plot_success_vs_latency(configs: Sequence[Configuration], path: Path, title: str) -> Path:
    """One point per configuration: pooled success rate with its Wilson interval against policy ms per step."""
    return _plot_success(configs, path, title, lambda c: c.policy_ms, "policy ms per control step")


def _plot_success(configs: Sequence[Configuration], path: Path, title: str, x_of: Callable[[Configuration], float],
                  xlabel: str) -> Path:
    """Success with its Wilson interval against `x_of(configuration)`, one panel per task; image-free controls
    (no encoder pass) are a reference band, not a point. The marker tells the head (circle: pooled mlp, square:
    anything else) and the legend sits below the axes, where it can hide no point. A log axis when x spans more
    than 8x."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(c.task for c in configs)) or [""]
    rows = max(sum(c.task == t for c in configs) for t in tasks) if configs else 0  # legend entries below a panel
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.4 * len(tasks), 4.4 + 0.19 * rows), dpi=120, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        mine = [c for c in configs if c.task == task]
        for i, c in enumerate(mine):
            rate = c.pooled
            low, high = rate.interval
            y = 100 * rate.rate
            if not c.cameras:
                colour = f"C{i}"
                ax.axhline(y, color=colour, linestyle="--", linewidth=1, label=c.label)
                ax.axhspan(100 * low, 100 * high, color=colour, alpha=0.08)
                continue
            ax.errorbar([x_of(c)], [y], yerr=[[y - 100 * low], [100 * high - y]], fmt="o" if c.head == "mlp" else "s",
                        capsize=4, color=f"C{i}", label=c.label)
        xs = [x_of(c) for c in mine if c.cameras]
        if xs and min(xs) > 0 and max(xs) / min(xs) > 8:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("success rate (%), Wilson 95% interval")
        ax.set_ylim(-2, 102)
        ax.set_title(f"{title}: {task}" if len(tasks) > 1 else title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def differences(configs: Sequence[Configuration], pairs: Sequence[tuple[str, str]]) -> list[dict]:
    """For each (arm a, arm b) of the same task: both pooled rates and a - b with Newcombe's 95% interval, and the
    same interval Bonferroni-adjusted over the task's m comparisons (confidence 1 - 0.05 / m): among m intervals
    one excludes zero by chance far more often than 5% of the time, and the adjusted ones hold jointly.
    Arms are study configuration names (study_arm); an unknown one is a ReportError naming the known ones."""
    by_arm: dict[str, list[Configuration]] = {}
    for c in configs:
        for arm in c.arms:
            by_arm.setdefault(arm, []).append(c)
    rows = []
    for a, b in pairs:
        for arm in (a, b):
            if arm not in by_arm:
                raise ReportError(f"--compare {a}:{b}: no runs of study configuration {arm!r}; found: "
                                  f"{', '.join(sorted(by_arm)) or 'none (runs outside a study layout)'}")
        for ca in by_arm[a]:
            for cb in (c for c in by_arm[b] if c.task == ca.task):
                ra, rb = ca.pooled, cb.pooled
                low, high = difference_interval(ra.successes, ra.trials, rb.successes, rb.trials)
                rows.append({"task": ca.task, "a": a, "b": b, "a_label": ca.label, "b_label": cb.label,
                             "a_successes": ra.successes, "a_episodes": ra.trials,
                             "b_successes": rb.successes, "b_episodes": rb.trials,
                             "difference": round(ra.rate - rb.rate, 4), "ci_low": round(low, 4),
                             "ci_high": round(high, 4)})
    per_task = Counter(r["task"] for r in rows)
    for r in rows:
        m = per_task[r["task"]]
        low, high = difference_interval(r["a_successes"], r["a_episodes"], r["b_successes"], r["b_episodes"],
                                        confidence=1 - 0.05 / m)
        r.update(comparisons=m, adjusted_low=round(low, 4), adjusted_high=round(high, 4))
    return rows


def differences_table(rows: Sequence[dict]) -> str:
    lines = ["| Task | A | B | A success | B success | A - B, points [95% CI] | Bonferroni-adjusted (m) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['a']} | {r['b']} | {r['a_successes']}/{r['a_episodes']} "
                     f"| {r['b_successes']}/{r['b_episodes']} | **{100 * r['difference']:+.1f}** "
                     f"[{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}] "
                     f"| [{100 * r['adjusted_low']:+.1f}, {100 * r['adjusted_high']:+.1f}] ({r['comparisons']}) |")
    return "\n".join(lines)


STAGE_NAME = re.compile(r"(train|eval) (\S+) seed(\d+)")


def stage_times(paths: Iterable[str | Path]) -> list[dict]:
    """Wall time per (task, study configuration): seconds of each seed's training and evaluation, from the study
    driver's stages.json files found at or below `paths` (a study's publish_dir holds one beside its runs; the task
    is that of the runs below it). A stage that was reused keeps the time it took when it ran."""
    rows: dict[tuple[str, str], dict] = {}
    for p in map(Path, paths):
        for stages_file in ([p] if p.is_file() else sorted(p.rglob("stages.json")) if p.is_dir() else []):
            if stages_file.name != "stages.json":
                continue
            tasks = {load_summary(f)["task"] for f in find_summaries([stages_file.parent])}
            if len(tasks) != 1:
                continue  # a stage log without runs below it (or of several tasks) cannot be attributed
            try:
                stages = json.loads(stages_file.read_text())
                entries = [(m, float(v["seconds"])) for name, v in stages.items()
                           if (m := STAGE_NAME.fullmatch(name)) and "seconds" in v]
            except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
                raise ReportError(f"{stages_file}: not a study stage log: {e!r}") from e
            for m, seconds in entries:
                kind, arm, seed = m.group(1), m.group(2), int(m.group(3))
                row = rows.setdefault((next(iter(tasks)), arm), {"train": {}, "eval": {}})
                row[kind][seed] = seconds
    return [{"task": task, "arm": arm, **row} for (task, arm), row in rows.items()]


def stage_times_table(rows: Sequence[dict]) -> str:
    lines = ["| Task | Configuration | Train, min per seed | Evaluate, min per seed | Total, min |",
             "|---|---|---|---|---:|"]
    for r in rows:
        per_seed = {k: ", ".join(f"{r[k][s] / 60:.1f}" for s in sorted(r[k])) or "-" for k in ("train", "eval")}
        total = (sum(r["train"].values()) + sum(r["eval"].values())) / 60
        lines.append(f"| {r['task']} | {r['arm']} | {per_seed['train']} | {per_seed['eval']} | {total:.0f} |")
    for task in dict.fromkeys(r["task"] for r in rows):
        total = sum(sum(r["train"].values()) + sum(r["eval"].values()) for r in rows if r["task"] == task) / 3600
        lines.append(f"| {task} | **all** | | | **{total:.1f} h** |")
    return "\n".join(lines)


def write_report(paths: Iterable[str | Path], out_dir: str | Path, title: str = "Policy comparison",
                 compare: Sequence[tuple[str, str]] = (), latency: Mapping[tuple[str, str], float] | None = None,
                 ) -> dict[str, Path]:
    """Read every evaluation summary under `paths`, pool per configuration, and write report.md, results.csv,
    success_vs_gmacs.png and success_vs_latency.png into `out_dir` (+ differences.csv with `compare`: pairs of study
    configuration names). `latency` maps (task, study configuration) to policy ms per step measured apart
    (read_latency); without it the table uses the evaluations' own mean. Returns the written paths."""
    files = find_summaries(paths)
    if not files:
        raise ReportError(f"no {SUMMARY_FILE} found under {[str(p) for p in paths]}")
    configs = pool_runs([load_summary(f) for f in files])
    for c in configs:
        measured = [latency[(c.task, arm)] for arm in c.arms if (c.task, arm) in (latency or {})]
        c.latency_ms = measured[0] if measured else None
    diffs = differences(configs, compare)  # unknown arms fail before anything is written
    times = stage_times(paths)
    out_dir = Path(out_dir)
    written = {"markdown": out_dir / "report.md", "csv": out_dir / "results.csv"}
    rows = csv_rows(configs)
    atomic_write_text(written["csv"], _csv_text(rows, CSV_FIELDS + (["outcomes"] if "outcomes" in rows[0] else [])))
    written["plot"] = plot_success_vs_gmacs(configs, out_dir / "success_vs_gmacs.png", title)
    written["latency_plot"] = plot_success_vs_latency(configs, out_dir / "success_vs_latency.png", title)
    runs = sum(len(c.runs) for c in configs)
    source = ("measured apart on one thread (report --latency)" if latency
              else "the mean over the evaluations (on the evaluation machine, under its load)")
    md = [f"# {title}", "",
          f"{runs} evaluated runs in {len(configs)} configurations. Success is pooled over training seeds "
          "(successes and episodes summed) with a Wilson 95% interval; 'Per seed' lists each seed's rate. "
          "GMACs are counted encoder multiply-accumulates per control step (every S2 crop, every camera). "
          f"Policy ms per step: {source}."
          + (" Outcomes: task-specific ends of the episodes, from their final object states (envs/detail_tasks.py)."
             if any(c.outcomes for c in configs) else ""), "",
          markdown_table(configs), ""]
    if diffs:
        written["differences"] = out_dir / "differences.csv"
        atomic_write_text(written["differences"], _csv_text(diffs, list(diffs[0])))
        md += ["Differences between study configurations, pooled over seeds, with Newcombe's 95% interval "
               "(hybrid Wilson score) and the same interval Bonferroni-adjusted over the task's m comparisons "
               "(confidence 1 - 0.05/m; these hold jointly, so an effect whose adjusted interval excludes zero is "
               "not one lucky comparison of many):", "", differences_table(diffs), ""]
    if times:
        written["stage_times"] = out_dir / "stage_times.csv"
        atomic_write_text(written["stage_times"], _csv_text(
            [{"task": r["task"], "configuration": r["arm"], "stage": k, "seed": seed, "seconds": sec}
             for r in times for k in ("train", "eval") for seed, sec in sorted(r[k].items())],
            ["task", "configuration", "stage", "seed", "seconds"]))
        md += ["Wall time of each study stage, from the study driver's stages.json (on the machine and under the "
               "load they ran with). The first training of an encoder input includes extracting its cached "
               "features, which later seeds reuse.", "", stage_times_table(times), ""]
    md += [f"![success vs GMACs]({written['plot'].name})", "",
           f"![success vs latency]({written['latency_plot'].name})", ""]
    atomic_write_text(written["markdown"], "\n".join(md))
    return written


def _csv_text(rows: Sequence[dict], fields: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def read_latency(path: str | Path) -> dict[tuple[str, str], float]:
    """(task, study configuration) -> policy ms per step, from benchmarks/policy_latency.py's JSON
    ({"results": [{"task", "arm", "policy_ms_p50", ...}, ...]})."""
    try:
        data = json.loads(Path(path).read_text())
        return {(r["task"], r["arm"]): float(r["policy_ms_p50"]) for r in data["results"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ReportError(f"{path}: not a policy latency record (benchmarks/policy_latency.py): {e!r}") from e


def _pair(text: str) -> tuple[str, str]:
    a, sep, b = text.partition(":")
    if not (sep and a and b):
        raise argparse.ArgumentTypeError(f"expected A:B (two study configuration names), got {text!r}")
    return a, b


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2policy.report", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="summary.json files or folders searched for them")
    parser.add_argument("--out", required=True, help="folder for report.md, results.csv and the plots")
    parser.add_argument("--title", default="Policy comparison")
    parser.add_argument("--compare", nargs="*", type=_pair, default=[], metavar="A:B",
                        help="study configuration pairs, e.g. base_s2:larger: success difference with its interval")
    parser.add_argument("--latency", help="policy ms per step measured apart (benchmarks/policy_latency.py JSON)")
    args = parser.parse_args(argv)
    try:
        latency = read_latency(args.latency) if args.latency else None
        written = write_report(args.paths, args.out, args.title, args.compare, latency)
    except S2PolicyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(Path(written["markdown"]).read_text())
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
