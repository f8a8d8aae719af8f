"""Console scripts of the Hydra CLIs (pyproject's [project.scripts]); the other CLIs are argparse `main`s in their
own modules (envs.collect, s2policy.encoders, s2policy.report, s2policy.runtime, s2policy.runtime.export).

    s2policy-train task=lift dataset=demos.hdf5 s2.scales=[1,2]         # = python train_policy.py ...
    s2policy-evaluate checkpoint=outputs/run eval.episodes=50           # = python eval_policy.py ...
    s2policy-study --config-name quickstart                             # = python -m s2policy.study ...
    s2policy-train --config-dir my_configs task=my_task                 # user config folders, Hydra's way

A bad value fails before anything is written: one line "error: <key>=<value>: <what is allowed>", exit code 2.
"""

from __future__ import annotations

from pathlib import Path

from .config import EvalRun, StudyConfig, TrainRun
from .config.app import run_app


def train() -> None:
    def work(cfg: TrainRun) -> None:
        from .errors import S2PolicyError
        from .train import discard_unstarted_run_dir
        from .train import train as run_training

        try:
            print(f"policy: {run_training(cfg)}")
        except S2PolicyError:
            discard_unstarted_run_dir(cfg.out_dir)  # refused before training started: leave no run folder behind
            raise

    run_app("config", "train", work)


def evaluate() -> None:
    def work(cfg: EvalRun) -> None:
        from .evaluate.cli import evaluate_checkpoints

        evaluate_checkpoints(cfg.checkpoint, cfg.out_dir, cfg.eval, progress=cfg.progress)

    run_app("eval_policy", "eval", work)


def study() -> None:
    def work(cfg: StudyConfig) -> None:
        from .evaluate.cli import format_summary
        from .study import run_study

        written = run_study(cfg, on_result=lambda name, s: print(f"{name}: {format_summary(s)}"))
        print(Path(written["markdown"]).read_text())
        for kind, path in written.items():
            print(f"{kind}: {path}")

    run_app("study", "study", work)
