"""The encoder study for one task: dataset -> (configuration x training seed) train -> evaluate -> report.

Every stage reuses its output when it exists -- the dataset file, feature caches (keyed by the trainer), final policy
files (an unfinished training run is resumed), evaluations whose summary matches the requested settings -- so
re-running the same command after an interruption continues where it stopped. Stage wall times are recorded in
<study_dir>/stages.json. With `backend=ray` each (configuration x seed) run is one Ray task (same stages, same
reuse); this process collects the demos, records the stages and writes the report.

    s2policy-study task=lift seeds=[0,1,2]        # = python -m s2policy.study; config: configs/study.yaml
    s2policy-study task=lift backend=ray eval.ray_address=auto     # the runs as tasks on a running Ray cluster
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .config import StudyConfig, TrainRun, compose, load
from .data.collect import ensure_dataset
from .evaluate import EPISODES_FILE, SUMMARY_FILE, EvalSettings, evaluate, resolve_policy_file
from .evaluate.provenance import file_sha256
from .fileio import atomic_write_text
from .logs import log_to_stderr
from .run_folder import POLICY_FILE, TRAIN_STATE_FILE

log = logging.getLogger(__name__)


def run_stage(name: str, done: Callable[[], bool], work: Callable[[], Any]) -> dict[str, Any]:
    """Run `work` unless `done()` says its output exists; the stage's record (wall time, or reused)."""
    if done():
        log.info("%s: reusing existing output", name)
        return {"reused": True}
    log.info("%s: running", name)
    start = time.perf_counter()
    work()
    return {"seconds": round(time.perf_counter() - start, 1), "reused": False,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}


class StageLog:
    """Wall time and outcome of each stage, kept in <study_dir>/stages.json across runs of the study."""

    def __init__(self, path: Path):
        self.path = path
        self.stages: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}

    def run(self, name: str, done: Callable[[], bool], work: Callable[[], Any]) -> None:
        self.record(name, run_stage(name, done, work))

    def record(self, name: str, entry: dict[str, Any]) -> None:
        """Keep a stage's record (a reused stage keeps the time it took when it ran) and rewrite the file."""
        if entry["reused"]:
            self.stages.setdefault(name, {})["reused"] = True
        else:
            self.stages[name] = entry
        atomic_write_text(self.path, json.dumps(self.stages, indent=1) + "\n")


@dataclass(frozen=True)
class StudyRun:
    """One (configuration x training seed) run: trained into run_dir, evaluated into run_dir/eval."""

    name: str
    seed: int
    run_dir: Path
    train_overrides: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.name} seed{self.seed}"


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
    # seed-major: a study cut short leaves every configuration with the same complete seeds, not some with all
    runs = [StudyRun(name, seed, study_dir / "runs" / name / f"seed{seed}",
                     (f"task={task}", f"dataset={dataset}", f"policy={cfg.policy.name}", f"seed={seed}",
                      f"out_dir={study_dir / 'runs' / name / f'seed{seed}'}",
                      # one frame size for every configuration (stored, or re-rendered from a given dataset)
                      f"task.camera_size={cfg.collect.camera_size}",
                      *cfg.configurations[name], *cfg.train_overrides))
            for seed in cfg.seeds for name in cfg.only or list(cfg.configurations)]

    def finished(run: StudyRun) -> None:
        out = run.run_dir / "eval"
        if cfg.publish_dir:
            publish_evaluation(out, Path(cfg.publish_dir) / run.name / f"seed{run.seed}")
        if on_result is not None:
            on_result(run.label, json.loads((out / SUMMARY_FILE).read_text()))

    if cfg.backend == "ray":
        run_on_ray(runs, settings, stages, finished)
    else:
        for run in runs:
            run_one(run, settings, cfg.progress, stages.record)
            finished(run)
    evaluations = [run.run_dir / "eval" for run in runs]
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


def run_one(run: StudyRun, settings: EvalSettings, progress: bool,
            on_stage: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, dict[str, Any]]:
    """Train (resume, or reuse) and evaluate (or reuse) one run; returns its stage records, each also passed to
    `on_stage(name, record)` as soon as that stage ends."""
    from .evaluate.cli import episode_progress
    from .train import train

    records: dict[str, dict[str, Any]] = {}

    def stage(name: str, done: Callable[[], bool], work: Callable[[], Any]) -> None:
        records[name] = run_stage(name, done, work)
        if on_stage is not None:
            on_stage(name, records[name])

    def train_run() -> None:
        resume = (run.run_dir / TRAIN_STATE_FILE).is_file()  # an interrupted run continues from its last checkpoint
        train(compose_train_config([*run.train_overrides, f"resume={str(resume).lower()}"]))

    def evaluate_run() -> None:
        bar, update = episode_progress(settings.episodes, f"eval {run.label}", progress)
        try:
            evaluate(policy_file, out, settings, on_episode=update)
        finally:
            bar.close()

    stage(f"train {run.label}", (run.run_dir / POLICY_FILE).is_file, train_run)
    policy_file = resolve_policy_file(run.run_dir)
    out = run.run_dir / "eval"
    stage(f"eval {run.label}", lambda: evaluation_matches(out / SUMMARY_FILE, policy_file, settings), evaluate_run)
    return records


@contextlib.contextmanager
def working_directory(path: str) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _run_one_in_task(run: StudyRun, settings: EvalSettings, cwd: str) -> dict[str, dict[str, Any]]:
    """A Ray task's body: one run from the driver's working directory (the study's relative paths then name the
    same files as they would locally: the folder must be on storage every node mounts at the same path)."""
    log_to_stderr(logging.INFO, "%(levelname)s:%(name)s:%(message)s")
    with working_directory(cwd):
        return run_one(run, settings, progress=False)


def run_on_ray(runs: Sequence[StudyRun], settings: EvalSettings, stages: StageLog,
               finished: Callable[[StudyRun], None]) -> None:
    """Every run as one Ray task, submitted at once in seed-major order; each one's stages are recorded and
    `finished(run)` called as it completes. The first failing task's error is raised once the others have ended
    (their finished stages stay recorded and are reused by the next run of the study)."""
    from .evaluate.ray_backend import connect, unwrap

    ray = connect(settings.ray_address)
    gpus = 1 if float(ray.cluster_resources().get("GPU", 0)) >= 1 else 0
    # a run trains, then evaluates with settings.workers env processes of its own on its node
    task = ray.remote(num_cpus=max(1, settings.workers), num_gpus=gpus, max_retries=0)(_run_one_in_task)
    pending = {task.remote(run, settings, os.getcwd()): run for run in runs}
    log.info("submitted %d runs as Ray tasks", len(pending))
    error: BaseException | None = None
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        run = pending.pop(done[0])
        try:
            records = unwrap(ray, done[0], f"the Ray task of {run.label}")
        except Exception as e:  # the other runs go on; the first error is raised at the end
            log.error("%s failed: %s", run.label, e)
            error = error or e
            continue
        for name, entry in records.items():
            stages.record(name, entry)
        finished(run)
    if error is not None:
        raise error


if __name__ == "__main__":
    from .cli import study

    study()
