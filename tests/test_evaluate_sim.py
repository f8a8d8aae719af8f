"""Evaluation in the real simulator, through the real CLIs: 2 demos -> tiny random encoder trained a few steps ->
2 episodes in 2 worker processes -> report. Also: parallel layouts reproduce serial rollouts; bad checkpoints fail
with one clear error. Kept tiny (64 px frames, episodes capped at 12 steps): ~1 minute on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from s2policy.errors import CheckpointError

REPO = Path(__file__).resolve().parents[1]
MAX_STEPS = 12
pytestmark = [pytest.mark.slow, pytest.mark.simulator, pytest.mark.subprocess]  # rollouts, CLIs, env workers


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def check(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"{proc.args}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A policy trained through the real CLIs on 2 scripted lift demos (64 px, random tiny_cnn encoder)."""
    root = tmp_path_factory.mktemp("e2e")
    check(run_cli("-m", "envs.collect", "--task", "lift", "--num-demos", "2", "--output", str(root / "demos.hdf5"),
                  "--camera-size", "64", cwd=root))
    check(run_cli(str(REPO / "train_policy.py"), "experiment=smoke", f"dataset={root / 'demos.hdf5'}",
                  f"out_dir={root / 'run'}", "train.steps=10", "train.progress=false",
                  f"features.cache_dir={root / 'cache'}", cwd=root))
    return root / "run"


@pytest.fixture(scope="module")
def cli_eval(trained_run) -> tuple[Path, str]:
    """eval_policy.py on the trained run: 2 episodes in 2 env workers, the policy batched on the main process."""
    out = trained_run.parent / "eval"
    stdout = check(run_cli(str(REPO / "eval_policy.py"), f"checkpoint={trained_run}", "eval.episodes=2",
                           "eval.workers=2", "eval.policy_on=main", f"eval.max_steps={MAX_STEPS}", "eval.video=1",
                           f"out_dir={out}",
                           "progress=false", cwd=trained_run.parent))
    return out, stdout


def test_cli_end_to_end_writes_results_videos_and_report(cli_eval):
    from s2policy.evaluate import read_video_info

    out, stdout = cli_eval
    assert "success" in stdout and "95% CI" in stdout
    summary = json.loads((out / "summary.json").read_text())
    episodes = json.loads((out / "episodes.json").read_text())
    assert summary["success"]["episodes"] == 2 and summary["eval"]["first_seed"] >= 1_000_000
    assert summary["speed"]["mean_batch"] > 1  # both envs stepped under one policy call
    assert [e["index"] for e in episodes] == [0, 1]
    video = out / episodes[0]["video"]
    assert read_video_info(video)["frames"] == episodes[0]["length"] + 1  # reset frame + one per step
    assert episodes[1]["video"] is None
    report = check(run_cli("-m", "s2policy.report", str(out), "--out", str(out.parent / "report"), cwd=out.parent))
    assert "tiny_cnn S2 32+64" in report and (out.parent / "report" / "success_vs_gmacs.png").is_file()


def test_parallel_layouts_reproduce_serial_rollouts(trained_run, cli_eval):
    from s2policy.evaluate import EvalSettings, evaluate

    settings = dict(episodes=2, max_steps=MAX_STEPS)
    serial = evaluate(trained_run, trained_run.parent / "serial", EvalSettings(workers=0, **settings))
    workers = evaluate(trained_run, trained_run.parent / "workers",
                       EvalSettings(workers=2, policy_on="workers", **settings))
    default = evaluate(trained_run, trained_run.parent / "pipelined", EvalSettings(workers=2, **settings))
    assert default["eval"]["layout"] == "main-pipelined"  # policy_on=auto on a CPU with 2 workers
    load = lambda folder: json.loads((trained_run.parent / folder / "episodes.json").read_text())  # noqa: E731
    ser, wrk, pip, main = load("serial"), load("workers"), load("pipelined"), load(cli_eval[0].name)
    key = lambda eps: [(e["seed"], e["success"], e["length"]) for e in eps]  # noqa: E731
    # Per-worker policy copies and the two-thread pipeline with two envs (the default layout here) act one env per
    # policy call, exactly like serial: identical to the last digit.
    for eps in (wrk, pip):
        assert [e["final_object"] for e in eps] == [e["final_object"] for e in ser] and key(eps) == key(ser)
    # Batching two envs in one call changes float rounding (~1e-5) but not the outcome.
    assert key(main) == key(ser)
    np.testing.assert_allclose([e["final_object"] for e in main], [e["final_object"] for e in ser], atol=1e-3)
    assert serial["success"] == workers["success"]


def test_bad_checkpoints_give_one_clear_error(trained_run, tmp_path):
    from s2policy.evaluate import EvalSettings, evaluate

    proc = run_cli(str(REPO / "eval_policy.py"), f"checkpoint={tmp_path / 'nope'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: policy checkpoint not found")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes((trained_run / "policy.safetensors").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt.safetensors"):
        evaluate(corrupt, tmp_path / "out", EvalSettings(episodes=1, workers=0))
    with pytest.raises(CheckpointError, match="trained on task 'lift'.*asked for task 'can'"):
        evaluate(trained_run, tmp_path / "out", EvalSettings(episodes=1, workers=0, task="can"))
    assert not (tmp_path / "out").exists()  # nothing written for a refused evaluation


def test_study_runs_vision_and_camera_free_controls_and_publishes_raw_records(trained_run, tmp_path):
    """The study driver end to end on real lift demos: a tiny vision policy, the same with a spatial head, and the
    privileged control (no camera: the env renders nothing), each trained, evaluated, published (summary +
    per-episode records) and reported; a second run reuses every stage."""
    from s2policy.config import compose
    from s2policy.report import write_report
    from s2policy.study import run_study

    cfg = compose("study")
    assert cfg["configurations"]["privileged"] == ["encoder=none", "task.proprio_keys=[proprio,object]"]
    cfg.update(study_dir=str(tmp_path / "study"), publish_dir=str(tmp_path / "published"), progress=False,
               dataset=str(trained_run.parent / "demos.hdf5"), seeds=[0], only=["vision", "spatial", "privileged"],
               train_overrides=["train.steps=5", "train.progress=false", "train.tensorboard=false",
                                f"features.cache_dir={tmp_path / 'cache'}"])
    cfg["collect"]["camera_size"] = 64
    cfg["configurations"]["vision"] = ["encoder=tiny_cnn", "s2.scales=[1,2]"]
    # a configuration may pick its own head: the spatial head on the 64 px scale's grid
    cfg["configurations"]["spatial"] = ["encoder=tiny_cnn", "s2.scales=[1,2]", "policy=spatial",
                                        "policy.num_keypoints=4", "policy.hidden=[16]", "s2.resize_output_to_idx=-1"]
    cfg["eval"].update(episodes=2, workers=0, max_steps=MAX_STEPS, video=1)
    run_study(cfg)
    published = tmp_path / "published"
    for name in ("vision", "spatial", "privileged"):
        summary = json.loads((published / name / "seed0" / "summary.json").read_text())
        assert summary["success"]["episodes"] == 2
        assert len(json.loads((published / name / "seed0" / "episodes.json").read_text())) == 2
    privileged = json.loads((published / "privileged" / "seed0" / "summary.json").read_text())
    assert privileged["policy"]["cameras"] == [] and privileged["cost"] == {**privileged["cost"], "encoder_params": 0,
                                                                            "gmacs_per_frame": 0.0}
    assert not (tmp_path / "study" / "runs" / "privileged" / "seed0" / "eval" / "videos").exists()
    # the published records alone regenerate the table
    rows = write_report([published], tmp_path / "report")["csv"].read_text()
    assert "no image: proprio+object" in rows and "tiny_cnn S2 32+64, mlp head" in rows
    assert "tiny_cnn S2 32+64, spatial head (64 grid)" in rows
    stages = json.loads((published / "stages.json").read_text())
    run_study(cfg)  # everything is reused
    again = json.loads((tmp_path / "study" / "stages.json").read_text())
    assert again["train privileged seed0"]["reused"] and again["eval vision seed0"]["reused"]
    assert stages["eval vision seed0"]["reused"] is False


def test_onnx_backbone_is_refused_where_the_policy_does_not_run_on_this_cpu(trained_run, tmp_path):
    from s2policy.errors import ConfigError
    from s2policy.evaluate import EvalSettings, evaluate

    with pytest.raises(ConfigError, match=r"eval.backbone=onnx runs the policy on this process's CPU"):
        evaluate(trained_run, tmp_path / "eval", EvalSettings(episodes=1, workers=1, policy_on="workers",
                                                              backbone="onnx"))
    assert not (tmp_path / "eval").exists()  # refused before any rollout or file
