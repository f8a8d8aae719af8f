"""s2policy.data: robomimic-format reading, writing and validation, on small synthetic files (no simulator)."""

from __future__ import annotations


import h5py
import numpy as np
import pytest

from s2policy.data import DemoWriter, open_dataset, sorted_demo_keys, split_train_valid, validate
from s2policy.errors import DatasetError

T, A = 5, 7


def write_raw(path, demos: dict[str, dict], masks=None, env_args=None):
    """A file the way other tools write them: plain h5py, optional groups, any demo order."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        if env_args is not None:
            data.attrs["env_args"] = env_args
        for key, arrays in demos.items():
            group = data.create_group(key)
            for name, value in arrays.items():
                group.create_dataset(name, data=value)
            if "actions" in arrays:
                group.attrs["num_samples"] = len(arrays["actions"])
        for name, keys in (masks or {}).items():
            f.create_dataset(f"mask/{name}", data=np.array(keys, dtype="S"))
    return path


def good_demo(length=T, image_hw=(8, 12)):
    rng = np.random.default_rng(length)
    return {
        "actions": rng.uniform(-1, 1, (length, A)).astype(np.float32),
        "obs/proprio": rng.normal(size=(length, 4)).astype(np.float32),
        "obs/agentview_image": rng.integers(0, 255, (length, *image_hw, 3), dtype=np.uint8),
    }


def test_sorted_demo_keys_numeric():
    assert sorted_demo_keys(["demo_10", "demo_2", "demo_1", "x"]) == ["demo_1", "demo_2", "demo_10", "x"]


def test_split_train_valid_disjoint_at_least_one():
    keys = [f"demo_{i}" for i in range(25)]
    split = split_train_valid(keys)
    assert len(split["valid"]) == 2 and set(split["train"]) | set(split["valid"]) == set(keys)
    assert not set(split["train"]) & set(split["valid"])
    assert split_train_valid(["demo_0", "demo_1"])["valid"] != []


def test_write_read_round_trip(tmp_path):
    path = tmp_path / "demos.hdf5"
    demos = [good_demo(3), good_demo(4)]
    with DemoWriter(path) as writer:
        for demo in demos:
            obs = {k[4:]: v for k, v in demo.items() if k.startswith("obs/")}
            writer.add_demo(demo["actions"], obs, states=np.zeros((len(demo["actions"]), 9)),
                            rewards=np.zeros(len(demo["actions"])), dones=np.eye(len(demo["actions"]))[-1],
                            attrs={"seed": 7})
        writer.finish({"env_name": "Lift", "env_type": 1, "env_kwargs": {"task": "lift"}})
    validate(path)
    with open_dataset(path) as dataset:
        assert dataset.demo_keys == ["demo_0", "demo_1"]
        assert dataset.env_args["env_kwargs"]["task"] == "lift"
        assert dataset.obs_keys == ["agentview_image", "proprio"]
        assert dataset.image_keys == ["agentview_image"]
        assert dataset.action_dim == A and dataset.num_samples == 7
        demo = dataset.load_demo("demo_1")
        np.testing.assert_array_equal(demo.obs["agentview_image"], demos[1]["obs/agentview_image"])
        assert demo.actions.dtype == np.float32 and demo.states.shape == (4, 9) and demo.attrs["seed"] == 7
        assert "agentview_image" not in dataset.load_demo("demo_1", load_images=False).obs
        frames = dataset.obs_array("demo_1", "agentview_image")  # lazy: one chunk per frame, gzip
        assert frames.chunks == (1, 8, 12, 3) and frames.compression == "gzip"
        np.testing.assert_array_equal(frames[2], demos[1]["obs/agentview_image"][2])
    with open_dataset(path, filter_key="valid") as valid, open_dataset(path, filter_key="train") as train:
        assert len(valid.demo_keys) == 1 and sorted(valid.demo_keys + train.demo_keys) == ["demo_0", "demo_1"]


def test_reads_other_tools_files(tmp_path):
    """No mask, states, rewards, dones, env_args; demo_10 sorts after demo_2; a next_obs group is fine."""
    demos = {f"demo_{i}": good_demo(2 + i) for i in (10, 2)}
    demos["demo_2"]["next_obs/proprio"] = demos["demo_2"]["obs/proprio"]
    path = write_raw(tmp_path / "other.hdf5", demos, masks={"valid": [b"demo_10"]})
    validate(path)
    with open_dataset(path) as dataset:
        assert dataset.demo_keys == ["demo_2", "demo_10"] and dataset.env_args == {}
        demo = dataset.load_demo("demo_10")
        assert demo.states is None and demo.rewards is None and len(demo) == 12
    with open_dataset(path, filter_key="valid") as dataset:
        assert dataset.demo_keys == ["demo_10"]


def test_libero_camera_keys_are_cameras(tmp_path):
    """LIBERO stores frames as obs/<camera>_rgb: the camera is `agentview`, read as our `agentview_image` contract;
    where a file holds both spellings, robomimic's `_image` wins. Features are extracted from the stored frames."""
    from s2policy import build_s2_encoder
    from s2policy.data import open_episodes
    from s2policy.features import build_feature_cache

    demos = {f"demo_{i}": good_demo(5 + i, image_hw=(32, 48)) for i in range(2)}
    for d in demos.values():
        d["obs/agentview_rgb"] = d.pop("obs/agentview_image")
        d["obs/eye_in_hand_rgb"] = d["obs/agentview_rgb"][:, ::-1].copy()
    path = write_raw(tmp_path / "libero.hdf5", demos)
    validate(path)
    with open_episodes(path) as reader:
        assert reader.cameras == ["agentview", "eye_in_hand"]
        assert reader.camera_keys == {"agentview": "obs/agentview_rgb", "eye_in_hand": "obs/eye_in_hand_rgb"}
        assert reader.frame_shape("agentview_image") == (32, 48)
        np.testing.assert_array_equal(reader.read_frames("demo_1", "eye_in_hand", [0, 5]),
                                      demos["demo_1"]["obs/eye_in_hand_rgb"][[0, 5]])
    encoder = build_s2_encoder("tiny_cnn", "random", {"scales": [1]})
    cache, stats = build_feature_cache(path, "eye_in_hand", encoder, camera_size=None, dtype="float32")
    assert stats.frames == 11 and [len(cache.embeddings(d)) for d in cache.demos] == [5, 6]
    cache.close()
    for d in demos.values():
        d["obs/agentview_image"] = np.zeros_like(d["obs/agentview_rgb"])
    with open_episodes(write_raw(tmp_path / "both.hdf5", demos)) as reader:
        assert reader.camera_keys["agentview"] == "obs/agentview_image"


def _bad(name):
    """Each entry: (file builder, text the single error message must contain)."""
    demo = good_demo()
    cases = {
        "missing_actions": ({"demo_0": {k: v for k, v in demo.items() if k != "actions"}}, "demo demo_0: missing 'actions'"),
        "empty_demo": ({"demo_0": {"actions": np.zeros((0, A), np.float32)}}, "demo demo_0: empty demo"),
        "actions_out_of_range": ({"demo_0": {**demo, "actions": demo["actions"] * 3}},
                                 "demo demo_0, key 'actions': values outside [-1, 1]"),
        "actions_wrong_shape": ({"demo_0": {**demo, "actions": demo["actions"][:, 0]}},
                                "demo demo_0, key 'actions': expected float (T, A)"),
        "image_wrong_dtype": ({"demo_0": {**demo, "obs/agentview_image": demo["obs/agentview_image"].astype(np.float32)}},
                              "demo demo_0, key 'obs/agentview_image': images must be uint8 (T, H, W, 3)"),
        "image_channel_first": ({"demo_0": {**demo, "obs/agentview_image": np.zeros((T, 3, 8, 8), np.uint8)}},
                                "images must be uint8 (T, H, W, 3)"),
        "obs_length_mismatch": ({"demo_0": {**demo, "obs/proprio": demo["obs/proprio"][:-1]}},
                                "demo demo_0, key 'obs/proprio': length (4,) != num_samples 5"),
        "rewards_length_mismatch": ({"demo_3": {**demo, "rewards": np.zeros(T + 1)}},
                                    "demo demo_3, key 'rewards': length (6,) != num_samples 5"),
    }
    return cases[name]


BAD_CASES = ["missing_actions", "empty_demo", "actions_out_of_range", "actions_wrong_shape", "image_wrong_dtype",
             "image_channel_first", "obs_length_mismatch", "rewards_length_mismatch"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_file_catalogue(tmp_path, case):
    demos, expected = _bad(case)
    path = write_raw(tmp_path / f"{case}.hdf5", demos)
    with pytest.raises(DatasetError) as error:
        validate(path)
    assert str(path) in str(error.value) and expected in str(error.value)


def test_several_problems_in_one_error(tmp_path):
    demo = good_demo()
    path = write_raw(tmp_path / "two.hdf5", {"demo_0": {**demo, "actions": demo["actions"] * 2},
                                              "demo_1": {**demo, "obs/proprio": demo["obs/proprio"][:2]}})
    with pytest.raises(DatasetError, match=r"2 problem\(s\)(.|\n)*demo demo_0(.|\n)*demo demo_1"):
        validate(path)


def test_not_hdf5_missing_data_unknown_filter_key(tmp_path):
    text = tmp_path / "notes.hdf5"
    text.write_text("not hdf5")
    with pytest.raises(DatasetError, match="notes.hdf5: not an HDF5 file"):
        open_dataset(text)
    with pytest.raises(DatasetError, match="missing.hdf5: file not found"):
        validate(tmp_path / "missing.hdf5")
    no_data = tmp_path / "no_data.hdf5"
    with h5py.File(no_data, "w") as f:
        f.create_group("other")
    with pytest.raises(DatasetError, match="no_data.hdf5: missing group /data"):
        validate(no_data)
    path = write_raw(tmp_path / "ok.hdf5", {"demo_0": good_demo()}, masks={"train": [b"demo_0"]})
    with pytest.raises(DatasetError, match=r"ok.hdf5: unknown filter key 'valid' \(mask/ holds \['train'\]\)"):
        open_dataset(path, filter_key="valid")
    bad_json = write_raw(tmp_path / "json.hdf5", {"demo_0": good_demo()}, env_args="{not json")
    with pytest.raises(DatasetError, match="env_args is not valid JSON"):
        validate(bad_json)


def test_writer_is_atomic(tmp_path):
    path = tmp_path / "partial.hdf5"
    with pytest.raises(RuntimeError, match="boom"):
        with DemoWriter(path) as writer:
            demo = good_demo()
            writer.add_demo(demo["actions"], {"proprio": demo["obs/proprio"]})
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_out_of_range_and_non_finite_values(tmp_path):
    with pytest.raises(DatasetError, match="outside"):
        with DemoWriter(tmp_path / "x.hdf5") as writer:
            writer.add_demo(np.full((2, A), 2.0), {})
    nan_actions = np.zeros((2, A))
    nan_actions[1, 2] = np.nan
    with pytest.raises(DatasetError, match="demo demo_0, key 'actions': NaN/inf values"):
        with DemoWriter(tmp_path / "x.hdf5") as writer:
            writer.add_demo(nan_actions, {})
    with pytest.raises(DatasetError, match="demo demo_0, key 'obs/proprio': NaN/inf values"):
        with DemoWriter(tmp_path / "x.hdf5") as writer:
            writer.add_demo(np.zeros((2, A)), {"proprio": np.array([[0.0], [np.inf]])})
    assert list(tmp_path.iterdir()) == []


def test_robomimic_sequence_dataset_reads_our_file(tmp_path):
    pytest.importorskip("robomimic")
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset

    path = tmp_path / "ours.hdf5"
    with DemoWriter(path) as writer:
        for length in (4, 6):
            demo = good_demo(length, image_hw=(16, 16))
            writer.add_demo(demo["actions"], {k[4:]: v for k, v in demo.items() if k.startswith("obs/")})
        writer.finish({"env_name": "Lift", "env_type": 1, "type": 1, "env_kwargs": {}})
    ObsUtils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": ["proprio"], "rgb": ["agentview_image"]}})
    dataset = SequenceDataset(str(path), obs_keys=("proprio", "agentview_image"), dataset_keys=("actions",),
                              load_next_obs=False, seq_length=2, hdf5_cache_mode=None, filter_by_attribute="train")
    assert len(dataset) > 0
    item = dataset[0]
    assert item["actions"].shape == (2, A) and item["obs"]["agentview_image"].shape[0] == 2


def test_check_reads_no_image(tmp_path):
    """The check is cheap because images are judged by their metadata: a scrambled compressed frame passes it (and
    is reported when frames are read, see test_bad_inputs), while a NaN in a low-dim key fails it."""
    path = tmp_path / "demos.hdf5"
    with DemoWriter(path) as writer:
        for length in (6, 7):
            demo = good_demo(length, image_hw=(16, 16))
            writer.add_demo(demo["actions"], {k[4:]: v for k, v in demo.items() if k.startswith("obs/")})
        writer.finish({})
    with h5py.File(path, "r") as f:
        info = f["data/demo_1/obs/agentview_image"].id.get_chunk_info(2)
    raw = bytearray(path.read_bytes())
    raw[info.byte_offset + 4 : info.byte_offset + 40] = b"\xff" * 36
    path.write_bytes(bytes(raw))
    validate(path)
    with h5py.File(path, "a") as f:
        f["data/demo_0/obs/proprio"][2, 1] = np.inf
    with pytest.raises(DatasetError, match=r"demo demo_0, key 'obs/proprio': NaN/inf at step\(s\) \[2\] \(1 values\)"):
        validate(path)


# ---- ensure_dataset: the one way a run gets its demos ---------------------------------------------------------------
@pytest.mark.simulator  # imports envs (MuJoCo); the expert itself is replaced
def test_ensure_dataset_collects_with_the_task_variation_and_checks_what_it_collected(tmp_path, monkeypatch):
    envs = pytest.importorskip("envs")
    from s2policy.config import CollectConfig, TaskConfig
    from s2policy.data.collect import ensure_dataset
    from s2policy.errors import ConfigError
    from s2policy.train.synthetic import write_synthetic_demos

    calls = []

    def fake_collect(task, num_demos, path, **kwargs):
        calls.append((task, num_demos, kwargs))
        write_synthetic_demos(path, num_demos=2, length=4, image_size=16)
        with h5py.File(path, "a") as f:  # a damaged collection must not be trained on
            f["data/demo_1/actions"][0, 0] = np.nan
        return {}

    monkeypatch.setattr(envs, "collect_demos", fake_collect)
    task = TaskConfig(name="lift", variation={"placement_range": 0.1})
    collect = CollectConfig(num_demos=2, variation={"placement_range": 0.2})
    with pytest.raises(DatasetError, match="demo_1"):
        ensure_dataset(None, tmp_path / "demos.hdf5", task, collect, progress=False)
    assert calls[0][0] == "lift" and calls[0][2]["placement_range"] == 0.2  # collect.variation over task.variation
    with pytest.raises(ConfigError, match=r"task 'lift' does not support \['goal_radius'\]"):
        ensure_dataset(None, tmp_path / "other.hdf5", task, CollectConfig(variation={"goal_radius": 0.02}))
    assert len(calls) == 1 and not (tmp_path / "other.hdf5").exists()  # refused before collecting


def test_ensure_dataset_takes_a_lerobot_folder_and_names_a_missing_dataset(tmp_path):
    from s2policy.config import CollectConfig, TaskConfig
    from s2policy.data.collect import ensure_dataset
    from s2policy.data.lerobot_export import export_lerobot
    from s2policy.errors import ConfigError
    from s2policy.train.synthetic import write_synthetic_demos

    src = write_synthetic_demos(tmp_path / "demos.hdf5", num_demos=2, length=4, image_size=16)
    folder = export_lerobot(src, tmp_path / "lerobot", fps=20)
    assert ensure_dataset(str(folder), tmp_path / "unused.hdf5", TaskConfig(), CollectConfig()) == folder
    with pytest.raises(ConfigError, match=r"nowhere: not found \(a robomimic .hdf5 file or a LeRobot dataset folder; "
                                          r"leave dataset unset to collect demos for the task\)"):
        ensure_dataset(str(tmp_path / "nowhere"), tmp_path / "unused.hdf5", TaskConfig(), CollectConfig())
