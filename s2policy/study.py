"""The encoder study for one task: dataset -> (configuration x training seed) train -> evaluate -> report.

Every stage reuses its output when it exists -- the dataset file, feature caches (keyed by the trainer), final policy
files (an unfinished training run is resumed), evaluations whose summary matches the requested settings -- so
re-running the same command after an interruption continues where it stopped. Stage wall times are recorded in
<study_dir>/stages.json.

    s2policy-study task=lift seeds=[0,1,2]        # = python -m s2policy.study; config: configs/study.yaml
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .config import StudyConfig, TrainRun, compose, load
from .data.collect import ensure_dataset
from .evaluate import EPISODES_FILE, SUMMARY_FILE, EvalSettings, evaluate, resolve_policy_file
from .evaluate.provenance import file_sha256
from .fileio import atomic_write_text
from .run_folder import POLICY_FILE, TRAIN_STATE_FILE

log = logging.getLogger(__name__)


class StageLog:
    """Wall time and outcome of each stage, kept in <study_dir>/stages.json across runs of the study."""

    def __init__(self, path: Path):
        self.path = path
        self.stages: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}

    def run(self, name: str, done: Callable[[], bool], work: Callable[[], Any]) -> None:
        if done():
            log.info("%s: reusing existing output", name)
            self.stages.setdefault(name, {})["reused"] = True
        else:
            log.info("%s: running", name)
            start = time.perf_counter()
            work()
            self.stages[name] = {"seconds": round(time.perf_counter() - start, 1), "reused": False,
                                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_text(self.path, json.dumps(self.stages, indent=1) + "\n")


def compose_train_config(overrides: Sequence[str]) -> TrainRun:
    """The typed run config train_policy.py would build from `overrides` (configs/config.yaml + groups)."""
    return load(TrainRun, compose("config", overrides))


def evaluation_matches(summary_path: Path, policy_file: Path, settings: EvalSettings) -> bool:
    """True when `summary_path` evaluated this very policy file with the same episodes, seeds and limits."""
    if not summary_path.is_file():
        return False
    try:
        summary = json.loads(summary_path.read_text())
        ev = summary["eval"]
        return (summary["checkpoint_sha256"] == file_sha256(policy_file) and ev["episodes"] == settings.episodes
                and ev["seed"] == settings.seed and ev["max_steps"] == (settings.max_steps or ev["max_steps"]))
    except (ValueError, KeyError, TypeError):
        return False


def run_study(cfg: StudyConfig | Mapping[str, Any], on_result: Callable[[str, dict], None] | None = None,
              ) -> dict[str, Path]:
    """Run (or continue) the study described by `cfg` (a StudyConfig, or configs/study.yaml composed as a dict);
    returns the report paths. `on_result(run name, summary)` sees each run's evaluation; `cfg.progress` shows
    progress bars."""
    from .report import write_report

    cfg = load(StudyConfig, cfg)
    study_dir = Path(cfg.study_dir)
    # a given dataset must exist (checked before anything is written); else the study's own demos, collected once
    dataset = ensure_dataset(cfg.dataset, study_dir / "demos.hdf5", cfg.task, cfg.collect, collect_here=False)
    study_dir.mkdir(parents=True, exist_ok=True)
    stages = StageLog(study_dir / "stages.json")
    if not cfg.dataset:
        stages.run("collect", dataset.is_file,
                   lambda: ensure_dataset(None, dataset, cfg.task, cfg.collect, progress=cfg.progress))
    task = cfg.task.name
    settings = replace(cfg.eval, dataset=str(dataset), task=task)
    evaluations = []
    # seed-major: a study cut short leaves every configuration with the same complete seeds, not some with all
    for seed in cfg.seeds:
        for name in cfg.only or list(cfg.configurations):
            overrides = cfg.configurations[name]
            run_dir = study_dir / "runs" / name / f"seed{seed}"
            train_overrides = [f"task={task}", f"dataset={dataset}", f"policy={cfg.policy.name}",
                               f"seed={seed}", f"out_dir={run_dir}",
                               # one frame size for every configuration (stored, or re-rendered from a given dataset)
                               f"task.camera_size={cfg.collect.camera_size}",
                               *overrides, *cfg.train_overrides]
            _train_stage(f"train {name} seed{seed}", run_dir, train_overrides, stages)
            policy_file = resolve_policy_file(run_dir)
            out = run_dir / "eval"
            stages.run(f"eval {name} seed{seed}", lambda: evaluation_matches(out / SUMMARY_FILE, policy_file, settings),
                       lambda: _evaluate_with_progress(policy_file, out, settings, f"eval {name} seed{seed}",
                                                       cfg.progress))
            evaluations.append(out)
            if cfg.publish_dir:
                publish_evaluation(out, Path(cfg.publish_dir) / name / f"seed{seed}")
            if on_result is not None:
                on_result(f"{name} seed{seed}", json.loads((out / SUMMARY_FILE).read_text()))
    title = cfg.report_title or f"{task}: base vs base + S2 vs larger backbone"
    written: dict[str, Path] = {}
    stages.run("report", lambda: False,
               lambda: written.update(write_report(evaluations, study_dir / "report", title, cfg.compare_pairs())))
    if cfg.publish_dir:
        atomic_write_text(Path(cfg.publish_dir) / "stages.json", stages.path.read_text())
    return written


def publish_evaluation(eval_dir: Path, dest: Path) -> None:
    """Copy one run's evaluation record (summary + per-episode results, a few kB) to `dest`, e.g. a folder kept
    in git, so the report can be regenerated without the checkpoints, features or videos."""
    for name in (SUMMARY_FILE, EPISODES_FILE):
        atomic_write_text(dest / name, (eval_dir / name).read_text())


def _evaluate_with_progress(policy_file: Path, out: Path, settings: EvalSettings, desc: str, progress: bool) -> None:
    from .evaluate.cli import episode_progress

    bar, update = episode_progress(settings.episodes, desc, progress)
    try:
        evaluate(policy_file, out, settings, on_episode=update)
    finally:
        bar.close()


def _train_stage(name: str, run_dir: Path, overrides: list[str], stages: StageLog) -> None:
    from .train import train

    def work() -> None:
        resume = (run_dir / TRAIN_STATE_FILE).is_file()  # an interrupted run continues from its last checkpoint
        train(compose_train_config([*overrides, f"resume={str(resume).lower()}"]))

    stages.run(name, (run_dir / POLICY_FILE).is_file, work)


if __name__ == "__main__":
    from .cli import study

    study()
