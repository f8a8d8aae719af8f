"""The spatial head on merged S2 maps: map shapes (CNN and ViT, both grids), spatial softmax, the streamed map cache
(key, resume, float16 guard), a blob-position task a pooled head cannot learn and the spatial head does, and the
spatial policy downstream (save/load, export parity, the robot loop, the study config)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from s2policy.config import TrainRun, compose, load
from s2policy.data import DemoWriter
from s2policy.errors import ConfigError, DatasetError
from s2policy import build_s2_encoder
from s2policy.features import frames_to_tensor
from s2policy.features import maps as maps_module
from s2policy.features.maps import MapCache, StreamedMaps, build_map_cache, camera_feature_map, map_cache_key, map_shape
from s2policy.policy import Policy, SpatialOptions
from s2policy.policy.spatial import SpatialSoftmax
from s2policy.train import train
from s2policy.train.setup import check_head_inputs
from s2policy.train.synthetic import write_synthetic_demos

from .test_runtime_support import FakeRobot, observation, write_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]


def run_config(*overrides: str) -> dict:
    return compose("config", list(overrides))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_demos(tmp_path_factory.mktemp("data") / "demos.hdf5", num_demos=3, length=7,
                                 image_size=64)


# --- maps ----------------------------------------------------------------------------------------------------------
# tiny_cnn: 32 px crops -> 8 x 8 maps of 16 channels; tiny_vit: 32 px crops -> 4 x 4 patch tokens of 16 channels.
@pytest.mark.parametrize("encoder, per_crop", [("tiny_cnn", 8), ("tiny_vit", 4)])
@pytest.mark.parametrize("grid", [0, -1])
@pytest.mark.parametrize("frame", [(64, 64), (64, 96)])
def test_map_shapes_for_cnn_and_vit_on_both_grids(encoder, per_crop, grid, frame):
    s2 = build_s2_encoder(encoder, "random", {"img_sizes": [32, 64], "resize_output_to_idx": grid})
    crops = [p.grid for p in s2.plan(frame)]  # (1, 1 or 2) crops at 32 px, (2, 2 or 3) at 64 px
    expected = (2 * 16, crops[grid][0] * per_crop, crops[grid][1] * per_crop)
    fmap = camera_feature_map(s2, torch.rand(2, 3, *frame))
    assert fmap.shape == (2, *expected) and map_shape(s2, frame) == expected


def test_vit_patch_tokens_go_back_to_their_place_on_the_grid():
    """A 32 x 64 frame at one scale is two side-by-side crops: the right half of the map is the right crop's tokens."""
    s2 = build_s2_encoder("tiny_vit", "random", {"img_sizes": [32]})
    frames = torch.rand(2, 3, 32, 64)
    fmap = camera_feature_map(s2, frames)
    assert fmap.shape == (2, 16, 4, 8)
    with torch.inference_mode():
        for half, crop in enumerate((frames[..., :32], frames[..., 32:])):
            tokens = s2.encoder(crop)[:, 1:]  # (B, 16 patches row-major, C); the CLS token has no place
            expected = tokens.reshape(2, 4, 4, 16).permute(0, 3, 1, 2)
            torch.testing.assert_close(fmap[..., 4 * half:4 * half + 4], expected, rtol=1e-5, atol=1e-6)


def test_spatial_softmax_puts_the_keypoint_on_the_peak():
    kp = SpatialSoftmax(1, (4, 6), num_keypoints=1, temperature=0.01, learnable_temperature=False).eval()
    with torch.no_grad():
        kp.proj.weight.fill_(1.0)
        kp.proj.bias.zero_()
    x = torch.zeros(1, 1, 4, 6)
    x[0, 0, 2, 5] = 1.0  # row 2 of 4, column 5 of 6
    torch.testing.assert_close(kp(x), torch.tensor([[[5.5 / 6 * 2 - 1, 2.5 / 4 * 2 - 1]]]), atol=1e-3, rtol=0)


def test_spatial_options_are_checked_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match=r"policy=spatial has no option\(s\) \['history'\]"):
        SpatialOptions.from_config({"name": "spatial", "history": 4})
    with pytest.raises(ConfigError, match=r"policy.num_keypoints=0: expected a positive int"):
        SpatialOptions.from_config({"name": "spatial", "num_keypoints": 0})
    assert SpatialOptions.from_config(run_config("policy=spatial")["policy"]) == SpatialOptions()
    for override, message in [("policy.num_keypoints=0", r"policy.num_keypoints=0: expected a positive int"),
                              ("policy.map_shape=[1,2,3,4]", r"policy.map_shape=\[1,2,3,4\]: no such option")]:
        with pytest.raises(ConfigError, match=message):  # the typed run config checks them when it is loaded
            load(TrainRun, run_config("policy=spatial", override))
    with pytest.raises(ConfigError, match="needs a camera"):
        check_head_inputs(load(TrainRun, run_config("policy=spatial", "encoder=none")))
    missing = tmp_path / "never-created.hdf5"
    with pytest.raises(ConfigError, match="features.cache=true"):
        train(run_config("policy=spatial", "encoder=tiny_cnn", "features.cache=false", f"dataset={missing}",
                         f"out_dir={tmp_path / 'run'}"))
    assert not (tmp_path / "run").exists()


# --- the map cache -------------------------------------------------------------------------------------------------
def test_map_cache_streams_the_encoder_maps_and_its_key_holds_the_grid(dataset, tmp_path):
    folders = {}
    for grid in (0, -1):
        s2 = build_s2_encoder("tiny_cnn", "random", {"scales": [1, 2], "resize_output_to_idx": grid})
        cache, stats = build_map_cache(dataset, "agentview", s2, cache_root=tmp_path)
        assert not stats.reused and stats.frames == 21
        assert cache.shape == ((32, 8, 8) if grid == 0 else (32, 16, 16))
        assert cache.manifest["inputs"]["map_shape"] == list(cache.shape)
        with cache:
            from s2policy.data import open_dataset

            with open_dataset(dataset) as ds:
                frames = ds.obs_array("demo_1", "agentview_image")[()]
            direct = camera_feature_map(s2, frames_to_tensor(frames)).numpy()
            np.testing.assert_allclose(cache.rows("demo_1").astype(np.float32), direct, rtol=2e-3, atol=2e-3)
            assert cache.rows("demo_1").dtype == np.float16
            # StreamedMaps: rows of any steps in any order, repeated, across demos
            streamed = StreamedMaps([cache], ["demo_0", "demo_1", "demo_2"])
            got = streamed.gather(torch.tensor([9, 7, 9, 13]))  # demo_1 steps 2, 0, 2, 6
            assert got.dtype == torch.float32 and got.shape == (4, math.prod(cache.shape))
            np.testing.assert_array_equal(got.numpy(), cache.rows("demo_1", [2, 0, 2, 6]).reshape(4, -1))
            if grid == 0:  # the table stays on disk: a row changed in the file after loading is what gather returns
                part, first = cache.manifest["demos"]["demo_1"]
                with open(cache.folder / part, "r+b") as f:
                    f.seek((first + 2) * cache.row_bytes)
                    f.write(np.full(cache.shape, 7.0, np.float16).tobytes())
                assert (streamed.gather(torch.tensor([9])) == 7.0).all()
                with open(cache.folder / part, "r+b") as f:  # restore it for the reuse check below
                    f.seek((first + 2) * cache.row_bytes)
                    f.write(direct[2].astype(np.float16).tobytes())
        folders[grid] = cache.folder
        again, stats = build_map_cache(dataset, "agentview", s2, cache_root=tmp_path)
        assert stats.reused and again.folder == cache.folder
    assert folders[0] != folders[-1]
    key = {shape: map_cache_key("fp", {"enc": 1}, "agentview", (64, 64), "stored", shape)[0]
           for shape in [(32, 8, 8), (32, 16, 16)]}
    assert key[(32, 8, 8)] != key[(32, 16, 16)]


def test_interrupted_map_extraction_resumes_after_the_last_finished_demo(dataset, tmp_path, monkeypatch):
    s2 = build_s2_encoder("tiny_cnn", "random", {"scales": [1, 2]})
    reference, _ = build_map_cache(dataset, "agentview", s2, cache_root=tmp_path / "ref", batch_size=4)
    real, calls = maps_module._encode_maps, []

    def dies_on_the_fourth_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # batches of 4 over demos of 7 steps: demo_0 is done, demo_1 half written
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(maps_module, "_encode_maps", dies_on_the_fourth_batch)
    with pytest.raises(KeyboardInterrupt):
        build_map_cache(dataset, "agentview", s2, cache_root=tmp_path / "c", batch_size=4)
    monkeypatch.setattr(maps_module, "_encode_maps", real)
    folder = next((tmp_path / "c").glob("agentview-maps-*"))
    assert not (folder / "manifest.json").exists()
    cache, stats = build_map_cache(dataset, "agentview", s2, cache_root=tmp_path / "c", batch_size=4)
    assert stats.frames == 14  # demo_0 was kept
    for demo in ("demo_0", "demo_1", "demo_2"):
        np.testing.assert_array_equal(cache.rows(demo), reference.rows(demo))
    assert not list(folder.glob("*.progress.json"))


def test_damaged_map_rows_are_found_by_their_checksum_and_re_extracted_alone(dataset, tmp_path, caplog):
    s2 = build_s2_encoder("tiny_cnn", "random", {"scales": [1, 2]})
    cache, _ = build_map_cache(dataset, "agentview", s2, cache_root=tmp_path, batch_size=4)
    good = {d: cache.rows(d).copy() for d in cache.demos}
    assert set(cache.manifest["digests"]) == set(good)
    part, first = cache.manifest["demos"]["demo_1"]
    raw = bytearray((cache.folder / part).read_bytes())
    raw[(first + 3) * cache.row_bytes + 5] ^= 0x40  # one bit of one value of demo_1
    (cache.folder / part).write_bytes(bytes(raw))
    with caplog.at_level("WARNING"):
        repaired, stats = build_map_cache(dataset, "agentview", s2, cache_root=tmp_path, batch_size=4)
    assert "rows of 1 demo(s) do not match their checksums (demo_1)" in caplog.text
    assert stats.frames == 7 and not stats.reused  # only demo_1
    for demo, rows in good.items():
        np.testing.assert_array_equal(repaired.rows(demo), rows)
    (cache.folder / part).write_bytes(raw[:(first + 2) * cache.row_bytes])  # truncated inside demo_1
    repaired, stats = build_map_cache(dataset, "agentview", s2, cache_root=tmp_path, batch_size=4)
    assert stats.frames == 14  # demo_1 and demo_2 lost rows; demo_0 is intact
    for demo, rows in good.items():
        np.testing.assert_array_equal(repaired.rows(demo), rows)
    again, stats = build_map_cache(dataset, "agentview", s2, cache_root=tmp_path)
    assert stats.reused and stats.frames == 0


def test_full_disk_during_map_extraction_keeps_finished_demos_and_resumes(dataset, tmp_path, monkeypatch):
    import errno

    from s2policy.errors import DiskFullError

    s2 = build_s2_encoder("tiny_cnn", "random", {"scales": [1, 2]})
    real, calls = maps_module.os.pwrite, []

    def fills_up(fd, data, offset):
        calls.append(1)
        if len(calls) == 3:  # batches of 4 over demos of 7 steps: demo_0 is done
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(maps_module.os, "pwrite", fills_up)
    with pytest.raises(DiskFullError, match="no space left writing .*part-0-of-1.f16.*demos finished before it are kept"):
        build_map_cache(dataset, "agentview", s2, cache_root=tmp_path, batch_size=4)
    monkeypatch.setattr(maps_module.os, "pwrite", real)
    cache, stats = build_map_cache(dataset, "agentview", s2, cache_root=tmp_path, batch_size=4)
    assert stats.frames == 14


def test_maps_that_do_not_fit_float16_are_refused(dataset, tmp_path, monkeypatch):
    s2 = build_s2_encoder("tiny_cnn", "random", {"scales": [1]})
    monkeypatch.setattr(maps_module, "_encode_maps",
                        lambda enc, frames, *a: np.full((len(frames), 16, 8, 8), 1e6, np.float32))
    with pytest.raises(DatasetError,
                       match=r"camera 'agentview', demo demo_0 steps 0\.\.6: .*float16 \(max \|x\| 1e\+06\)"):
        build_map_cache(dataset, "agentview", s2, cache_root=tmp_path)
    assert not list(tmp_path.glob("*/manifest.json"))


# --- learning where the blob is ----------------------------------------------------------------------------------
def write_blob_demos(path: Path, num_demos: int = 12, length: int = 16, size: int = 32, blob: int = 4) -> Path:
    """Black frames with one white blob; the action is the blob's centre in [-1, 1] (x, y), proprio is noise. Blobs
    sit on tiny_cnn's stride-4 lattice, so its globally pooled features barely change with the position."""
    rng = np.random.default_rng(0)
    with DemoWriter(path) as writer:
        for _ in range(num_demos):
            xy = 4 * rng.integers(1, (size - blob) // 4, size=(length, 2))
            frames = np.zeros((length, size, size, 3), np.uint8)
            for t, (x, y) in enumerate(xy):
                frames[t, y:y + blob, x:x + blob] = 255
            actions = ((xy + blob / 2) / size * 2 - 1).astype(np.float32)
            writer.add_demo(actions, {"agentview_image": frames,
                                      "proprio": rng.normal(size=(length, 2)).astype(np.float32)})
        writer.finish({"env_name": "blob", "env_type": 2, "env_kwargs": {}},
                      masks={"train": writer.keys[:-3], "valid": writer.keys[-3:]})
    return path


def test_blob_position_defeats_a_pooled_head_and_the_spatial_head_learns_it(tmp_path):
    data = write_blob_demos(tmp_path / "blob.hdf5")
    losses = {}
    for head in ("mlp", "spatial"):
        extra = ["policy.num_keypoints=4", "policy.hidden=[32]"] if head == "spatial" else []
        out = train(run_config(
            "encoder=tiny_cnn", "s2.scales=[1]", f"dataset={data}", f"out_dir={tmp_path / head}", "task.camera_size=32",
            f"policy={head}", *extra, "train.steps=150", "train.batch_size=32", "train.lr=3e-3",
            "train.warmup_steps=5", "train.ema_decay=0.9", "train.log_every=50", "train.val_every=50",
            "train.checkpoint_every=1000", "train.progress=false", "train.tensorboard=false"))
        rows = [json.loads(line) for line in (tmp_path / head / "metrics.jsonl").read_text().splitlines()]
        losses[head] = {k: [r[k] for r in rows if k in r][-1] for k in ("train/loss", "valid/loss")}
    # normalised action units: 1.0 = predicting the mean. Pooled: cannot even fit the training demos.
    assert losses["mlp"]["train/loss"] > 0.25 and losses["mlp"]["valid/loss"] > 0.3, losses
    assert losses["spatial"]["valid/loss"] < 0.1 and losses["spatial"]["train/loss"] < 0.1, losses
    # the trained spatial policy acts on raw frames with the maps training read from the cache
    policy = Policy.load(out, device="cpu")
    cache = MapCache(next((Path(str(data) + ".features")).glob("agentview-maps-*")))
    from s2policy.data import open_dataset

    with open_dataset(data) as ds, cache:
        demo = ds.load_demo(cache.demos[0])
        feats = policy.encode_frames({"agentview": demo.obs["agentview_image"]})
        np.testing.assert_allclose(feats.numpy(), cache.rows(cache.demos[0]).reshape(len(feats), -1)
                                   .astype(np.float32), rtol=2e-3, atol=2e-3)
        action = policy.act({"agentview": demo.obs["agentview_image"][0], "proprio": demo.obs["proprio"][0]})
    assert np.abs(action - demo.actions[0]).max() < 0.3


# --- the spatial policy downstream -------------------------------------------------------------------------------
@pytest.mark.parametrize("grid, execution", [(0, "receding"), (-1, "ensemble")])
def test_save_load_gives_identical_actions_and_batched_acting_matches(tmp_path, grid, execution):
    ckpt = write_tiny_checkpoint(tmp_path / "p.safetensors", head="spatial", grid=grid, execution=execution)
    policy, loaded = Policy.load(ckpt, device="cpu"), Policy.load(ckpt, device="cpu")
    assert policy.horizon == 3 and policy.head.map_shape == ((1, 32, 8, 8) if grid == 0 else (1, 32, 16, 16))
    batched = Policy.load(ckpt, device="cpu")
    rng = np.random.default_rng(3)
    for _ in range(5):  # several chunks
        obs = [observation(rng, frame_shape=(64, 64)) for _ in range(2)]
        a = np.stack([policy.act(obs[0]), loaded.act(obs[0])])
        np.testing.assert_array_equal(a[0], a[1])
        np.testing.assert_allclose(batched.act_batch(obs)[0], a[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="training grid"):
        Policy.load(ckpt, device="cpu").act(observation(rng, frame_shape=(64, 96)))


@pytest.mark.parametrize("fmt, grid", [("onnx", -1), ("torchscript", 0)])
def test_export_parity(tmp_path, fmt, grid):
    pytest.importorskip("onnxruntime")
    from s2policy.runtime.export import ExportedPolicy, export_policy

    policy = Policy.load(write_tiny_checkpoint(tmp_path / "p.safetensors", head="spatial", grid=grid), device="cpu")
    manifest = export_policy(policy, tmp_path / "out", fmt, parity_steps=4)
    assert manifest.parity_max_abs_diff <= 1e-4 and manifest.feature_dim == math.prod(policy.head.map_shape)
    exported, rng = ExportedPolicy.load(tmp_path / "out"), np.random.default_rng(5)
    policy.reset()
    for _ in range(4):
        obs = observation(rng, frame_shape=(64, 64))
        np.testing.assert_allclose(exported.act(obs), policy.act(obs), atol=1e-4)


def test_spatial_policy_runs_in_the_robot_loop(tmp_path):
    from s2policy.runtime import ControlLoop, PolicyRunner, SafetyConfig

    ckpt = write_tiny_checkpoint(tmp_path / "p.safetensors", head="spatial", grid=-1)
    runner = PolicyRunner.from_checkpoint(ckpt, device="cpu")
    rng = np.random.default_rng(0)
    robot = FakeRobot(make_obs=lambda i: observation(rng, frame_shape=(64, 64), episode=i // 6))
    report = ControlLoop(robot, runner, hz=20, safety=SafetyConfig(low=-1, high=1)).run(steps=12)
    assert report.ticks == 12 and report.inferences == 12
    assert all(np.isfinite(a).all() and np.abs(a).max() <= 1 for a in robot.sent)
    assert report.stage_ms["encode"]["p50"] > 0


def test_spatial_study_config_composes_every_configuration():
    from s2policy.study import compose_train_config

    cfg = compose("study_spatial")
    heads = {}
    for name in cfg["only"]:
        run = compose_train_config([f"policy={cfg['policy']['name']}", *cfg["configurations"][name]])
        heads[name] = (run.policy.name, run.s2.img_sizes, run.s2.resize_output_to_idx)
        if run.policy.name == "spatial":
            check_head_inputs(run)
    assert heads == {"base": ("mlp", [224], 0), "base_s2": ("mlp", [224, 448], 0),
                     "base_spatial": ("spatial", [224], 0), "base_s2_spatial": ("spatial", [224, 448], 0),
                     "base_s2_spatial_448grid": ("spatial", [224, 448], -1)}
