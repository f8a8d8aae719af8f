"""Catalogue of damaged inputs driven through the command lines: datasets, configs, weight files, policy files and
feature caches. For each: exit code 2, one message naming the problem, no traceback, no file left behind, every
input byte-identical afterwards.

Two tiers. The catalogue runs each CLI's real entry point (`train_policy.py` / `eval_policy.py` through runpy, as
`python <script>` does, and `python -m s2policy.runtime`'s `main`) in this process with output captured at the file
descriptor level: the same code path as a subprocess at a fraction of the start-up cost. The `subprocess` tier runs
one representative input per CLI as a real process, so what the catalogue asserts holds for the real exit code.
"""

from __future__ import annotations

import hashlib
import os
import runpy
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from s2policy.encoders.weights import WEIGHT_SPECS, resolve_weights_file
from s2policy import build_s2_encoder
from s2policy.features import build_feature_cache
from s2policy.train.synthetic import write_synthetic_demos

REPO = Path(__file__).resolve().parents[1]
TRAIN_ARGS = ["encoder=tiny_cnn", "task.camera_size=32", "train.steps=4", "train.batch_size=8", "train.warmup_steps=1",
              "train.log_every=1", "train.val_every=2", "train.checkpoint_every=2", "train.progress=false",
              "train.tensorboard=false"]


# ---- running a CLI ---------------------------------------------------------------------------------------------------
def run_cli(cli: str, argv: list[str]) -> int:
    """Exit code of one CLI invocation in this process (SystemExit code, or main's return value)."""
    if cli == "runtime":
        from s2policy.runtime.__main__ import main

        return main(argv)
    script = {"train": "train_policy.py", "eval": "eval_policy.py"}[cli]
    old_argv = sys.argv
    sys.argv = [script, *argv]
    try:
        runpy.run_path(str(REPO / script), run_name="__main__")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = old_argv
    return 0


def snapshot(folder: Path, skip_launcher_files: bool = False) -> dict[str, str]:
    """relative path -> sha256 of every file under `folder` (directories as '<dir>')."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if skip_launcher_files and (".hydra" in p.parts or p.suffix == ".log"):
            continue
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
    return out


# ---- inputs ----------------------------------------------------------------------------------------------------------
def dataset(folder: Path, name: str = "demos.hdf5") -> Path:
    return write_synthetic_demos(folder / name, num_demos=4, length=8)


def edit_h5(path: Path, edit: Callable[[h5py.File], None]) -> Path:
    with h5py.File(path, "a") as f:
        edit(f)
    return path


def replace_array(f: h5py.File, name: str, values: np.ndarray) -> None:
    del f[name]
    f.create_dataset(name, data=values)


def set_value(name: str, index: tuple, value: float) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        f[name][index] = value
    return edit


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def rewrite_safetensors(src: Path, dst: Path, edit: Callable[[dict], None], keep_metadata: bool = True) -> Path:
    with safe_open(str(src), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(src))
    edit(tensors)
    save_file(tensors, str(dst), metadata=meta if keep_metadata else None)
    return dst


def poison(tensors: dict, prefix: str, value: float) -> None:
    name = next(k for k in sorted(tensors) if k.startswith(prefix) and tensors[k].is_floating_point())
    tensors[name].view(-1)[0] = value


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """A tiny trained run folder (policy.safetensors + checkpoints/last.safetensors) to damage copies of."""
    folder = tmp_path_factory.mktemp("good")
    assert run_cli("train", [f"dataset={dataset(folder)}", f"out_dir={folder / 'run'}", *TRAIN_ARGS]) == 0
    return folder / "run"


@pytest.fixture(scope="module")
def efficientnet_file() -> Path:
    return resolve_weights_file("efficientnet_lite0", "pretrained")[0]


# ---- the catalogue ---------------------------------------------------------------------------------------------------
@dataclass
class Case:
    """`make(folder, good_run, weights)` writes the damaged input(s) into `folder` and returns (cli, argv)."""

    make: Callable[[Path, Path, Path], tuple[str, list[str]]]
    expect: str  # text the error message must contain
    launcher_rewrites: bool = False  # a resumed run folder: Hydra rewrites its own .hydra/ and log there


def train_on(edit: Callable[[h5py.File], None] | None = None, *extra: str):
    def make(folder: Path, run: Path, weights: Path) -> tuple[str, list[str]]:
        path = dataset(folder)
        if edit is not None:
            edit_h5(path, edit)
        return "train", [f"dataset={path}", f"out_dir={folder / 'run'}", *TRAIN_ARGS, *extra]
    return make


def train_with_file(write: Callable[[Path, Path], Path], *extra: str):
    """Training whose input file (weights, dataset) is written by `write(folder, weights)`."""
    def make(folder: Path, run: Path, weights: Path) -> tuple[str, list[str]]:
        data = dataset(folder)
        target = write(folder, weights)
        args = [f"dataset={data}", f"out_dir={folder / 'run'}", *TRAIN_ARGS, *extra]
        return "train", [a.replace("{file}", str(target)) for a in args]
    return make


def weights_case(write: Callable[[Path, Path], Path]):
    # task.camera_size=null: the stored 32 px frames as they are, so the config check (frames >= one 224 crop) passes
    # and the weight file is what fails
    return train_with_file(write, "encoder=efficientnet_lite0", "encoder.weights={file}", "task.camera_size=null")


def policy_case(cli: str, damage: Callable[[Path, Path], Path]):
    def make(folder: Path, run: Path, weights: Path) -> tuple[str, list[str]]:
        policy = damage(run / "policy.safetensors", folder / "policy.safetensors")
        if cli == "eval":
            return "eval", [f"checkpoint={policy}", "eval.episodes=1", "eval.workers=0", "progress=false"]
        return "runtime", ["--checkpoint", str(policy), "--seconds", "0.1"]
    return make


def eval_with_dataset(edit: Callable[[h5py.File], None]):
    """Evaluating a good policy against a damaged training dataset (its demo seeds and env settings are read)."""
    def make(folder: Path, run: Path, weights: Path) -> tuple[str, list[str]]:
        data = edit_h5(dataset(folder), edit)
        return "eval", [f"checkpoint={run / 'policy.safetensors'}", f"eval.dataset={data}", "eval.episodes=1",
                        "eval.workers=0", "progress=false", f"out_dir={folder / 'eval'}"]
    return make


def cache_case(damage: Callable[[Path], None]):
    """Training on a good dataset whose finished feature cache (built here, before the snapshot) is damaged."""
    def make(folder: Path, run: Path, weights: Path) -> tuple[str, list[str]]:
        path = dataset(folder)
        encoder = build_s2_encoder("tiny_cnn", "random", {"scales": [1, 2]})
        cache, _ = build_feature_cache(path, "agentview", encoder, camera_size=32)
        damage(cache.folder / "shards" / "demo_1.h5")
        # the run must rebuild exactly this encoder: tiny_cnn's random weights are seeded by its name
        return "train", [f"dataset={path}", f"out_dir={folder / 'run'}", *TRAIN_ARGS]
    return make


def _flip_feature_bytes(shard: Path) -> None:
    with h5py.File(shard, "r") as f:
        offset = f["data"].id.get_offset()
    data = bytearray(shard.read_bytes())
    data[offset + 5] ^= 0xFF
    shard.write_bytes(bytes(data))


def _nan_features_with_valid_checksum(shard: Path) -> None:
    from s2policy.features.cache import array_digest

    with h5py.File(shard, "a") as f:
        values = f["data"][()]
        values[2, 0] = np.nan
        f["data"][...] = values
        f["data"].attrs["sha256"] = array_digest(values)


def _shorter_actions(f: h5py.File) -> None:
    replace_array(f, "data/demo_1/actions", f["data/demo_1/actions"][:-2])


def _corrupt_image_chunk(f: h5py.File) -> None:
    """Scramble one gzip-compressed frame on disk: only reading that frame can notice (the check reads no image)."""
    ds = f["data/demo_1/obs/agentview_image"]
    info = ds.id.get_chunk_info(5)
    handle = f.id.get_vfd_handle()
    os.lseek(handle, info.byte_offset + 8, os.SEEK_SET)
    os.write(handle, b"\xff" * 24)


def _lerobot_nan_state(folder: Path, weights: Path) -> Path:
    """A LeRobot v3.0 dataset (written by LeRobot's own writer) with one NaN in observation.state."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(shutil.copytree(REPO / "tests" / "fixtures" / "lerobot" / "v30", folder / "lerobot"))
    data = root / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(data)
    state = table.column("observation.state").to_pylist()
    state[4][2] = float("nan")
    column = pa.array(state, type=table.schema.field("observation.state").type)
    pq.write_table(table.set_column(table.schema.get_field_index("observation.state"), "observation.state", column),
                   data)
    return root


def _drop_camera(f: h5py.File) -> None:
    del f["data/demo_3/obs/agentview_image"]


def _text_file(folder: Path, name: str) -> Path:
    (folder / name).write_text("this is not the file you are looking for\n")
    return folder / name


def _pickled_object(folder: Path, weights: Path) -> Path:
    path = folder / "pickle.pth"
    torch.save({"state": {"w": torch.zeros(2)}, "made_by": Path("/")}, path)  # a non-tensor object: needs unpickling
    return path


def _wrong_keys(folder: Path, weights: Path) -> Path:
    path = folder / "other_net.pth"
    torch.save(torch.nn.Linear(3, 4).state_dict(), path)
    return path


def _nan_weights(folder: Path, weights: Path) -> Path:
    state = torch.load(weights, map_location="cpu", weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point() and v.ndim == 4)
    state[name] = state[name].contiguous()
    state[name].view(-1)[7] = float("nan")
    path = folder / "nan_weights.pth"
    torch.save(state, path)
    return path


def _truncated_weights(folder: Path, weights: Path) -> Path:
    path = folder / "truncated.pth"
    shutil.copy(weights, path)
    return truncate(path)


def _nan_train_state(folder: Path, run: Path, weights: Path) -> tuple[str, list[str]]:
    out = folder / "run"
    shutil.copytree(run, out)
    state = out / "checkpoints" / "last.safetensors"
    rewrite_safetensors(state, state, lambda t: poison(t, "ema.", float("nan")))
    (out / "policy.safetensors").unlink()  # the run "was killed" before its end; resume it
    data = dataset(folder)
    return "train", [f"dataset={data}", f"out_dir={out}", *TRAIN_ARGS, "train.steps=6", "resume=true"]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    return dst


CASES: dict[str, Case] = {
    # datasets
    "dataset/nan_action": Case(train_on(set_value("data/demo_2/actions", (3, 1), np.nan)),
                               "demo demo_2, key 'actions': NaN/inf at step(s) [3]"),
    "dataset/inf_proprio": Case(train_on(set_value("data/demo_1/obs/proprio", (5, 0), np.inf)),
                                "demo demo_1, key 'obs/proprio': NaN/inf at step(s) [5]"),
    "dataset/nan_states": Case(train_on(set_value("data/demo_0/states", (0, 2), np.nan)),
                               "demo demo_0, key 'states': NaN/inf at step(s) [0]"),
    "dataset/actions_shorter_than_obs": Case(train_on(_shorter_actions),
                                             "demo demo_1, key 'actions': length 6 != num_samples 8"),
    "dataset/float_images": Case(train_on(lambda f: replace_array(
        f, "data/demo_0/obs/agentview_image", f["data/demo_0/obs/agentview_image"][()].astype(np.float32) / 255)),
        "demo demo_0, key 'obs/agentview_image': images must be uint8 (T, H, W, 3), got float32"),
    "dataset/channel_first_images": Case(train_on(lambda f: replace_array(
        f, "data/demo_2/obs/agentview_image", np.zeros((8, 3, 32, 32), np.uint8))),
        "demo demo_2, key 'obs/agentview_image': images must be uint8 (T, H, W, 3)"),
    "dataset/actions_out_of_range": Case(train_on(set_value("data/demo_3/actions", (0, 0), 4.0)),
                                         "demo demo_3, key 'actions': values outside [-1, 1]"),
    "dataset/integer_actions": Case(train_on(lambda f: replace_array(f, "data/demo_0/actions",
                                                                     np.zeros((8, 3), np.int64))),
                                    "demo demo_0, key 'actions': expected float (T, A), got int64"),
    "dataset/missing_actions": Case(train_on(lambda f: f.__delitem__("data/demo_2/actions")),
                                    "demo demo_2: missing 'actions'"),
    "dataset/proprio_width_differs": Case(train_on(lambda f: replace_array(
        f, "data/demo_2/obs/proprio", np.zeros((8, 4), np.float32))),
        "demo demo_2, key 'obs/proprio': per-step shape (4,)"),
    "dataset/camera_missing_in_one_demo": Case(train_on(_drop_camera),
                                               "demo demo_3: has no 'obs/agentview_image'"),
    "dataset/mask_names_missing_demo": Case(train_on(lambda f: replace_array(
        f, "mask/valid", np.array([b"demo_0", b"demo_9"]))),
        "filter key mask/valid: names demos not in /data: ['demo_9']"),
    "dataset/empty_mask": Case(train_on(lambda f: replace_array(f, "mask/train", np.array([], dtype="S8"))),
                               "filter key mask/train: empty"),
    "dataset/corrupt_image_chunk": Case(train_on(_corrupt_image_chunk),
                                        "key '/data/demo_1/obs/agentview_image': rows"),
    "dataset/nan_proprio_for_evaluation": Case(eval_with_dataset(set_value("data/demo_0/obs/proprio", (1, 1), np.nan)),
                                               "demo demo_0, key 'obs/proprio': NaN/inf at step(s) [1]"),
    "dataset/lerobot_nan_state": Case(train_with_file(_lerobot_nan_state, "dataset={file}"),
                                      "episode episode_000000, key 'proprio': NaN/inf at step(s) [4]"),
    "dataset/env_args_not_json": Case(train_on(lambda f: f["data"].attrs.__setitem__("env_args", "{oops")),
                                      "env_args is not valid JSON"),
    "dataset/no_data_group": Case(train_on(lambda f: f.move("data", "dataz")), "missing group /data"),
    "dataset/not_hdf5": Case(train_with_file(lambda folder, w: _text_file(folder, "notes.hdf5"), "dataset={file}"),
                             "notes.hdf5: not an HDF5 file"),
    "dataset/truncated": Case(train_with_file(lambda folder, w: truncate(dataset(folder, "cut.hdf5"), 0.3),
                                              "dataset={file}"), "cut.hdf5"),
    # configs
    "config/missing_dataset": Case(train_with_file(lambda folder, w: folder / "nowhere.hdf5", "dataset={file}"),
                                   "nowhere.hdf5: not found (a robomimic .hdf5 file or a LeRobot dataset folder"),
    "config/camera_size_below_native": Case(train_on(None, "task.camera_size=16"),
                                            "task.camera_size=16: must be >= encoder tiny_cnn's native input size 32"),
    "config/unknown_encoder_name": Case(train_on(None, "encoder.name=no_such_net"),
                                        'encoder.name="no_such_net": expected one of clip_vitb16,'),
    "config/unknown_proprio_key": Case(train_on(None, "task.proprio_keys=[joint_pos]"),
                                       "has no obs key(s) ['joint_pos']; available: ['agentview_image', 'object', 'proprio']"),
    "config/cache_dir_is_a_file": Case(train_with_file(lambda folder, w: _text_file(folder, "cache.txt"),
                                                       "features.cache_dir={file}"),
                                       "as the feature cache folder (features.cache_dir)"),
    # weight files (an encoder with official weights, given a local file)
    "weights/missing": Case(weights_case(lambda folder, w: folder / "absent.pth"), "no file at"),
    "weights/truncated": Case(weights_case(_truncated_weights), "truncated.pth"),
    "weights/not_a_torch_file": Case(weights_case(lambda folder, w: _text_file(folder, "weights.pth")),
                                     "cannot load efficientnet_lite0 weight file"),
    "weights/pickled_object": Case(weights_case(_pickled_object), "never unpickles arbitrary objects"),
    "weights/wrong_architecture": Case(weights_case(_wrong_keys), "2 tensors, but efficientnet_lite0 has 296"),
    "weights/nan_tensor": Case(weights_case(_nan_weights), "weight file holds non-finite tensors"),
    # policy files
    "policy/nan_head_eval": Case(policy_case("eval", lambda src, dst: rewrite_safetensors(
        src, dst, lambda t: poison(t, "head.", float("nan")))), "policy file holds non-finite tensors 'head."),
    "policy/inf_normaliser_robot": Case(policy_case("runtime", lambda src, dst: rewrite_safetensors(
        src, dst, lambda t: poison(t, "action_norm.", float("inf")))), "non-finite tensors 'action_norm."),
    "policy/truncated_eval": Case(policy_case("eval", lambda src, dst: truncate(_copy(src, dst))),
                                  "not a readable safetensors file"),
    "policy/no_metadata_robot": Case(policy_case("runtime", lambda src, dst: rewrite_safetensors(
        src, dst, lambda t: None, keep_metadata=False)), "not an s2policy policy"),
    "policy/text_file_robot": Case(policy_case("runtime", lambda src, dst: _text_file(dst.parent, dst.name)),
                                   "not a readable safetensors file"),
    "policy/nan_train_state_resume": Case(_nan_train_state, "holds non-finite tensors 'ema.", launcher_rewrites=True),
    # feature caches
    "cache/truncated_shard": Case(cache_case(lambda shard: truncate(shard)), "demo_1.h5 is missing, truncated"),
    "cache/flipped_bytes": Case(cache_case(_flip_feature_bytes), "demo_1.h5: 'data' does not match its checksum"),
    "cache/nan_features": Case(cache_case(_nan_features_with_valid_checksum), "demo_1.h5: 'data' holds NaN/inf"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_damaged_input_is_refused_cleanly(name, good_run, efficientnet_file, tmp_path, capfd):
    case = CASES[name]
    folder = tmp_path / "case"
    folder.mkdir()
    cli, argv = case.make(folder, good_run, efficientnet_file)
    before = snapshot(folder, case.launcher_rewrites)
    capfd.readouterr()
    code = run_cli(cli, argv)
    out, err = capfd.readouterr()
    assert code == 2, f"exit {code}\nstdout: {out[-2000:]}\nstderr: {err[-3000:]}"
    assert "Traceback" not in out + err, err
    assert err.count("error:") == 1, err
    assert case.expect in err, err
    assert snapshot(folder, case.launcher_rewrites) == before  # nothing written, changed or deleted


def test_catalogue_covers_every_kind_of_input():
    kinds = {}
    for name in CASES:
        kinds[name.split("/")[0]] = kinds.get(name.split("/")[0], 0) + 1
    assert len(CASES) >= 25 and set(kinds) == {"dataset", "config", "weights", "policy", "cache"}, kinds


# ---- real processes ----------------------------------------------------------------------------------------------
SUBPROCESS_CASES = ["dataset/nan_action", "policy/nan_head_eval", "policy/inf_normaliser_robot", "cache/flipped_bytes"]


@pytest.mark.subprocess
@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_real_process_exit_code_and_output(name, good_run, efficientnet_file, tmp_path):
    case = CASES[name]
    folder = tmp_path / "case"
    folder.mkdir()
    cli, argv = case.make(folder, good_run, efficientnet_file)
    command = {"train": [str(REPO / "train_policy.py")], "eval": [str(REPO / "eval_policy.py")],
               "runtime": ["-m", "s2policy.runtime"]}[cli]
    before = snapshot(folder)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, *command, *argv], env=env, capture_output=True, text=True, timeout=300,
                          check=False, cwd=folder)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr and done.stderr.count("error:") == 1, done.stderr
    assert case.expect in done.stderr
    assert snapshot(folder) == before


def test_weights_used_by_the_catalogue_are_an_official_format_file(efficientnet_file):
    assert efficientnet_file.name == WEIGHT_SPECS["efficientnet_lite0"].file_name
