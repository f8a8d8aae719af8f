"""The Ray backend on a local Ray instance (2 CPUs, started once for the module): rollouts with env actors and a
policy actor equal the local layouts episode for episode, and the study driver runs its (configuration x seed) runs
as Ray tasks whose stages the local driver then reuses. Tiny random encoders, 64 px frames, episodes of a few steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import ray  # not skipped when missing: the test install (.[all]) includes the ray extra, so CI must run these

from s2policy.errors import ConfigError

pytestmark = [pytest.mark.slow, pytest.mark.simulator, pytest.mark.subprocess]  # actors and tasks are processes

MAX_STEPS = 6


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance with 2 CPUs for every test in this file (starting one takes seconds)."""
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory) -> Path:
    """An untrained lift policy on a random tiny_cnn seen at 32 + 64 px: rollouts depend on every weight and frame,
    and untrained episodes run to the step cap, so every layout does the same work."""
    import envs
    from s2policy import build_s2_encoder
    from s2policy.policy import Normalizer, Policy, PolicyConfig

    spec = envs.get_task("lift")
    s2 = {"scales": [1, 2]}
    encoder = build_s2_encoder("tiny_cnn", "random", s2)
    config = PolicyConfig(encoder="tiny_cnn", weights="random", s2=s2, cameras=[spec.default_camera],
                          proprio_keys=["proprio"], proprio_dim=spec.proprio_dim, action_dim=spec.action_dim,
                          feature_dim=encoder.out_dim, head="mlp", head_kwargs={"hidden": [16]}, camera_size=64,
                          n_action_steps=1, task="lift")
    policy = Policy.create(config, encoder, Normalizer(spec.proprio_dim), Normalizer(spec.action_dim))
    return policy.save(tmp_path_factory.mktemp("ray_policy") / "policy.safetensors")


def rollouts(policy_file: Path, out: Path, **settings) -> tuple[dict, list[dict]]:
    from s2policy.evaluate import EvalSettings, evaluate

    summary = evaluate(policy_file, out, EvalSettings(episodes=3, max_steps=MAX_STEPS, device="cpu", **settings))
    return summary, json.loads((out / "episodes.json").read_text())


def test_ray_backend_reproduces_the_local_backend_episode_for_episode(ray_instance, policy_file, tmp_path):
    ray_summary, on_ray = rollouts(policy_file, tmp_path / "ray", workers=2, backend="ray")
    _, local = rollouts(policy_file, tmp_path / "main", workers=2, policy_on="main")
    assert ray_summary["eval"]["layout"] == "ray" and ray_summary["host"]["device"] == "cpu"
    assert ray_summary["speed"]["mean_batch"] > 1  # both env actors stepped under one policy call
    key = lambda eps: [(e["index"], e["seed"], e["success"], e["length"], e["final_object"]) for e in eps]  # noqa: E731
    # the same batches on the same CPU kernels: equal to the last digit
    assert key(on_ray) == key(local)
    # one env actor acts one env per call, exactly like serial rollouts in this process
    _, ray_single = rollouts(policy_file, tmp_path / "ray1", workers=1, backend="ray")
    _, serial = rollouts(policy_file, tmp_path / "serial", workers=0)
    assert key(ray_single) == key(serial)
    assert [e["length"] for e in serial] == [MAX_STEPS] * 3
    np.testing.assert_allclose([e["final_object"] for e in on_ray], [e["final_object"] for e in serial], atol=1e-3)


def test_ray_backend_refuses_a_gpu_the_cluster_does_not_have_before_any_actor(ray_instance, policy_file, tmp_path):
    from s2policy.evaluate import EvalSettings, evaluate

    with pytest.raises(ConfigError, match=r"eval.device=cuda: the Ray cluster has no GPU"):
        evaluate(policy_file, tmp_path / "out", EvalSettings(episodes=1, workers=1, backend="ray", device="cuda"))
    assert not (tmp_path / "out").exists()


def test_settings_that_cannot_run_on_ray_are_refused_with_the_key(monkeypatch):
    import importlib.util

    from s2policy.config import StudyConfig
    from s2policy.evaluate import EvalSettings

    with pytest.raises(ConfigError, match=r"^eval.workers=0: eval.backend=ray runs the envs as Ray actors"):
        EvalSettings(backend="ray", workers=0)
    with pytest.raises(ConfigError, match=r'^eval.backend="ray": batches the policy on one Ray actor'):
        EvalSettings(backend="ray", policy_on="workers")
    # without Ray installed, asking for it fails at the config check (CLIs: exit 2), before any work
    find_spec = importlib.util.find_spec
    missing = {"ray", "onnxruntime"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"""^eval.backend="ray": Ray is not installed: pip install 's2policy\[ray\]'"""):
        EvalSettings(backend="ray")
    with pytest.raises(ConfigError, match=r'^backend="ray": Ray is not installed'):
        StudyConfig(configurations={"a": []}, backend="ray")
    with pytest.raises(ConfigError, match=r"""^eval.backbone="onnx": onnxruntime is not installed: pip install 's2policy\[export\]'"""):
        EvalSettings(backbone="onnx")


def test_study_runs_as_ray_tasks_and_the_local_driver_reuses_every_stage(ray_instance, tmp_path):
    from s2policy.config import compose
    from s2policy.evaluate import EvalSettings, evaluate
    from s2policy.study import run_study

    cfg = compose("study")
    cfg.update(study_dir=str(tmp_path / "study"), progress=False, seeds=[0], only=["vision", "privileged"],
               backend="ray", train_overrides=["train.steps=5", "train.progress=false", "train.tensorboard=false"])
    cfg["collect"].update(camera_size=64, num_demos=2, workers=1)
    cfg["configurations"]["vision"] = ["encoder=tiny_cnn", "encoder.weights=random", "s2.scales=[1,2]"]
    cfg["eval"].update(episodes=2, workers=0, max_steps=MAX_STEPS, video=0)
    with pytest.raises(ConfigError, match=r'^eval.backend="ray": with backend=ray each run is already a Ray task'):
        run_study({**cfg, "eval": {**cfg["eval"], "backend": "ray", "workers": 1}})
    written = run_study(cfg)
    assert "vision" in written["markdown"].read_text() or "tiny_cnn" in written["markdown"].read_text()
    stages = json.loads((tmp_path / "study" / "stages.json").read_text())
    for name in ("train vision seed0", "eval vision seed0", "train privileged seed0", "eval privileged seed0"):
        assert stages[name]["reused"] is False and stages[name]["seconds"] > 0
    run = tmp_path / "study" / "runs" / "vision" / "seed0"
    remote = json.loads((run / "eval" / "episodes.json").read_text())
    # the task evaluated exactly what this process would have (serial rollouts, same seeds)
    again = evaluate(run, tmp_path / "again", EvalSettings(episodes=2, workers=0, max_steps=MAX_STEPS,
                                                           dataset=str(tmp_path / "study" / "demos.hdf5")))
    local = json.loads((tmp_path / "again" / "episodes.json").read_text())
    drop_time = lambda eps: [{k: v for k, v in e.items() if k != "seconds"} for e in eps]  # noqa: E731
    assert drop_time(remote) == drop_time(local) and again["checkpoint_sha256"]
    run_study({**cfg, "backend": "local"})  # the same study without Ray: everything the tasks wrote is reused
    stages = json.loads((tmp_path / "study" / "stages.json").read_text())
    assert all(stages[f"{kind} {name} seed0"]["reused"] for kind in ("train", "eval") for name in ("vision",
                                                                                                      "privileged"))
