"""LeRobot datasets: the native reader on datasets written by LeRobot's own writer (v3.0 and v2.1 fixtures, see
tests/fixtures/lerobot/make_lerobot_fixtures.py; cameras as videos, and as image features stored inside the Parquet
files), the bad-input errors, training on them, and the v3.0 export (read back natively always; by LeRobot's loader
when a LeRobot environment is configured)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from s2policy.data import DemoWriter, open_dataset, open_episodes, validate
from s2policy.data.lerobot_export import export_lerobot
from s2policy.data.video import VideoCursor, VideoWriter
from s2policy.errors import ConfigError, DatasetError
from tests.fixtures.lerobot import make_lerobot_fixtures as written
from tests.test_train import run_config

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "lerobot"
VERSIONS = {"v30": "lerobot-v3.0", "v21": "lerobot-v2.1"}
LENGTHS = written.EPISODE_LENGTHS
#: Mean absolute error (0-255 scale) that AV1 at CRF 30 stays under on these smooth test images.
CODEC_MAE = 6.0


def decode(reader, episode: str, camera: str, chunk: int = 5) -> np.ndarray:
    return np.concatenate([frames for _, frames in reader.iter_frames(episode, camera, chunk)])


def assert_same_frames(decoded: np.ndarray, source: np.ndarray) -> None:
    """Within codec tolerance, and each decoded frame is closest to its own source frame (no shift by one)."""
    assert decoded.shape == source.shape and decoded.dtype == np.uint8
    err = np.abs(decoded[:, None].astype(np.int16) - source[None].astype(np.int16)).mean(axis=(2, 3, 4))
    assert np.diag(err).mean() < CODEC_MAE, np.diag(err)
    np.testing.assert_array_equal(err.argmin(axis=1), np.arange(len(source)))


def copy_fixture(version: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / version, tmp_path / version))


@pytest.mark.parametrize("version", list(VERSIONS))
def test_reads_datasets_written_by_lerobot(version):
    """Everything the writer was given comes back: states and actions exactly, frames within codec tolerance and in
    order; for v3.0 also frame by frame what LeRobot's own loader decodes."""
    lerobot_means = FIXTURES / version / "lerobot_decoded.json"
    lerobot_means = json.loads(lerobot_means.read_text()) if lerobot_means.is_file() else None
    assert lerobot_means is not None or version == "v21"  # LeRobot 0.3 cannot load with today's `datasets`
    with open_episodes(FIXTURES / version) as r:
        assert r.format == VERSIONS[version] and r.fps == 10 and not r.actions_in_unit_range
        assert r.episodes == [f"episode_{i:06d}" for i in range(3)]
        assert [r.episode_length(e) for e in r.episodes] == list(LENGTHS)
        assert r.cameras == ["front", "wrist"] and r.lowdim_keys == ["proprio"]
        assert r.frame_shape("front") == (48, 80) and r.frame_shape("observation.images.wrist") == (64, 48)
        assert r.tasks("episode_000001") == ["push the cube left"]
        for i, ep in enumerate(r.episodes):
            state, action = written.episode_arrays(i, LENGTHS[i])
            np.testing.assert_array_equal(r.read_lowdim(ep, ["proprio"])["proprio"], state)
            np.testing.assert_array_equal(r.read_lowdim(ep, ["observation.state"])["observation.state"], state)
            actions = r.read_actions(ep)
            np.testing.assert_array_equal(actions, action)
            assert np.abs(actions).max() > 1  # joint angles in degrees: the robomimic range check must not apply
            for cam in ("front", "wrist"):
                frames = decode(r, ep, cam)
                assert_same_frames(frames, written.episode_frames(cam, i, LENGTHS[i]))
                if lerobot_means is not None:
                    np.testing.assert_allclose(frames.mean(axis=(1, 2)), lerobot_means[f"{cam}.{i}"], atol=0.05)
        train, valid = r.split()
        assert sorted(train + valid) == r.episodes and valid and not set(train) & set(valid)
    validate(FIXTURES / version)


# ---- image features (frames stored inside the Parquet files) ----
#: fixtures LeRobot wrote with `--image-cameras`: v3.0 by LeRobot 0.6.1 (front an image, wrist a video: mixed),
#: v2.1 by LeRobot 0.3.3 with use_videos=False (both cameras images)
IMAGE_VERSIONS = {"v30_images": ("lerobot-v3.0", {"front"}), "v21_images": ("lerobot-v2.1", {"front", "wrist"})}
IMAGE_LENGTHS = (4, 3, 5)
V21_FRONT_0 = "data/chunk-000/episode_000000.parquet"


def edit_image_cells(file: Path, feature: str, change) -> None:
    """Rewrite an image column: `change` maps the list of {bytes, path} cells to new cells."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(file)
    i = table.schema.get_field_index(feature)
    cells = pa.array(change(table.column(feature).to_pylist()), type=table.schema.field(feature).type)
    pq.write_table(table.set_column(i, feature, cells), file)


def png(frame: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("version", list(IMAGE_VERSIONS))
def test_reads_image_features_written_by_lerobot(version, caplog):
    """Image features are cameras like videos: the PNG frames LeRobot's writer embedded come back exactly, at any
    steps, beside a video camera (v3.0) or alone (v2.1); what LeRobot's own loader decodes matches too."""
    fmt, image_cameras = IMAGE_VERSIONS[version]
    lerobot_means = FIXTURES / version / "lerobot_decoded.json"
    lerobot_means = json.loads(lerobot_means.read_text()) if lerobot_means.is_file() else None
    assert lerobot_means is not None or version == "v21_images"
    with open_episodes(FIXTURES / version) as r:
        assert r.format == fmt and r.cameras == ["front", "wrist"] and r.lowdim_keys == ["proprio"]
        assert r.camera_keys == {"front": "observation.images.front", "wrist": "observation.images.wrist"}
        assert r.frame_shape("front") == (48, 80) and r.frame_shape("observation.images.wrist") == (64, 48)
        assert set(r.image_features) == {f"observation.images.{c}" for c in image_cameras}
        for i, ep in enumerate(r.episodes):
            assert r.episode_length(ep) == IMAGE_LENGTHS[i]
            state, action = written.episode_arrays(i, IMAGE_LENGTHS[i])
            np.testing.assert_array_equal(r.read_lowdim(ep, ["proprio"])["proprio"], state)
            np.testing.assert_array_equal(r.read_actions(ep), action)
            for cam in ("front", "wrist"):
                source = written.episode_frames(cam, i, IMAGE_LENGTHS[i])
                frames = decode(r, ep, cam, chunk=2)
                if cam in image_cameras:  # PNG is lossless
                    np.testing.assert_array_equal(frames, source)
                    np.testing.assert_array_equal(r.read_frames(ep, cam, [2, 0, 2]), source[[2, 0, 2]])
                else:
                    assert_same_frames(frames, source)
                if lerobot_means is not None:
                    np.testing.assert_allclose(frames.mean(axis=(1, 2)), lerobot_means[f"{cam}.{i}"], atol=0.05)
        with pytest.raises(DatasetError, match=r"episode 1 has 3 frames; steps \[3\] are out of range"):
            r.read_frames("episode_000001", "front", [0, 3])
    with caplog.at_level("INFO"):
        validate(FIXTURES / version)
    assert "checked by their image headers (presence, size, channels); their pixel data is decoded" in caplog.text


def test_image_cells_without_bytes_read_the_file_their_path_names(tmp_path):
    """A cell may hold only a path (Hugging Face's Image feature allows it): relative to the dataset folder."""
    root = copy_fixture("v21_images", tmp_path)
    folder = "images/observation.images.front/episode_000000"
    edit_image_cells(root / V21_FRONT_0, "observation.images.front",
                     lambda cells: [{"bytes": None, "path": f"{folder}/{c['path']}"} for c in cells])
    validate(root)
    with open_episodes(root) as r:
        np.testing.assert_array_equal(decode(r, "episode_000000", "front"), written.episode_frames("front", 0, 4))
    (root / folder / "frame_000002.png").unlink()
    with open_episodes(root) as r, pytest.raises(
            DatasetError, match=r"episode_000000.parquet: episode 0, frame 2, feature 'observation.images.front': the "
                                r"cell has no bytes and its image file '.*frame_000002.png' cannot be read"):
        decode(r, "episode_000000", "front")


def test_jpeg_image_cells_read(tmp_path):
    """Hub datasets converted from other sources may hold JPEG cells: they decode like PNG (within JPEG's loss)."""
    import io

    from PIL import Image

    def jpeg(frame: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=95)
        return buf.getvalue()

    root = copy_fixture("v30_images", tmp_path)
    source = written.episode_frames("front", 0, IMAGE_LENGTHS[0])
    edit_image_cells(root / "data/chunk-000/file-000.parquet", "observation.images.front",
                     lambda cells: [{"bytes": jpeg(source[n]), "path": None} if n < len(source) else c
                                    for n, c in enumerate(cells)])
    validate(root)
    with open_episodes(root) as r:
        frames = decode(r, "episode_000000", "front")
        assert not np.array_equal(frames, source)  # JPEG, not the PNG
        assert_same_frames(frames, source)
        np.testing.assert_array_equal(decode(r, "episode_000001", "front"), written.episode_frames("front", 1, 3))


def test_a_depth_image_feature_is_checked_but_is_no_camera(tmp_path):
    """LeRobot marks depth maps `info.is_depth_map` (16-bit single-channel PNG): not a camera, but its cells are
    still checked against their declared shape; naming it as a camera says why it cannot be one."""
    import io

    from PIL import Image

    root = copy_fixture("v21_images", tmp_path)
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["observation.images.wrist"].update(shape=[64, 48, 1], info={"is_depth_map": True})
    (root / "meta/info.json").write_text(json.dumps(info))

    def depth_png(_: dict) -> dict:
        buf = io.BytesIO()
        Image.fromarray(np.full((64, 48), 1234, np.uint16)).save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}

    for f in sorted((root / "data").rglob("*.parquet")):
        edit_image_cells(f, "observation.images.wrist", lambda cells: [depth_png(c) for c in cells])
    validate(root)
    with open_episodes(root) as r:
        assert r.cameras == ["front"] and r.frame_shape("wrist") is None
        with pytest.raises(DatasetError, match=r"observation.images.wrist is an image feature of shape \[64, 48, 1\] "
                                               r"\(names .*, a depth map\): a camera must be RGB \(H, W, 3\)"):
            decode(r, "episode_000000", "wrist")
    edit_image_cells(root / V21_FRONT_0, "observation.images.wrist",
                     lambda cells: [{"bytes": png(np.zeros((64, 48, 3), np.uint8)), "path": None}] + cells[1:])
    with pytest.raises(DatasetError, match=r"episode 0, frame 0, feature 'observation.images.wrist': image in mode "
                                           r"'RGB' \(3 channel\(s\)\), but meta/info.json declares 1"):
        validate(root)


def test_frame_fingerprint_follows_the_image_cells(tmp_path):
    """The feature cache is keyed by the frames: editing one image cell must change it, a copy must not."""
    import hashlib

    def fingerprint(root: Path) -> str:
        h = hashlib.sha256()
        with open_episodes(root) as r:
            r.hash_frames(h, "front")
        return h.hexdigest()

    root = copy_fixture("v30_images", tmp_path)
    before = fingerprint(root)
    assert fingerprint(FIXTURES / "v30_images") == before
    other = png(written.camera_frame("front", 2, 0))
    edit_image_cells(root / "data/chunk-000/file-000.parquet", "observation.images.front",
                     lambda cells: [{**c, "bytes": other} if n == 5 else c for n, c in enumerate(cells)])
    assert fingerprint(root) != before


def test_damaged_pixel_stream_fails_the_cache_build_and_leaves_nothing(tmp_path):
    """A PNG cut inside its pixel data has a valid header (the cheap check passes it); decoding for the feature cache
    refuses it with the file, episode, frame and feature, and no cache is left behind."""
    from s2policy import build_s2_encoder
    from s2policy.features import build_feature_cache

    root = copy_fixture("v21_images", tmp_path)
    edit_image_cells(root / "data/chunk-000/episode_000001.parquet", "observation.images.wrist",
                     lambda cells: [{**c, "bytes": c["bytes"][:80]} if n == 1 else c for n, c in enumerate(cells)])
    validate(root)  # headers only
    encoder = build_s2_encoder("tiny_cnn", "random", {"scales": [1, 2]})
    with pytest.raises(DatasetError, match=r"episode_000001.parquet: episode 1, frame 1, feature "
                                           r"'observation.images.wrist': undecodable image"):
        build_feature_cache(root, "wrist", encoder, cache_root=tmp_path / "cache", device="cpu")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*"))


def test_training_refuses_a_damaged_image_cell_before_any_work(tmp_path):
    from s2policy.train import train

    root = copy_fixture("v21_images", tmp_path)
    edit_image_cells(root / V21_FRONT_0, "observation.images.wrist",
                     lambda cells: cells[:2] + [{"bytes": None, "path": None}] + cells[3:])
    with pytest.raises(DatasetError, match=r"episode_000000.parquet: episode 0, frame 2, feature "
                                           r"'observation.images.wrist': no image \(the cell's bytes and path"):
        train(run_config(root, tmp_path / "run", "task.cameras=[front,wrist]", "task.camera_size=null"))
    assert not (tmp_path / "v21_images.features").exists() and not (tmp_path / "run" / "policy.safetensors").exists()


@pytest.mark.parametrize("version", list(IMAGE_VERSIONS))
def test_training_on_image_feature_datasets(version, tmp_path):
    """Training reads image-feature cameras like video ones: the cached features equal S2 on the stored frames."""
    from s2policy import build_s2_encoder
    from s2policy.features import FeatureCache, frames_to_tensor
    from s2policy.policy import Policy
    from s2policy.train import train

    root = copy_fixture(version, tmp_path)
    out = train(run_config(root, tmp_path / "run", "task.cameras=[front,wrist]", "task.camera_size=null",
                           "train.steps=10", "train.val_every=5", "train.checkpoint_every=5"))
    policy = Policy.load(out, device="cpu")
    assert policy.config.cameras == ["front", "wrist"] and policy.config.action_dim == 6
    encoder = build_s2_encoder("tiny_cnn", "random", {"scales": [1, 2]})
    encoder.load_state_dict(policy.encoder.state_dict())
    cache_dir = next((tmp_path / f"{version}.features").glob("front-*"))
    with FeatureCache(cache_dir) as cache:
        direct = encoder.embed(frames_to_tensor(written.episode_frames("front", 2, IMAGE_LENGTHS[2]))).detach()
        np.testing.assert_allclose(cache.embeddings("episode_000002").astype(np.float32), direct.numpy(),
                                   rtol=2e-3, atol=2e-3)
    with open_episodes(root) as r:
        obs = {cam: decode(r, "episode_000000", cam)[0] for cam in ("front", "wrist")}
        obs["proprio"] = r.read_lowdim("episode_000000", ["proprio"])["proprio"][0]
    action = policy.act(obs)
    assert action.shape == (6,) and np.isfinite(action).all()


def test_v3_files_are_decoded_sequentially_once(monkeypatch):
    """Episodes read in order decode each camera's file front to back: one seek per file, none per episode."""
    seeks: list[float] = []
    original = VideoCursor._seek
    monkeypatch.setattr(VideoCursor, "_seek", lambda self, t: (seeks.append(t), original(self, t))[1])
    with open_episodes(FIXTURES / "v30") as r:
        for ep in r.episodes:
            for cam in r.cameras:
                decode(r, ep, cam)
        assert seeks == [0.0, 0.0]
        decode(r, "episode_000001", "front")  # out of order: one seek to that episode
        assert len(seeks) == 3
        next(r.iter_frames("episode_000002", "front", 4))  # a reader that stops early ...
        frames = decode(r, "episode_000002", "front")  # ... does not leave the next read mid-episode
        assert_same_frames(frames, written.episode_frames("front", 2, LENGTHS[2]))


def test_missing_info_json(tmp_path):
    root = copy_fixture("v30", tmp_path)
    (root / "meta" / "info.json").unlink()
    with pytest.raises(DatasetError, match=r"v30: missing meta/info.json \(not a LeRobot dataset folder"):
        open_episodes(root)


def test_unsupported_version(tmp_path):
    root = copy_fixture("v21", tmp_path)
    info = json.loads((root / "meta/info.json").read_text())
    (root / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v2.0"}))
    with pytest.raises(DatasetError, match=r"codebase_version 'v2.0' is not supported \(supported: v2.1, v3.0"):
        open_episodes(root)


def test_missing_feature_keys_list_the_available_ones(tmp_path):
    from s2policy.features import build_feature_cache
    from s2policy.train.data import load_steps

    with open_episodes(FIXTURES / "v30") as r, pytest.raises(
        DatasetError, match=r"no feature 'observation.gripper' for key 'gripper'; available low-dim features: "
                            r"\['action', 'observation.state'\]"):
        r.read_lowdim("episode_000000", ["gripper"])
    with pytest.raises(ConfigError, match=r"no feature 'observation.gripper'.*task.proprio_keys"):
        load_steps(str(FIXTURES / "v30"), ["episode_000000"], ["proprio", "gripper"])
    with pytest.raises(ConfigError, match=r"observation.images.top for camera 'top' is absent \(image keys present: "
                                          r"\['observation.images.front', 'observation.images.wrist'\]"):
        build_feature_cache(FIXTURES / "v30", "top", None, cache_root=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_no_cache_mode_is_refused_for_video_datasets():
    """features.cache=false reads frames at random steps: one clear error instead of decoding episodes per batch."""
    from s2policy.train.data import EncodedFeatures, load_steps

    steps = load_steps(str(FIXTURES / "v21"), ["episode_000000"], ["proprio"])
    with pytest.raises(ConfigError, match="features.cache=false reads frames at random steps.*use features.cache=true"):
        EncodedFeatures(str(FIXTURES / "v21"), steps, ["front"], None, "cpu")


def test_no_cache_mode_reads_image_feature_cameras_at_random_steps():
    """Image cells decode one step at a time, so features.cache=false works for them (not for a video beside them)."""
    import torch

    from s2policy import build_s2_encoder
    from s2policy.features import frames_to_tensor
    from s2policy.train.data import EncodedFeatures, load_steps

    encoder = build_s2_encoder("tiny_cnn", "random", {"scales": [1, 2]})
    steps = load_steps(str(FIXTURES / "v21_images"), ["episode_000002", "episode_000000"], ["proprio"])
    features = EncodedFeatures(str(FIXTURES / "v21_images"), steps, ["front", "wrist"], encoder, torch.device("cpu"))
    try:
        idx = torch.tensor([7, 0, 3, 7])  # episode_000000 step 3, episode_000002 step 0, ... (in load order)
        got = features.gather(idx)
    finally:
        features.close()
    where = steps.locate(idx)
    expected = [torch.cat([encoder.embed(frames_to_tensor(written.camera_frame(cam, int(d[-1]), t)[None]))
                           for cam in ("front", "wrist")], dim=1) for d, t in where]
    torch.testing.assert_close(got, torch.cat(expected).detach(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match=r"the video camera\(s\) \['wrist'\] can only do by decoding whole episodes"):
        EncodedFeatures(str(FIXTURES / "v30_images"), steps, ["front", "wrist"], encoder, torch.device("cpu"))


def _reencode(src: Path, dst: Path, fps: int, keep: int) -> None:
    cursor = VideoCursor(src, 10)
    frames = np.concatenate([f for _, f in cursor.read(0.0, keep, 64)])
    cursor.close()
    writer = VideoWriter(dst, fps, *frames.shape[1:3], codec="libx264")
    writer.write(frames)
    writer.close()


@pytest.mark.parametrize("version", list(VERSIONS))
def test_video_shorter_than_parquet_rows(version, tmp_path):
    root = copy_fixture(version, tmp_path)
    with open_episodes(root) as r:
        path, _ = r.episode("episode_000002").videos["observation.images.wrist"]
    _reencode(path, tmp_path / "short.mp4", 10, keep=30 if version == "v30" else 9)
    shutil.copy(tmp_path / "short.mp4", path)
    have, needed = (30, 36) if version == "v30" else (9, 15)  # v3.0: episode 2 is frames 21..35 of a shared file
    with pytest.raises(DatasetError, match=rf"1 problem\(s\):\n  videos/\S*wrist\S*\.mp4: {have} frames but episode "
                                           rf"episode_000002 needs {needed} \(video shorter than its Parquet rows\)"):
        validate(root)
    with open_episodes(root) as r, pytest.raises(DatasetError, match=r"video ends after \d+ of the 15 frames"):
        decode(r, "episode_000002", "wrist")


def test_mismatched_fps_between_cameras(tmp_path):
    root = copy_fixture("v30", tmp_path)
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["observation.images.wrist"]["info"]["video.fps"] = 5
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"cameras have mismatched fps \(observation.images.front 10, "
                                           r"observation.images.wrist 5; dataset fps 10\)"):
        open_episodes(root)
    # info.json consistent, but a stream itself runs at another rate
    root = copy_fixture("v21", tmp_path / "streams")
    for path in sorted((root / "videos/chunk-000/observation.images.wrist").glob("*.mp4")):
        _reencode(path, path.with_suffix(".tmp.mp4"), 5, keep=_frames_in(path))
        path.with_suffix(".tmp.mp4").replace(path)
    with pytest.raises(DatasetError, match=r"cameras have mismatched fps \(observation.images.front 10, "
                                           r"observation.images.wrist 5; dataset fps 10\)"):
        validate(root)


def _frames_in(path: Path) -> int:
    from s2policy.data.video import stream_info

    return stream_info(path)[1]


def test_training_rejects_a_bad_dataset_before_any_work(tmp_path):
    from s2policy.train import train

    root = copy_fixture("v21", tmp_path)
    shutil.copy(root / "videos/chunk-000/observation.images.front/episode_000001.mp4",
                root / "videos/chunk-000/observation.images.front/episode_000000.mp4")
    with pytest.raises(DatasetError, match="video shorter than its Parquet rows"):
        train(run_config(root, tmp_path / "run", "task.cameras=[front]", "task.camera_size=null"))
    assert not (tmp_path / "v21.features").exists() and not (tmp_path / "run" / "policy.safetensors").exists()


@pytest.mark.subprocess
def test_train_policy_cli_on_a_lerobot_v3_dataset(tmp_path):
    """The CLI end to end: two non-square cameras through S2's per-axis tiling, actions in degrees normalised from
    the data, a split by episode; the cached features equal S2 applied to the decoded frames."""
    from s2policy import build_s2_encoder
    from s2policy.features import FeatureCache, frames_to_tensor
    from s2policy.policy import Policy

    root = copy_fixture("v30", tmp_path)
    out = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "train_policy.py"), "experiment=smoke", f"dataset={root}", f"out_dir={out}",
           "task.cameras=[front,wrist]", "train.steps=20", "train.progress=false"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    policy = Policy.load(out / "policy.safetensors", device="cpu")
    assert policy.config.cameras == ["front", "wrist"] and policy.config.action_dim == 6
    with open_episodes(root) as r:
        train_eps, _ = r.split()
        actions = np.concatenate([r.read_actions(e) for e in train_eps])
        np.testing.assert_allclose(policy.action_norm.mean.numpy(), actions.mean(0), rtol=1e-5)
        np.testing.assert_allclose(policy.action_norm.std.numpy(), actions.std(0), rtol=1e-4)
        encoder = build_s2_encoder("tiny_cnn", "random", {"scales": [1, 2]})
        encoder.load_state_dict(policy.encoder.state_dict())
        for cam, shape in (("front", (48, 80)), ("wrist", (64, 48))):
            frames = decode(r, "episode_000002", cam)
            assert frames.shape[1:3] == shape
            cache_dir = next((tmp_path / "v30.features").glob(f"{cam}-*"))
            with FeatureCache(cache_dir) as cache:
                direct = encoder.embed(frames_to_tensor(frames)).detach().numpy()
                np.testing.assert_allclose(cache.embeddings("episode_000002").astype(np.float32), direct,
                                           rtol=2e-3, atol=2e-3)
        obs = {"front": decode(r, "episode_000000", "front")[0], "wrist": decode(r, "episode_000000", "wrist")[0],
               "proprio": r.read_lowdim("episode_000000", ["proprio"])["proprio"][0]}
    action = policy.act(obs)
    assert action.shape == (6,) and np.isfinite(action).all() and np.abs(action).max() > 1


# ---- export ----

def smooth_frames(length: int, h: int, w: int, phase: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([np.stack([(xx * 3 + 6 * t) % 256, (yy * 4 + 30 * phase) % 256,
                               np.full_like(xx, 80 + 8 * t)], -1) for t in range(length)]).astype(np.uint8)


def write_lift_like(path: Path, lengths=(10, 11, 12)) -> Path:
    """A robomimic file shaped like collect_demos output: two cameras (one non-square), proprio, object, seeds."""
    rng = np.random.default_rng(0)
    with DemoWriter(path) as w:
        for d, n in enumerate(lengths):
            obs = {"agentview_image": smooth_frames(n, 48, 64, d), "eye_in_hand_image": smooth_frames(n, 32, 32, d + 3),
                   "proprio": rng.normal(size=(n, 5)).astype(np.float32),
                   "object": rng.normal(size=(n, 3)).astype(np.float32)}
            w.add_demo(rng.uniform(-1, 1, (n, 4)).astype(np.float32), obs, states=rng.normal(size=(n, 8)),
                       attrs={"seed": 100 + d})
        w.finish({"env_name": "Lift", "env_type": 1,
                  "env_kwargs": {"task": "lift", "camera_size": [48, 64], "control_freq": 20}},
                 masks={"train": ["demo_0", "demo_2"], "valid": ["demo_1"]})
    return path


def test_export_round_trips_through_our_reader(tmp_path):
    src = write_lift_like(tmp_path / "demos.hdf5")
    out = export_lerobot(src, tmp_path / "lift_lerobot")
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 20 and info["total_frames"] == 33
    assert info["features"]["observation.images.agentview"]["shape"] == [48, 64, 3]
    validate(out)
    with open_dataset(src) as a, open_episodes(out) as b:
        assert b.format == "lerobot-v3.0" and b.fps == 20
        assert b.cameras == ["agentview", "eye_in_hand"] and b.lowdim_keys == ["object", "proprio"]
        assert b.split() == (["episode_000000", "episode_000002"], ["episode_000001"])
        assert b.seeds() == {"episode_000000": 100, "episode_000001": 101, "episode_000002": 102}
        assert b.env_args == a.env_args
        for ea, eb in zip(a.episodes, b.episodes):
            np.testing.assert_array_equal(b.read_actions(eb), a.read_actions(ea))
            ours = a.read_lowdim(ea, ["proprio", "object"])
            theirs = b.read_lowdim(eb, ["proprio", "object"])
            for k in ours:
                np.testing.assert_array_equal(theirs[k], ours[k])
            for cam in ("agentview", "eye_in_hand"):
                assert_same_frames(decode(b, eb, cam), decode(a, ea, cam))
    stats = json.loads((out / "meta/stats.json").read_text())
    with open_dataset(src) as a:
        all_actions = np.concatenate([a.read_actions(e) for e in a.episodes])
    np.testing.assert_allclose(stats["action"]["mean"], all_actions.mean(0), rtol=1e-6, atol=1e-7)
    assert np.array(stats["observation.images.agentview"]["mean"]).shape == (3, 1, 1)


def test_export_cli_refuses_bad_input_and_writes_nothing(tmp_path):
    from s2policy.data.__main__ import main

    src = write_lift_like(tmp_path / "demos.hdf5")
    (tmp_path / "taken").mkdir()
    assert main(["export-lerobot", str(src), str(tmp_path / "taken")]) == 2
    with h5py.File(src, "a") as f:  # a robomimic file whose actions leave [-1, 1] fails its own validation
        f["data/demo_1/actions"][0, 0] = 3.0
    assert main(["export-lerobot", str(src), str(tmp_path / "out")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demos.hdf5", "taken"]
    assert main(["validate", str(FIXTURES / "v30")]) == 0


LEROBOT_PYTHON = os.environ.get("S2POLICY_LEROBOT_PYTHON")


@pytest.mark.subprocess
@pytest.mark.skipif(not LEROBOT_PYTHON, reason="set S2POLICY_LEROBOT_PYTHON to a Python with `lerobot` installed "
                                               "(LeRobot >= 0.5 needs Python 3.12) to read the export with LeRobot's "
                                               "own loader; the native round trip above always runs")
def test_lerobot_loader_reads_our_export(tmp_path):
    src = write_lift_like(tmp_path / "demos.hdf5")
    out = export_lerobot(src, tmp_path / "lift_lerobot")
    dump = tmp_path / "lerobot.npz"
    proc = subprocess.run([LEROBOT_PYTHON, str(REPO / "tests/lerobot_env/read_with_lerobot.py"), str(out), str(dump)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = np.load(dump)
    assert int(theirs["fps"]) == 20 and str(theirs["version"]) == "v3.0"
    with open_dataset(src) as a:
        for i, ep in enumerate(a.episodes):
            assert str(theirs[f"task.{i}"]) == "lift"
            np.testing.assert_array_equal(theirs[f"action.{i}"], a.read_actions(ep))
            np.testing.assert_array_equal(theirs[f"state.{i}"], a.read_lowdim(ep, ["proprio"])["proprio"])
            for cam in ("agentview", "eye_in_hand"):
                assert_same_frames(theirs[f"frames.{cam}.{i}"], decode(a, ep, cam))


@pytest.mark.slow
@pytest.mark.simulator
def test_policy_trained_on_a_lerobot_dataset_of_our_task_evaluates(tmp_path):
    """lift demos -> LeRobot export (minus our meta/s2policy.json, so the dataset names no task, seeds or frame size)
    -> training with task=lift -> rollouts in the simulator."""
    import envs
    from s2policy.evaluate import EvalSettings, evaluate
    from s2policy.train import train

    envs.collect_demos("lift", 2, tmp_path / "demos.hdf5", camera_size=64, progress=False)
    root = export_lerobot(tmp_path / "demos.hdf5", tmp_path / "lift_lerobot")
    (root / "meta" / "s2policy.json").unlink()
    with open_episodes(root) as r:
        assert r.env_args == {} and r.seeds() == {} and r.frame_shape("agentview") == (64, 64)
    policy_file = train(run_config(root, tmp_path / "run", "task=lift", "task.camera_size=null", "train.steps=10"))
    summary = evaluate(policy_file, tmp_path / "eval", EvalSettings(episodes=1, workers=0, max_steps=8))
    assert summary["success"]["episodes"] == 1 and summary["task"] == "lift", summary
    assert summary["policy"]["camera_size"] == [64, 64] and summary["dataset"] == str(root)


@pytest.mark.subprocess
@pytest.mark.skipif(not LEROBOT_PYTHON, reason="set S2POLICY_LEROBOT_PYTHON to a Python with `lerobot` installed "
                                               "to compare with LeRobot's own loader")
def test_lerobot_loader_and_ours_agree_on_image_features(tmp_path):
    """LeRobot's loader and ours give the same frames of a LeRobot-written image feature, bit for bit."""
    dump = tmp_path / "lerobot.npz"
    proc = subprocess.run([LEROBOT_PYTHON, str(REPO / "tests/lerobot_env/read_with_lerobot.py"),
                           str(FIXTURES / "v30_images"), str(dump)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = np.load(dump)
    with open_episodes(FIXTURES / "v30_images") as r:
        for i, ep in enumerate(r.episodes):
            np.testing.assert_array_equal(theirs[f"frames.front.{i}"], decode(r, ep, "front"))
            np.testing.assert_array_equal(theirs[f"state.{i}"], r.read_lowdim(ep, ["proprio"])["proprio"])
