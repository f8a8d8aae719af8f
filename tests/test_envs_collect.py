"""envs.collect_demos -> robomimic HDF5 -> s2policy.data / robomimic tools / rerender (tiny cameras, 2-3 demos)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")  # must precede the first mujoco import (envs does the same)
pytest.importorskip("mujoco")
pytest.importorskip("robosuite")
pytest.importorskip("metaworld")

import envs  # noqa: E402
from envs import collect as collect_module  # noqa: E402
from s2policy.data import open_dataset, validate  # noqa: E402

pytestmark = pytest.mark.simulator

SIZE = (40, 48)


@pytest.fixture(scope="module")
def lift_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("collect") / "lift.hdf5"
    summary = envs.collect_demos("lift", 2, path, camera_size=SIZE, seed=20, progress=False, placement_range=0.05)
    return path, summary


def test_collect_writes_robomimic_file(lift_file):
    path, summary = lift_file
    assert summary["demos"] == 2 and summary["attempts"] >= 2 and summary["samples"] > 0
    validate(path)
    with open_dataset(path) as dataset:
        assert dataset.demo_keys == ["demo_0", "demo_1"]
        assert dataset.image_keys == ["agentview_image"] and {"proprio", "object"} <= set(dataset.obs_keys)
        args = dataset.env_args
        assert args["env_name"] == "Lift" and args["env_type"] == 1
        assert args["env_kwargs"]["task"] == "lift" and args["env_kwargs"]["variation"] == {"placement_range": 0.05}
        demo = dataset.load_demo("demo_0")
        steps = len(demo)
        assert demo.obs["agentview_image"].shape == (steps, *SIZE, 3)
        assert demo.actions.dtype == np.float32 and np.abs(demo.actions).max() <= 1
        assert demo.states.shape[0] == steps and demo.dones[-1] == 1 and demo.dones[:-1].sum() == 0
        assert demo.attrs["seed"] == 20 and "<mujoco" in demo.attrs["model_file"]
        group = dataset.demo_group("demo_0")["obs/agentview_image"]
        assert group.chunks == (1, *SIZE, 3) and group.compression == "gzip"
        masks = dataset.file["mask"]
        assert len(masks["valid"]) >= 1 and masks["train"].dtype.kind == "S"
        assert dataset.file["data"].attrs["total"] == dataset.num_samples
    # The env recreated from env_args starts where the demo started.
    env = envs.make_env(args["env_kwargs"]["task"], cameras=[], **args["env_kwargs"]["variation"])
    env.reset(seed=int(demo.attrs["seed"]))
    np.testing.assert_array_equal(env.get_state(), demo.states[0])
    env.close()


def test_rerender_equals_stored_frames_and_resizes(lift_file):
    path, _ = lift_file
    with open_dataset(path) as dataset:
        stored = dataset.load_demo("demo_1").obs["agentview_image"]
    np.testing.assert_array_equal(envs.rerender(path, "demo_1"), stored)  # exact: same model, state, renderer
    bigger = envs.rerender(path, "demo_1", camera="robot0_eye_in_hand", camera_size=(64, 80))
    assert bigger.shape == (len(stored), 64, 80, 3) and bigger.dtype == np.uint8


@pytest.mark.subprocess
def test_robomimic_get_dataset_info_reads_our_file(lift_file):
    pytest.importorskip("robomimic")
    path, _ = lift_file
    result = subprocess.run([sys.executable, "-m", "robomimic.scripts.get_dataset_info", "--dataset", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "total transitions" in result.stdout and "agentview_image" in result.stdout


def test_robomimic_sequence_dataset_reads_collected_file(lift_file):
    pytest.importorskip("robomimic")
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset

    path, _ = lift_file
    ObsUtils.initialize_obs_utils_with_obs_specs(
        {"obs": {"low_dim": ["proprio", "object"], "rgb": ["agentview_image"]}})
    dataset = SequenceDataset(str(path), obs_keys=("proprio", "object", "agentview_image"),
                              dataset_keys=("actions", "rewards", "dones"), load_next_obs=False, seq_length=3,
                              filter_by_attribute="train")
    item = dataset[0]
    assert item["actions"].shape == (3, 7) and item["obs"]["object"].shape == (3, 7)


@pytest.mark.subprocess
def test_metaworld_collect_two_workers_no_images_and_rerender(tmp_path):
    path = tmp_path / "drawer.hdf5"
    summary = envs.collect_demos("mw-drawer-open", 2, path, workers=2, store_images=False, camera_size=32,
                                 progress=False)
    assert summary["demos"] == 2
    with open_dataset(path) as dataset:
        assert dataset.image_keys == [] and dataset.env_args["env_type"] == 2
        assert [dataset.load_demo(k).attrs["seed"] for k in dataset.demo_keys] == [0, 1]
        steps = len(dataset.load_demo("demo_1"))
    frames = envs.rerender(path, "demo_1", camera_size=24)
    assert frames.shape == (steps, 24, 24, 3)


def test_failed_collection_leaves_no_file(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_run_episode = collect_module.run_episode

    def crash_on_second_episode(env, expert, seed):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # what Ctrl-C raises mid-collection
        return real_run_episode(env, expert, seed)

    monkeypatch.setattr(collect_module, "run_episode", crash_on_second_episode)
    with pytest.raises(KeyboardInterrupt):
        envs.collect_demos("mw-button-press-topdown", 3, tmp_path / "out.hdf5", store_images=False, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.subprocess
def test_cli(tmp_path):
    out = tmp_path / "cli.hdf5"
    result = subprocess.run([sys.executable, "-m", "envs.collect", "--task", "mw-button-press-topdown",
                             "--num-demos", "1", "--output", str(out), "--camera-size", "16", "24"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["demos"] == 1
    with open_dataset(out) as dataset:
        assert dataset.image_keys == ["corner2_image"]
        assert dataset.obs_array("demo_0", "corner2_image").shape[1:] == (16, 24, 3)
