"""The study driver's bookkeeping (no simulator): train configs composed like the CLI's, evaluation reuse rules."""

from __future__ import annotations

import json

import pytest

from s2policy.evaluate import EvalSettings
from s2policy.evaluate.provenance import file_sha256
from s2policy.study import StageLog, compose_train_config, evaluation_matches


def test_train_config_composes_like_train_policy_cli(tmp_path):
    cfg = compose_train_config(["task=lift", "encoder=efficientnet_lite2", "s2.scales=null", "s2.img_sizes=[260]",
                                "seed=3", f"out_dir={tmp_path}", "task.camera_size=448"])
    assert cfg.encoder.name == "efficientnet_lite2" and cfg.s2.img_sizes == [260]
    assert cfg.seed == 3 and cfg.task.camera_size == 448


def test_finished_evaluation_is_reused_only_for_the_same_policy_and_settings(tmp_path):
    policy = tmp_path / "policy.safetensors"
    policy.write_bytes(b"weights v1")
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"checkpoint_sha256": file_sha256(policy),
                                   "eval": {"episodes": 50, "seed": 0, "max_steps": 200}}))
    assert evaluation_matches(summary, policy, EvalSettings(episodes=50))
    assert not evaluation_matches(summary, policy, EvalSettings(episodes=60))
    assert not evaluation_matches(summary, policy, EvalSettings(episodes=50, seed=1))
    assert not evaluation_matches(summary, policy, EvalSettings(episodes=50, max_steps=100))
    policy.write_bytes(b"weights v2")  # retrained: the old evaluation no longer applies
    assert not evaluation_matches(summary, policy, EvalSettings(episodes=50))
    assert not evaluation_matches(tmp_path / "missing.json", policy, EvalSettings())


def test_stage_log_skips_done_stages_and_persists(tmp_path):
    calls = []
    log = StageLog(tmp_path / "stages.json")
    log.run("a", lambda: False, lambda: calls.append("a"))
    log.run("b", lambda: True, lambda: calls.append("b"))
    assert calls == ["a"]
    stages = json.loads((tmp_path / "stages.json").read_text())
    assert stages["a"]["reused"] is False and stages["b"] == {"reused": True}
    again = StageLog(tmp_path / "stages.json")
    again.run("a", lambda: True, lambda: calls.append("a again"))  # reused: the time it took when it ran is kept
    assert calls == ["a"] and again.stages["a"] == {**stages["a"], "reused": True}


def test_quickstart_config_runs_the_three_way_comparison_and_unknown_names_are_refused(tmp_path):
    from s2policy.config import StudyConfig, compose, load
    from s2policy.errors import ConfigError
    from s2policy.study import run_study

    cfg = compose("quickstart")
    assert cfg["only"] == ["base", "base_s2", "larger"] and cfg["seeds"] == [0]
    assert cfg["collect"]["camera_size"] == 448  # one set of frames, read by all three configurations
    assert "s2.img_sizes=[224,448]" in cfg["configurations"]["base_s2"]
    assert "encoder=efficientnet_lite2" in cfg["configurations"]["larger"]
    typed = load(StudyConfig, cfg)
    # the speed levers keep results comparable: the default layout, ONNX crops checked against torch
    assert typed.eval.policy_on == "auto" and typed.eval.backbone == "onnx" and typed.eval.episodes == 20
    assert "features.backbone=onnx" in typed.train_overrides
    cfg.update(only=["base_s3"], study_dir=str(tmp_path / "study"))
    with pytest.raises(ConfigError, match=r'^only=\["base_s3"\]: no configuration .base_s3.; defined: base, base_s2'):
        run_study(cfg)
    assert not (tmp_path / "study").exists()  # refused before collecting anything


@pytest.mark.parametrize("name, task, encoders", [
    ("results_lift", "lift", ["efficientnet_lite0", "efficientnet_lite0", "efficientnet_lite2"]),
    ("results_hammer", "mw-hammer", ["efficientnet_lite0", "efficientnet_lite0", "efficientnet_lite2"]),
    ("results_button", "mw-button-press-topdown", ["efficientnet_lite0", "efficientnet_lite0", "efficientnet_lite2"]),
    ("study_mvp", "lift", ["mvp_vitb", "mvp_vitb", "mvp_vitl"]),
    ("study_r3m", "lift", ["r3m_resnet18", "r3m_resnet18", "r3m_resnet50"]),
    ("study_dinov2", "lift", ["dinov2_vitb14", "dinov2_vitb14", "dinov2_vitl14"]),
])
def test_published_and_gpu_study_configs_compose_every_configuration(name, task, encoders):
    """Each study config (docs/results.md) composes, and each configuration composes into the training config it
    names: base, base + S2 (two sizes), larger, then the two image-free controls."""
    from s2policy.config import compose

    cfg = compose(name, [f"task={task}"])
    assert cfg["task"]["name"] == task and cfg["eval"]["episodes"] >= 50 and len(cfg["seeds"]) >= 3
    frames = f"task.camera_size={cfg['collect']['camera_size']}"  # what the study passes every configuration
    runs = {c: compose_train_config([f"task={task}", frames, *o, *cfg["train_overrides"]])
            for c, o in cfg["configurations"].items()}
    assert list(runs) == ["base", "base_s2", "larger", "proprio_only", "privileged"]
    assert [runs[c].encoder.name for c in ("base", "base_s2", "larger")] == encoders
    assert [len(runs[c].s2.img_sizes) for c in ("base", "base_s2", "larger")] == [1, 2, 1]
    assert runs["privileged"].encoder.name == "none" == runs["proprio_only"].encoder.name
    assert runs["privileged"].task.cameras == [] == runs["proprio_only"].task.cameras
    assert runs["privileged"].task.proprio_keys == ["proprio", "object"]
