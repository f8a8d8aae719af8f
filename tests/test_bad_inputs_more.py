"""The dataset check on files written the way other software writes them, and on more kinds of damage.

robomimic files are written here with robomimic's own conventions (demo_0 .. demo_11, so name order is not numeric
order; gzip / lzf chunked arrays; float64 actions; env_args as str or bytes; filter keys as byte strings through
robomimic's `create_hdf5_filter_key` when robomimic is installed). LeRobot folders are damaged copies of the fixtures
LeRobot's own writer made. Every damaged input must give, through `python -m s2policy.data validate`: exit code 2,
exactly one `error:` line naming the file and the key, no traceback, nothing written, every input byte unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from s2policy.data import open_episodes
from s2policy.data.__main__ import main as data_cli

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "lerobot"
ENV_ARGS = {"env_name": "Lift", "env_version": "1.5.2", "type": 1,
            "env_kwargs": {"camera_names": ["agentview"], "camera_heights": 16, "camera_widths": 16}}
NUM_DEMOS = 12


# ---- inputs ----------------------------------------------------------------------------------------------------------
def write_robomimic_style(path: Path, compression: str | None = "gzip", env_as_bytes: bool = False) -> Path:
    """A file laid out as robomimic's scripts write it (dataset_states_to_obs.py, split_train_val.py)."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        total = 0
        for i in range(NUM_DEMOS):
            t = 4 + i % 3
            demo = data.create_group(f"demo_{i}")
            demo.create_dataset("actions", data=rng.uniform(-1, 1, (t, 7)))  # float64, as robomimic stores them
            demo.create_dataset("states", data=rng.normal(size=(t, 9)))
            demo.create_dataset("rewards", data=np.zeros(t))
            demo.create_dataset("dones", data=np.eye(t, dtype=np.int64)[-1])
            for group in ("obs", "next_obs"):
                for key, width in (("robot0_eef_pos", 3), ("robot0_eef_quat", 4), ("robot0_gripper_qpos", 2)):
                    demo.create_dataset(f"{group}/{key}", data=rng.normal(size=(t, width)), compression=compression)
                demo.create_dataset(f"{group}/agentview_image", data=rng.integers(0, 256, (t, 16, 16, 3), np.uint8),
                                    compression=compression, chunks=(1, 16, 16, 3))
            demo.attrs["num_samples"] = t
            demo.attrs["model_file"] = "<mujoco model='lift'/>"
            total += t
        data.attrs["total"] = total
        env_args = json.dumps(ENV_ARGS, indent=4)
        data.attrs["env_args"] = np.bytes_(env_args.encode()) if env_as_bytes else env_args
    keys = [f"demo_{i}" for i in range(NUM_DEMOS)]
    try:
        from robomimic.utils.file_utils import create_hdf5_filter_key
    except ImportError:  # the same layout: a 1-D array of byte strings
        def create_hdf5_filter_key(hdf5_path, demo_keys, key_name):
            with h5py.File(hdf5_path, "a") as f:
                f[f"mask/{key_name}"] = np.array(demo_keys, dtype="S")
    create_hdf5_filter_key(str(path), keys[:10], "train")
    create_hdf5_filter_key(str(path), keys[10:], "valid")
    return path


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
            for p in sorted(folder.rglob("*"))}


def assert_refused(path: Path, folder: Path, expect: str, capsys) -> None:
    """`python -m s2policy.data validate path`: exit 2, one error line containing `expect`, nothing written."""
    before = snapshot(folder)
    capsys.readouterr()
    code = data_cli(["validate", str(path)])
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert err.count("error:") == 1 and "Traceback" not in out + err, err
    assert expect in err, err
    assert snapshot(folder) == before


def edit(path: Path, change: Callable[[h5py.File], None]) -> Path:
    with h5py.File(path, "a") as f:
        change(f)
    return path


def replace(f: h5py.File, name: str, values) -> None:
    del f[name]
    f.create_dataset(name, data=values)


def cut(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


# ---- robomimic files: written as robomimic writes them, read as robomimic reads them --------------------------------
@pytest.mark.parametrize("compression,env_as_bytes", [("gzip", False), ("lzf", True)])
def test_robomimic_style_file_reads_as_robomimic_reads_it(tmp_path, compression, env_as_bytes, capsys):
    path = write_robomimic_style(tmp_path / "demos.hdf5", compression, env_as_bytes)
    assert data_cli(["validate", str(path)]) == 0
    with open_episodes(path) as ds:
        assert ds.episodes == [f"demo_{i}" for i in range(NUM_DEMOS)]  # numeric order, not HDF5's name order
        assert ds.split() == ([f"demo_{i}" for i in range(10)], ["demo_10", "demo_11"])
        assert ds.env_args == ENV_ARGS and ds.cameras == ["agentview"]
        ours = {e: (ds.read_actions(e), ds.read_lowdim(e, ["robot0_eef_pos"])["robot0_eef_pos"],
                    np.concatenate([frames for _, frames in ds.iter_frames(e, "agentview", 4)])) for e in ds.episodes}
    pytest.importorskip("robomimic")
    import robomimic.utils.file_utils as FileUtils
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset

    assert FileUtils.get_env_metadata_from_dataset(str(path)) == ENV_ARGS
    ObsUtils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": ["robot0_eef_pos"], "rgb": ["agentview_image"]}})
    theirs = SequenceDataset(str(path), obs_keys=("robot0_eef_pos", "agentview_image"), dataset_keys=("actions",),
                             load_next_obs=False, seq_length=1, hdf5_cache_mode=None, hdf5_normalize_obs=False,
                             filter_by_attribute=None)
    assert list(theirs.demos) == list(ours)
    for i in range(len(theirs)):
        item, demo = theirs[i], theirs._index_to_demo_id[i]
        t = i - theirs._demo_id_to_start_indices[demo]
        actions, eef_pos, frames = ours[demo]
        np.testing.assert_allclose(item["actions"][0], actions[t], rtol=1e-6)  # ours are float32
        np.testing.assert_allclose(item["obs"]["robot0_eef_pos"][0], eef_pos[t], rtol=1e-6)
        np.testing.assert_array_equal(item["obs"]["agentview_image"][0], frames[t])


def test_robomimic_reads_our_files_as_we_do(tmp_path):
    """The other direction: a file of ours (DemoWriter, 12 demos so that name order is not numeric order) through
    robomimic's file utilities and SequenceDataset, step by step against our reader."""
    pytest.importorskip("robomimic")
    import robomimic.utils.file_utils as FileUtils
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset

    from s2policy.data import DemoWriter

    rng = np.random.default_rng(1)
    path = tmp_path / "ours.hdf5"
    with DemoWriter(path) as writer:
        for i in range(NUM_DEMOS):
            t = 3 + i % 4
            writer.add_demo(rng.uniform(-1, 1, (t, 7)), {"proprio": rng.normal(size=(t, 5)).astype(np.float32),
                                                        "agentview_image": rng.integers(0, 256, (t, 8, 8, 3), np.uint8)},
                            states=rng.normal(size=(t, 9)), rewards=np.zeros(t), dones=np.eye(t)[-1])
        writer.finish(ENV_ARGS)
    assert FileUtils.get_env_metadata_from_dataset(str(path)) == ENV_ARGS
    with open_episodes(path) as ds:
        train, valid = ds.split()
        assert FileUtils.get_demos_for_filter_key(str(path), "valid") == valid and valid
        ours = {e: (ds.read_actions(e), ds.read_lowdim(e, ["proprio"])["proprio"], ds.read_frames(
            e, "agentview", range(ds.episode_length(e)))) for e in train}
    ObsUtils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": ["proprio"], "rgb": ["agentview_image"]}})
    theirs = SequenceDataset(str(path), obs_keys=("proprio", "agentview_image"), dataset_keys=("actions",),
                             load_next_obs=False, seq_length=1, hdf5_cache_mode=None, hdf5_normalize_obs=False,
                             filter_by_attribute="train")
    assert list(theirs.demos) == train
    for i in range(len(theirs)):
        item, demo = theirs[i], theirs._index_to_demo_id[i]
        t = i - theirs._demo_id_to_start_indices[demo]
        actions, proprio, frames = ours[demo]
        np.testing.assert_array_equal(item["actions"][0], actions[t])
        np.testing.assert_array_equal(item["obs"]["proprio"][0], proprio[t])
        np.testing.assert_array_equal(item["obs"]["agentview_image"][0], frames[t])
    assert sum(len(a) for a, _, _ in ours.values()) == len(theirs)


def test_depth_maps_and_uint8_flags_are_not_mistaken_for_camera_frames(tmp_path):
    """Newer robomimic versions store depth as float (T, H, W, 1) `<camera>_depth`; other tools keep uint8 low-dim
    flags. Neither is a camera's frames (uint8 (T, H, W, 3) `<camera>_image`), so neither may fail the check."""
    path = write_robomimic_style(tmp_path / "demos.hdf5")
    with h5py.File(path, "a") as f:
        for demo in f["data"].values():
            t = demo["actions"].shape[0]
            demo.create_dataset("obs/agentview_depth", data=np.full((t, 16, 16, 1), 0.5, np.float32), compression="gzip")
            demo.create_dataset("obs/contact_flags", data=np.ones((t, 2), np.uint8))
    assert data_cli(["validate", str(path)]) == 0
    with open_episodes(path) as ds:
        assert ds.cameras == ["agentview"]
        assert ds.read_lowdim("demo_10", ["contact_flags"])["contact_flags"].shape == (5, 2)


def _num_samples(value):
    return lambda f: f["data/demo_3"].attrs.__setitem__("num_samples", value)


ROBOMIMIC_DAMAGE: dict[str, tuple[Callable[[Path], Path], str]] = {
    "truncated_early": (lambda p: cut(p, 0.05), "demos.hdf5: cannot open HDF5 file"),
    "truncated_late": (lambda p: cut(p, 0.999), "demos.hdf5: cannot open HDF5 file"),
    "num_samples_not_a_number": (lambda p: edit(p, _num_samples("five")),
                                 "demo demo_3: attr num_samples must be a non-negative integer, got 'five'"),
    "obs_is_an_array": (lambda p: edit(p, lambda f: replace(f, "data/demo_3/obs", np.zeros(3))),
                        "demo demo_3, key 'obs': expected a group of observation arrays, found an array"),
    "demo_behind_a_broken_external_link": (
        lambda p: edit(p, lambda f: f["data"].__setitem__("demo_12", h5py.ExternalLink("gone.hdf5", "/x"))),
        "demos.hdf5: /data/demo_12 cannot be opened"),
    "array_among_the_demos": (lambda p: edit(p, lambda f: f["data"].create_dataset("demo_12", data=np.zeros(3))),
                              "/data/demo_12: expected a demo group, found an array float64 (3,)"),
    "mask_names_a_demo_twice": (lambda p: edit(p, lambda f: replace(f, "mask/valid", np.array([b"demo_10", b"demo_10"]))),
                                "filter key mask/valid: names demos more than once: ['demo_10']"),
    "env_args_a_json_list": (lambda p: edit(p, lambda f: f["data"].attrs.__setitem__("env_args", "[1, 2]")),
                             "data attr env_args must be a JSON object, got list"),
    "env_args_a_json_string": (lambda p: edit(p, lambda f: f["data"].attrs.__setitem__("env_args", '"Lift"')),
                               "data attr env_args must be a JSON object, got str"),
    "env_kwargs_not_an_object": (lambda p: edit(p, lambda f: f["data"].attrs.__setitem__(
        "env_args", json.dumps({**ENV_ARGS, "env_kwargs": [1]}))), "'env_kwargs' must be a JSON object, got [1]"),
    "actions_without_dimensions": (lambda p: edit(p, lambda f: replace(f, "data/demo_0/actions", np.zeros((4, 0)))),
                                   "demo demo_0, key 'actions': no action dimension (shape (4, 0))"),
    "images_of_no_pixels": (lambda p: edit(p, lambda f: replace(f, "data/demo_0/obs/agentview_image",
                                                                np.zeros((4, 0, 0, 3), np.uint8))),
                            "demo demo_0, key 'obs/agentview_image': images of no pixels, shape (4, 0, 0, 3)"),
    "env_args_bytes_not_utf8": (lambda p: edit(p, lambda f: f["data"].attrs.__setitem__("env_args", np.bytes_(b"\xff{"))),
                                "data attr env_args is not valid JSON: 'utf-8' codec can't decode"),
}


def test_a_stale_total_and_overlapping_splits_are_warned_about_not_refused(tmp_path, caplog):
    """Neither changes what is trained on, and files of other tools carry them: a warning naming each, exit 0."""
    path = write_robomimic_style(tmp_path / "demos.hdf5")
    edit(path, lambda f: f["data"].attrs.__setitem__("total", 7))
    edit(path, lambda f: replace(f, "mask/valid", np.array([b"demo_2"])))
    with caplog.at_level("WARNING", logger="s2policy.data"):
        assert data_cli(["validate", str(path)]) == 0
    assert "/data attr total 7 != 60, the sum of the demos' num_samples" in caplog.text
    assert "filter keys mask/train and mask/valid share demos: ['demo_2']" in caplog.text


@pytest.mark.parametrize("name", sorted(ROBOMIMIC_DAMAGE))
def test_damaged_robomimic_file_is_refused_cleanly(name, tmp_path, capsys):
    damage, expect = ROBOMIMIC_DAMAGE[name]
    path = damage(write_robomimic_style(tmp_path / "demos.hdf5"))
    assert_refused(path, tmp_path, expect, capsys)


# ---- LeRobot folders written by LeRobot, then damaged ----------------------------------------------------------------
def copy_fixture(version: str, folder: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / version, folder / version))


def edit_info(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        info = json.loads((root / "meta/info.json").read_text())
        (root / "meta/info.json").write_text(json.dumps(change(info)))
    return apply


def edit_column(rel: str, name: str, change: Callable[[list], list]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(root / rel)
        values = pa.array(change(table.column(name).to_pylist()), type=table.schema.field(name).type)
        pq.write_table(table.set_column(table.schema.get_field_index(name), name, values), root / rel)
    return apply


def cut_file(rel: str, keep: float) -> Callable[[Path], None]:
    return lambda root: cut(root / rel, keep)


def drop_line(rel: str, index: int, duplicate: bool = False) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        lines = (root / rel).read_text().splitlines()
        lines = lines + lines[index:index + 1] if duplicate else lines[:index] + lines[index + 1:]
        (root / rel).write_text("\n".join(lines) + "\n")
    return apply


V30_DATA, V30_EPISODES = "data/chunk-000/file-000.parquet", "meta/episodes/chunk-000/file-000.parquet"
V30_FRONT = "videos/observation.images.front/chunk-000/file-000.mp4"


def _renumber_episode_2(root: Path) -> None:
    for rel in (V30_DATA, V30_EPISODES):
        edit_column(rel, "episode_index", lambda ids: [3 if i == 2 else i for i in ids])(root)


LEROBOT_DAMAGE: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "info_json_a_list": ("v30", lambda root: (root / "meta/info.json").write_text("[]"),
                         "meta/info.json: expected a JSON object, got list"),
    "fps_not_a_number": ("v30", edit_info(lambda i: {**i, "fps": "ten"}), "fps must be a positive number, got 'ten'"),
    "features_a_list": ("v21", edit_info(lambda i: {**i, "features": ["action"]}),
                        "'features' must map each feature name to an object"),
    "path_template_unfit": ("v30", edit_info(lambda i: {**i, "data_path": "data/{chunk}.parquet"}),
                            "data_path 'data/{chunk}.parquet' does not fit the v3.0 layout"),
    "data_parquet_truncated": ("v30", cut_file(V30_DATA, 0.9), f"{V30_DATA}: unreadable Parquet file"),
    "v21_data_parquet_truncated": ("v21", cut_file("data/chunk-000/episode_000001.parquet", 0.5),
                                   "episode_000001.parquet: unreadable Parquet file"),
    "episode_metadata_truncated": ("v30", cut_file(V30_EPISODES, 0.6), f"{V30_EPISODES}: unreadable Parquet file"),
    "video_cut_mid_stream": ("v30", cut_file(V30_FRONT, 0.9), f"{V30_FRONT}: box 'mdat' at byte"),
    "episode_index_gap": ("v30", _renumber_episode_2, "episode_index must run 0..2, got [0, 1, 3] (missing [2])"),
    "episode_metadata_row_lost": ("v21", drop_line("meta/episodes.jsonl", 2),
                                  "info.json: total_episodes 3 != 2 in the episode metadata"),
    "episode_listed_twice": ("v21", drop_line("meta/episodes.jsonl", 1, duplicate=True),
                             "the episode metadata lists episode_index [1] more than once"),
    "timestamps_at_twice_the_fps": ("v30", edit_column(V30_DATA, "timestamp", lambda ts: [2 * t for t in ts]),
                                    "episode 0, column 'timestamp': 0.2 s at frame 1, expected 0.1 s"),
    "episode_of_no_frames": ("v21", lambda root: (root / "meta/episodes.jsonl").write_text(
        (root / "meta/episodes.jsonl").read_text().replace('"length": 9', '"length": 0')),
        "the episode metadata gives episode(s) [1] no frames (length < 1)"),
    "declared_frame_size_wrong": ("v30", edit_info(lambda i: (i["features"]["observation.images.front"]["info"].update(
        {"video.height": 96, "video.width": 160}), i)[1]),
        f"{V30_FRONT}: frames of 48x80 (H x W), but meta/info.json declares observation.images.front 96x160"),
    "frame_repeated": ("v21", edit_column("data/chunk-000/episode_000000.parquet", "frame_index",
                                          lambda ids: [0, 0, *ids[2:]]),
                       "episode 0, column 'frame_index': expected 0..11, got 0 at position 1"),
}


# image features (frames as PNG cells in the data Parquet), in fixtures LeRobot wrote: v3.0 (front an image feature,
# episodes of 4, 3, 5 frames in one file) and v2.1 (both cameras image features, one file per episode)
V30_IMAGE_DATA, V21_IMAGE_DATA_2 = "data/chunk-000/file-000.parquet", "data/chunk-000/episode_000002.parquet"


def png_of(shape: tuple[int, ...]) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full(shape, 100, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def edit_cell(rel: str, feature: str, row: int, cell: dict) -> Callable[[Path], None]:
    return edit_column(rel, feature, lambda cells: [cell if i == row else c for i, c in enumerate(cells)])


FRONT, WRIST = "observation.images.front", "observation.images.wrist"
LEROBOT_DAMAGE.update({
    "image_cell_undecodable": ("v30_images", edit_cell(V30_IMAGE_DATA, FRONT, 5, {"bytes": b"\x89PNG broken", "path": None}),
                               f"{V30_IMAGE_DATA}: episode 1, frame 1, feature '{FRONT}': undecodable image"),
    "image_cell_empty": ("v21_images", edit_cell(V21_IMAGE_DATA_2, WRIST, 3, {"bytes": None, "path": None}),
                         f"{V21_IMAGE_DATA_2}: episode 2, frame 3, feature '{WRIST}': no image (the cell's bytes and "
                         "path are both null)"),
    "image_cell_names_a_missing_file": ("v21_images", edit_cell(V21_IMAGE_DATA_2, WRIST, 0,
                                                                {"bytes": None, "path": "frame_000000.png"}),
                                        f"feature '{WRIST}': the cell has no bytes and its image file "
                                        "'frame_000000.png' cannot be read"),
    "image_of_another_size": ("v30_images", edit_cell(V30_IMAGE_DATA, FRONT, 11, {"bytes": png_of((64, 48, 3)),
                                                                                  "path": None}),
                              f"episode 2, frame 4, feature '{FRONT}': image of 64x48 (H x W), but meta/info.json "
                              "declares 48x80"),
    "image_in_grey": ("v21_images", edit_cell(V21_IMAGE_DATA_2, FRONT, 2, {"bytes": png_of((48, 80)), "path": None}),
                      f"episode 2, frame 2, feature '{FRONT}': image in mode 'L' (1 channel(s)), but meta/info.json "
                      "declares 3 (RGB)"),
    "image_declared_with_4_channels": ("v30_images", edit_info(lambda i: (i["features"][FRONT].update(
        {"shape": [48, 80, 4]}), i)[1]), f"episode 0, frame 0, feature '{FRONT}': image in mode 'RGB' (3 channel(s)), "
                                         "but meta/info.json declares 4"),
    "image_feature_not_in_parquet": ("v30_images", edit_info(lambda i: (i["features"].update(
        {"observation.images.top": i["features"][FRONT]}), i)[1]),
        "file-000.parquet: no column(s) ['observation.images.top'] (declared in meta/info.json features)"),
})


@pytest.mark.parametrize("name", sorted(LEROBOT_DAMAGE))
def test_damaged_lerobot_dataset_is_refused_cleanly(name, tmp_path, capsys):
    pytest.importorskip("pyarrow")
    pytest.importorskip("av")
    version, damage, expect = LEROBOT_DAMAGE[name]
    root = copy_fixture(version, tmp_path)
    damage(root)
    assert_refused(root, tmp_path, expect, capsys)


def validate_as_a_user(path: Path) -> subprocess.CompletedProcess:
    """`python -m s2policy.data validate path` in a process that honours file permissions: as root (which reads any
    file) without the capabilities that let it."""
    command = [sys.executable, "-m", "s2policy.data", "validate", str(path)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make a file unreadable")
        caps = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *command]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.subprocess
@pytest.mark.parametrize("name", ["robomimic file", "lerobot video"])
def test_unreadable_file_is_refused_cleanly(name, tmp_path):
    if name == "robomimic file":
        target = root = write_robomimic_style(tmp_path / "demos.hdf5")
    else:
        root = copy_fixture("v30", tmp_path)
        target = root / V30_FRONT
    before = snapshot(tmp_path)
    target.chmod(0)
    try:
        done = validate_as_a_user(root)
    finally:
        target.chmod(0o644)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("error:") == 1 and "Traceback" not in done.stderr, done.stderr
    assert "Permission denied" in done.stderr and target.name in done.stderr, done.stderr
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("version,optional", [("v30", "meta/stats.json"), ("v21", "meta/episodes_stats.jsonl")])
def test_lerobot_dataset_without_statistics_reads(version, optional, tmp_path):
    """Statistics are LeRobot's normalisation; training computes its own, so a dataset without them is usable."""
    pytest.importorskip("pyarrow")
    root = copy_fixture(version, tmp_path)
    (root / optional).unlink()
    assert data_cli(["validate", str(root)]) == 0


def test_long_episode_with_float32_timestamps_reads(tmp_path):
    """LeRobot's writer stores timestamp = frame_index / fps as float32; 40,000 frames at 30 fps (22 minutes) round
    by up to 6e-5 s per value, more than LeRobot's 1e-4 s tolerance allows between two frames if taken literally."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    root = copy_fixture("v21", tmp_path)
    frames, fps = 40_000, 30
    info = json.loads((root / "meta/info.json").read_text())
    info["features"] = {k: v for k, v in info["features"].items() if v["dtype"] != "video"}  # rows only
    episodes = [json.loads(line) for line in (root / "meta/episodes.jsonl").read_text().splitlines()]
    episodes = [{**episodes[0], "length": frames}]
    info.update(fps=fps, total_episodes=1, total_frames=frames)
    (root / "meta/info.json").write_text(json.dumps(info))
    (root / "meta/episodes.jsonl").write_text(json.dumps(episodes[0]) + "\n")
    data = root / "data/chunk-000/episode_000000.parquet"
    first = pq.read_table(data).slice(0, 1).to_pylist()[0]
    steps = np.arange(frames)
    table = pa.table({"observation.state": pa.array([first["observation.state"]] * frames, pa.list_(pa.float32(), 6)),
                      "action": pa.array([first["action"]] * frames, pa.list_(pa.float32(), 6)),
                      "timestamp": pa.array((steps / fps).astype(np.float32)), "frame_index": pa.array(steps),
                      "episode_index": pa.array(np.zeros(frames, np.int64)), "index": pa.array(steps),
                      "task_index": pa.array(np.zeros(frames, np.int64))})
    pq.write_table(table, data)
    assert data_cli(["validate", str(root)]) == 0


def test_undecodable_video_leaves_no_feature_cache(tmp_path):
    """A stream damaged inside (sizes intact: the check passes) fails when decoded; the partial cache goes."""
    pytest.importorskip("av")
    from s2policy import build_s2_encoder
    from s2policy.errors import DatasetError
    from s2policy.features import build_feature_cache

    root = copy_fixture("v30", tmp_path)
    raw = bytearray((root / V30_FRONT).read_bytes())
    raw[3000:5000:7] = bytes(b ^ 0xFF for b in raw[3000:5000:7])
    (root / V30_FRONT).write_bytes(bytes(raw))
    assert data_cli(["validate", str(root)]) == 0
    before = snapshot(tmp_path)
    encoder = build_s2_encoder("tiny_cnn", "random", {"scales": [1]})
    with pytest.raises(DatasetError, match="file-000.mp4: video decoding failed"):
        build_feature_cache(root, "front", encoder, camera_size=None)
    assert snapshot(tmp_path) == before


def test_cleanup_after_bad_input_keeps_another_process_extraction(tmp_path):
    """What a failed extraction removes is only its own: a folder in which another process holds an extraction lock
    (another camera of the same dataset, started meanwhile), and the cache root holding it, stay."""
    import fcntl
    import subprocess
    import sys

    from s2policy.errors import DatasetError
    from s2policy.features.cache import discarded_on_bad_input

    root = tmp_path / "demos.hdf5.features"
    other = root / "wrist-0123"
    holder = None
    try:
        with pytest.raises(DatasetError):
            with discarded_on_bad_input(root):  # the root does not exist yet: this extraction makes it
                (root / "front-4567").mkdir(parents=True)
                (root / "front-4567" / "shard.npy").write_bytes(b"x")
                holder = subprocess.Popen([sys.executable, "-c", (
                    "import fcntl, pathlib, sys, time; p = pathlib.Path(sys.argv[1]); p.parent.mkdir(); "
                    "f = open(p, 'a'); fcntl.flock(f.fileno(), fcntl.LOCK_EX); print('locked', flush=True); "
                    "time.sleep(60)"), str(other / ".extract-0-of-1.lock")], stdout=subprocess.PIPE, text=True)
                assert holder.stdout.readline().strip() == "locked"
                raise DatasetError("frame 3 does not decode")
        assert sorted(p.name for p in root.iterdir()) == ["wrist-0123"]
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
    with open(other / ".extract-0-of-1.lock", "a") as f:  # released with its holder
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    with pytest.raises(DatasetError):
        with discarded_on_bad_input(tmp_path / "fresh"):  # alone: the root it made goes too
            (tmp_path / "fresh" / "front-4567").mkdir(parents=True)
            raise DatasetError("frame 3 does not decode")
    assert not (tmp_path / "fresh").exists()
