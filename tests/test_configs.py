"""Typed configs: every shipped YAML composes into its dataclass, bad values give one line naming key, value and
what is allowed (exit code 2 from the CLIs, nothing written), user config folders work, defaults live once."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from s2policy.config import (EvalRun, EvalSettings, HeadConfig, StudyConfig, TrainRun, compose, config_dir,
                             defaults_dict, load, to_dict)
from s2policy.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

BAD_TRAIN_VALUES = {
    "train.steps=-3": "train.steps=-3: must be >= 1",
    "train.batch_size=0": "train.batch_size=0: must be >= 1",
    "train.lr=0": "train.lr=0.0: must be > 0",
    "train.ema_decay=1.0": "train.ema_decay=1.0: must be >= 0 and < 1",
    "train.steps=abc": 'train.steps="abc": expected an integer',
    "train.cpu_threads=many": 'train.cpu_threads="many": expected auto, a positive integer or null',
    "encoder.name=resnet9000": 'encoder.name="resnet9000": expected one of clip_vitb16, clip_vitl14, dinov2_vitb14',
    "policy.execution=sometimes": 'policy.execution="sometimes": expected one of receding, ensemble',
    "features.dtype=int8": 'features.dtype="int8": expected one of float16, float32',
    "precision=fp8": 'precision="fp8": expected one of auto, fp32, bf16, fp16',
    "task.cameras=[]": "task.cameras=[]: a policy without cameras sees no image: use encoder=none",
    "task.camera_size=100": "task.camera_size=100: must be >= encoder efficientnet_lite0's native input size 224",
    "s2.scales=[1,1.5]": "s2.scales=[1, 1.5]: every size must be a multiple of encoder efficientnet_lite0's native",
    "train.stepz=3": "train.stepz=3: no such option in train",
    "encoder=resnet9000": "encoder=resnet9000: no such encoder config; allowed: clip_vitb16,",
}


@pytest.mark.parametrize("override", sorted(BAD_TRAIN_VALUES))
def test_bad_train_values_give_one_line_naming_key_value_and_what_is_allowed(override):
    with pytest.raises(ConfigError) as e:
        load(TrainRun, compose("config", [override]))
    assert str(e.value).startswith(BAD_TRAIN_VALUES[override]) and "\n" not in str(e.value)


def test_head_options_are_checked_against_the_head_itself():
    with pytest.raises(ConfigError, match=r'^policy.layers=2: unknown option of head mlp; it has hidden$'):
        load(TrainRun, {"policy": {"name": "mlp", "layers": 2}})
    with pytest.raises(ConfigError, match=r"^policy.n_action_steps=9: must be <= policy.horizon=4$"):
        load(TrainRun, compose("config", ["policy=transformer", "policy.horizon=4", "policy.n_action_steps=9"]))


def test_batch_size_must_split_over_the_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ConfigError, match=r"^train.batch_size=256: must be divisible by the 3 processes$"):
        load(TrainRun, {})


def test_every_shipped_config_composes_into_its_typed_config():
    folder = config_dir()
    assert folder == REPO / "configs"  # a source checkout reads the top-level folder: the one copy
    typed = {"config": TrainRun, "eval_policy": EvalRun}
    for path in sorted(folder.glob("*.yaml")):
        cls = typed.get(path.stem, StudyConfig)
        overrides = ["checkpoint=x"] if cls is EvalRun else []
        assert isinstance(load(cls, compose(path.stem, overrides)), cls), path
    for group in ("task", "encoder", "policy"):
        for path in sorted((folder / group).glob("*.yaml")):
            run = load(TrainRun, compose("config", [f"{group}={path.stem}", "task.camera_size=null"]))
            assert getattr(run, group).name == path.stem, path


def test_python_api_and_cli_share_defaults_and_round_trip():
    """A partial dict takes the same defaults the CLI composes, and to_dict/load round-trips."""
    cli = load(TrainRun, compose("config"))
    api = load(TrainRun, {"policy": {"name": "mlp", "hidden": [256, 256], "n_action_steps": 1}})
    assert api == cli
    assert load(TrainRun, to_dict(cli)) == cli
    assert load(TrainRun, {"dataset": Path("demos.hdf5"), "s2": {"scales": (1, 2)}}).dataset == "demos.hdf5"
    assert cli.out_dir == "outputs/lift_efficientnet_lite0_mlp_seed0"
    assert to_dict(cli)["policy"] == {"name": "mlp", "execution": "receding", "n_action_steps": 1,
                                      "ensemble_decay": 0.01, "hidden": [256, 256]}


def test_each_default_is_declared_once():
    """The YAML files select groups and presets; the defaults themselves come from the dataclasses."""
    text = (config_dir() / "config.yaml").read_text()
    for group in ("train", "features", "s2", "collect"):
        assert f"\n{group}:" not in text, group
    assert "eval:" not in (config_dir() / "eval_policy.yaml").read_text()
    assert defaults_dict(EvalSettings)["episodes"] == 50 == load(EvalRun, compose("eval_policy", ["checkpoint=x"])).eval.episodes
    assert HeadConfig().n_action_steps == 8 == load(TrainRun, compose("config", ["policy=transformer"])).policy.n_action_steps


def test_encoder_none_means_no_cameras():
    run = load(TrainRun, compose("config", ["encoder=none"]))
    assert run.encoder.name == "none" and run.task.cameras == []


def test_study_checks_its_configurations():
    with pytest.raises(ConfigError, match=r'^only=\["nope"\]: no configuration .nope.; defined: base, base_s2'):
        load(StudyConfig, compose("study", ["only=[nope]"]))
    assert dataclasses.fields(StudyConfig)  # typed


def _cli(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run a CLI from `cwd` (a folder outside the repository): a script path, or a module as "-m name"."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = script.split() if script.startswith("-m ") else [str(REPO / script)]
    return subprocess.run([sys.executable, *command, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.subprocess
def test_clis_refuse_bad_values_with_exit_code_2_and_write_nothing(tmp_path):
    cases = [("train_policy.py", ["train.steps=-3", f"out_dir={tmp_path / 'run'}"], "train.steps=-3: must be >= 1"),
             ("train_policy.py", ["encoder=resnet9000"], "encoder=resnet9000: no such encoder config"),
             ("eval_policy.py", ["checkpoint=x", "eval.episodes=0"], "eval.episodes=0: must be >= 1"),
             ("-m s2policy.study", ["seeds=[]", f"study_dir={tmp_path / 'study'}"], "seeds=[]: list at least one")]
    for script, args, message in cases:
        result = _cli(script, *args, cwd=tmp_path)
        assert result.returncode == 2, (script, result.stderr[-2000:])
        assert result.stderr.strip().splitlines() == [f"error: {result.stderr.strip()[7:]}"]
        assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no run folder, no .hydra, no outputs/


@pytest.mark.subprocess
def test_user_config_folder_adds_a_task_through_config_dir(tmp_path):
    user = tmp_path / "my_configs"
    (user / "task").mkdir(parents=True)
    (user / "task" / "my_lift.yaml").write_text("name: lift\ncameras: [agentview]\ncamera_size: 240\n"
                                               "proprio_keys: [proprio]\n")
    result = _cli("train_policy.py", "--config-dir", str(user), "task=my_lift", "train.steps=0", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: train.steps=0: must be >= 1"), result.stderr
    result = _cli("train_policy.py", "--config-dir", str(user), "task=my_lift", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 0 and "camera_size: 240" in result.stdout, result.stderr
    result = _cli("train_policy.py", "--config-dir", str(user), "task=nope", cwd=tmp_path)
    assert result.returncode == 2 and "my_lift" in result.stderr and "lift" in result.stderr, result.stderr


def test_docs_list_every_option_as_the_code_declares_it():
    from s2policy.config.__main__ import markdown

    docs = (REPO / "docs" / "configs.md").read_text()
    generated = docs.split("do not edit by hand -->\n", 1)[1].split("<!-- end of generated options -->", 1)[0]
    assert generated == markdown(), "regenerate the tables: python -m s2policy.config"
    assert "| `train.steps` | `3000` | optimisation steps |" in generated


@pytest.mark.slow
@pytest.mark.subprocess
def test_wheel_ships_the_top_level_configs_and_every_console_script(tmp_path):
    """The built wheel carries configs/ as s2policy/configs/ byte for byte, and the eight console scripts."""
    import shutil
    import zipfile

    src = tmp_path / "src"  # build a copy: setuptools writes build/ and *.egg-info beside the sources
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("s2policy", "envs", "configs"):
        shutil.copytree(REPO / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, src / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("s2policy-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        shipped = sorted(n.removeprefix("s2policy/configs/") for n in names if n.startswith("s2policy/configs/"))
        assert shipped == sorted(str(p.relative_to(REPO / "configs")) for p in (REPO / "configs").rglob("*.yaml"))
        for name in shipped:
            assert z.read(f"s2policy/configs/{name}") == (REPO / "configs" / name).read_bytes(), name
        entry_points = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for script in ("train", "evaluate", "study", "collect", "robot", "export", "encoders", "report"):
        assert f"s2policy-{script} = " in entry_points, script
