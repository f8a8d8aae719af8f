"""Training: loss goes down, resume after a kill reproduces an uninterrupted run, no-cache mode, Hydra CLI, DDP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from s2policy.config import compose
from s2policy.data import open_dataset
from s2policy.errors import ConfigError
from s2policy.policy import Policy
from s2policy.train import train
from s2policy.train.synthetic import write_synthetic_demos

REPO = Path(__file__).resolve().parents[1]
TINY_TRANSFORMER = ["policy=transformer", "policy.history=4", "policy.horizon=3", "policy.n_action_steps=2",
                    "policy.d_model=16", "policy.layers=1", "policy.heads=2"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_demos(tmp_path_factory.mktemp("data") / "demos.hdf5", num_demos=5, length=10)


def run_config(dataset: Path, out_dir: Path, *overrides: str) -> dict:
    base = ["encoder=tiny_cnn", "s2.scales=[1,2]", f"dataset={dataset}", f"out_dir={out_dir}", "task.camera_size=32",
            "train.steps=30", "train.batch_size=16", "train.warmup_steps=3", "train.log_every=5",
            "train.val_every=10", "train.checkpoint_every=10", "train.progress=false", "train.tensorboard=false"]
    return compose("config", base + list(overrides))


def metrics(out_dir: Path, name: str) -> list[float]:
    import json

    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [r[name] for r in rows if name in r]


def test_mlp_loss_decreases_and_policy_acts_on_raw_frames(dataset, tmp_path):
    out = train(run_config(dataset, tmp_path / "run", "train.steps=60", "train.lr=3e-3"))
    losses = metrics(tmp_path / "run", "train/loss")
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:2]), losses
    assert len(metrics(tmp_path / "run", "valid/loss")) == 6
    policy = Policy.load(out, device="cpu")
    # where it came from travels with the policy file (evaluation reads it; it never imports the trainer)
    assert policy.config.provenance == {"dataset": str(dataset), "seed": 0, "run_dir": str(tmp_path / "run")}
    with open_dataset(dataset) as ds:
        demo = ds.load_demo("demo_0")
    cache_dir = next(Path(str(dataset) + ".features").glob("agentview-*"))
    from s2policy.features import FeatureCache

    with FeatureCache(cache_dir) as cache:  # act() sees the features training saw (cache dtype float16)
        frames = demo.obs["agentview_image"]
        np.testing.assert_allclose(policy.encode_frames({"agentview": frames}).numpy(),
                                   cache.embeddings("demo_0").astype(np.float32), rtol=2e-3, atol=2e-3)
    action = policy.act({"agentview": frames[0], "proprio": demo.obs["proprio"][0]})
    assert action.shape == (3,) and np.isfinite(action).all()


def test_resume_after_kill_matches_uninterrupted_run(dataset, tmp_path):
    overrides = [*TINY_TRANSFORMER, "train.steps=25", "train.checkpoint_every=10"]  # dropout stays on
    reference = load_file(train(run_config(dataset, tmp_path / "full", *overrides)))

    class Killed(Exception):
        pass

    def kill_at_17(step: int) -> None:
        if step == 17:  # 7 steps after the last checkpoint: they are lost and must be redone identically
            raise Killed

    killed_cfg = run_config(dataset, tmp_path / "killed", *overrides)
    with pytest.raises(Killed):
        train(killed_cfg, on_step=kill_at_17)
    with pytest.raises(ConfigError, match="pass resume=true"):
        train(killed_cfg)
    resumed = load_file(train(run_config(dataset, tmp_path / "killed", *overrides, "resume=true")))
    assert reference.keys() == resumed.keys()
    for k in reference:
        torch.testing.assert_close(resumed[k], reference[k], rtol=0, atol=0, msg=k)


def test_no_cache_mode_trains_on_the_same_features(dataset, tmp_path):
    cached = run_config(dataset, tmp_path / "cached", "train.steps=6", "features.dtype=float32")
    fly = run_config(dataset, tmp_path / "fly", "train.steps=6", "features.cache=false")
    a, b = load_file(train(cached)), load_file(train(fly))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4, msg=k)


def test_bad_config_raises_one_clear_error(dataset, tmp_path):
    with pytest.raises(ConfigError, match="no obs key.*'joint_pos'"):
        train(run_config(dataset, tmp_path / "a", "task.proprio_keys=[joint_pos]"))
    with pytest.raises(ConfigError, match="^task.camera_size=16: must be >= encoder tiny_cnn's native input size 32$"):
        train(run_config(dataset, tmp_path / "b", "task.camera_size=16"))
    with pytest.raises(ConfigError, match='^encoder.name="resnet9000": expected one of .*efficientnet_lite0, .*none'):
        train(run_config(dataset, tmp_path / "c", "encoder.name=resnet9000"))
    with pytest.raises(ConfigError, match=r"^s2.scales=\[1, 1.5\]: every size must be a multiple of encoder tiny_cnn"):
        train(run_config(dataset, tmp_path / "d", "s2.scales=[1,1.5]"))
    assert not any((tmp_path / d).exists() for d in "abcd")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.subprocess
def test_cli_and_ddp_on_cpu_match_a_single_process(tmp_path):
    """Two gloo processes, half the batch each, give the weights of one process on the whole batch."""
    data = write_synthetic_demos(tmp_path / "demos.hdf5", num_demos=4, length=8)  # fresh: DDP extracts sharded
    args = ["task=lift", f"dataset={data}", "encoder=tiny_cnn", "encoder.weights=random", "s2.scales=[1,2]",
            "task.camera_size=32", "train.steps=8", "train.batch_size=8", "seed=3", "train.progress=false",
            "train.tensorboard=false", *TINY_TRANSFORMER, "policy.dropout=0.0"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
         f"--master_port={_free_port()}", str(REPO / "train_policy.py"), *args, f"out_dir={tmp_path / 'ddp'}"],
        env=env, capture_output=True, text=True, timeout=240)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    cache = next(Path(str(data) + ".features").glob("agentview-*"))
    assert len(list(cache.glob("shards/demo_*.h5"))) == 4 and len(list(cache.glob(".extract-*-of-2.lock"))) == 2
    single = subprocess.run([sys.executable, str(REPO / "train_policy.py"), *args, f"out_dir={tmp_path / 'one'}"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert single.returncode == 0, single.stderr[-3000:]
    assert "policy:" in single.stdout
    a, b = load_file(tmp_path / "ddp" / "policy.safetensors"), load_file(tmp_path / "one" / "policy.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("head", [[], TINY_TRANSFORMER], ids=["mlp", "transformer"])
def test_camera_free_controls_train_without_features_and_act_without_frames(head, tmp_path):
    """The study's controls: encoder=none trains on proprio (+ the true object state) alone -- no feature cache,
    no frames needed to act, zero-width features in the policy, no encoder weights."""
    data = write_synthetic_demos(tmp_path / "demos.hdf5", num_demos=3, length=8)
    out = train(run_config(data, tmp_path / "run", "encoder=none", "task.proprio_keys=[proprio,object]",
                           "train.steps=10", *head))
    assert not Path(str(data) + ".features").exists()  # nothing was encoded
    policy = Policy.load(out, device="cpu")
    assert policy.config.cameras == [] and policy.config.feature_dim == 0 and policy.config.encoder == "none"
    assert policy.encoder.params == 0 and policy.encoder.gmacs((224, 224)) == 0
    with open_dataset(data) as ds:
        demo = ds.load_demo("demo_0")
    assert policy.config.proprio_dim == demo.obs["proprio"].shape[1] + demo.obs["object"].shape[1]
    actions = policy.act_batch([{"proprio": demo.obs["proprio"][t], "object": demo.obs["object"][t]} for t in (0, 1)])
    assert actions.shape == (2, 3) and np.isfinite(actions).all()


def test_non_finite_step_stops_training_keeps_last_checkpoint_and_resume_finishes(dataset, tmp_path, monkeypatch):
    """A NaN reaching the loss at step 14 stops the run there: checkpoint of step 10 intact, no policy written, the
    message names the step, the batch's demos and how to resume; resuming (data fixed) finishes the run."""
    from s2policy.errors import TrainingDivergedError
    from s2policy.train import loop

    out = tmp_path / "run"
    cfg = run_config(dataset, out, "train.steps=20", "train.checkpoint_every=10")
    done = {"step": 0}
    real_gather = loop.gather_windows

    def poisoned_gather(*args, **kwargs):
        batch = real_gather(*args, **kwargs)
        if done["step"] == 13:  # the batch of step 14 (validation runs at steps 10 and 20 only)
            batch["proprio"][0, -1, 0] = float("nan")
        return batch

    monkeypatch.setattr(loop, "gather_windows", poisoned_gather)
    snapshots = {}

    def on_step(step):
        done["step"] = step
        if step == 10:
            snapshots["checkpoint"] = (out / "checkpoints" / "last.safetensors").read_bytes()

    with pytest.raises(TrainingDivergedError) as error:
        train(cfg, on_step=on_step)
    message = str(error.value)
    assert "training stopped at step 14: loss nan" in message
    assert "on a batch from demos demo_" in message and "no policy file was written" in message
    assert f"the last good checkpoint {out / 'checkpoints' / 'last.safetensors'} (step 10) is kept" in message
    assert "resume=true" in message
    assert not (out / "policy.safetensors").exists()
    assert (out / "checkpoints" / "last.safetensors").read_bytes() == snapshots["checkpoint"]
    assert not list(out.rglob("*.tmp"))

    monkeypatch.setattr(loop, "gather_windows", real_gather)
    policy = load_file(train({**cfg, "resume": True}))
    assert all(torch.isfinite(t).all() for t in policy.values())


def test_full_disk_while_checkpointing_is_one_error_and_keeps_the_previous_checkpoint(dataset, tmp_path, monkeypatch):
    import safetensors.torch

    from s2policy.errors import DiskFullError

    out = tmp_path / "run"
    real_save = safetensors.torch.save_file
    calls = []

    def disk_fills_on_second_checkpoint(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:  # half a file, then the error safetensors gives for ENOSPC
            Path(filename).write_bytes(b"\0" * 1000)
            raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", disk_fills_on_second_checkpoint)
    kept = {}
    with pytest.raises(DiskFullError, match=r"no space left writing .*last.safetensors .*the previous file \(if any\) "
                                            r"is untouched"):
        train(run_config(dataset, out, "train.steps=20", "train.checkpoint_every=10"),
              on_step=lambda s: kept.setdefault("bytes", (out / "checkpoints/last.safetensors").read_bytes())
              if s == 10 else None)
    assert (out / "checkpoints" / "last.safetensors").read_bytes() == kept["bytes"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.safetensors"]  # temporary removed
    assert not (out / "policy.safetensors").exists()
