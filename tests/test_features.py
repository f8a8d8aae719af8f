"""Feature cache: equals direct encoding, reused only when every input matches, resumable, clear config errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from s2policy.data import open_dataset
from s2policy.errors import ConfigError
from s2policy import build_s2_encoder
from s2policy.features import build_feature_cache, frames_to_tensor
from s2policy.features import cache as cache_mod
from s2policy.train.synthetic import write_synthetic_demos


@pytest.fixture(scope="module")
def tiny_cnn():
    return build_s2_encoder("tiny_cnn", "random", {"scales": [1, 2]})


@pytest.fixture()
def dataset(tmp_path):
    return write_synthetic_demos(tmp_path / "demos.hdf5", num_demos=3, length=7, cameras=("agentview", "wrist"))


def test_frames_to_tensor_layout_and_range():
    frames = np.zeros((2, 4, 6, 3), np.uint8)
    frames[..., 0] = 255
    x = frames_to_tensor(frames)
    assert x.shape == (2, 3, 4, 6) and x.dtype == torch.float32
    assert x[:, 0].min() == 1.0 and x[:, 1:].max() == 0.0
    assert frames_to_tensor(frames[0]).shape == (1, 3, 4, 6)
    with pytest.raises(ValueError, match="uint8"):
        frames_to_tensor(frames.astype(np.float32))


def test_cache_equals_direct_encoding_and_is_reused(dataset, tiny_cnn, tmp_path):
    cache, stats = build_feature_cache(dataset, "agentview", tiny_cnn, camera_size=32, batch_size=5, dtype="float32")
    assert stats.frames == 21 and not stats.reused
    with open_dataset(dataset) as ds:
        for demo in ds.demo_keys:  # batches of 5 straddle demos of 7: packing must not mix frames up
            direct = tiny_cnn.embed(frames_to_tensor(ds.obs_array(demo, "agentview_image")[()])).numpy()
            np.testing.assert_allclose(cache.embeddings(demo), direct, rtol=1e-5, atol=1e-5)
    fresh = build_s2_encoder("tiny_cnn", "random", {"scales": [1, 2]})
    again, stats2 = build_feature_cache(dataset, "agentview", fresh, camera_size=32, dtype="float32")
    assert stats2.reused and again.folder == cache.folder


def test_key_changes_with_every_input(dataset, tiny_cnn, tmp_path):
    def folder(path=dataset, camera="agentview", enc=tiny_cnn, **kw):
        return build_feature_cache(path, camera, enc, camera_size=32, **kw)[0].folder.name

    base = folder()
    variants = {
        "camera": folder(camera="wrist"),
        "dtype": folder(dtype="float32"),
        "maps": folder(store_maps=True),
        "scales": folder(enc=build_s2_encoder("tiny_cnn", "random", {"scales": [1]})),
        "encoder": folder(enc=build_s2_encoder("tiny_vit", "random", {"scales": [1, 2]})),
        "pool": folder(enc=build_s2_encoder("tiny_vit", "random", {"scales": [1, 2], "pool": "mean"})),
    }
    perturbed = build_s2_encoder("tiny_cnn", "random", {"scales": [1, 2]})
    with torch.no_grad():
        next(perturbed.encoder.parameters()).add_(1e-3)  # same name and weights_id "random", other weights
    variants["weights"] = folder(enc=perturbed)
    with h5py.File(dataset, "a") as f:  # one pixel of one frame
        f["data/demo_1/obs/agentview_image"][3, 0, 0, 0] ^= 1
    variants["content"] = folder()
    assert len({base, *variants.values()}) == len(variants) + 1, variants
    # Content the agentview features do not depend on (another camera) leaves its key alone.
    with h5py.File(dataset, "a") as f:
        f["data/demo_1/obs/wrist_image"][3, 0, 0, 0] ^= 1
    assert folder() == variants["content"]


def test_store_maps(dataset, tiny_cnn):
    cache, _ = build_feature_cache(dataset, "agentview", tiny_cnn, camera_size=32, store_maps=True)
    maps = cache.maps("demo_0")
    with open_dataset(dataset) as ds:
        direct = tiny_cnn.feature_map(frames_to_tensor(ds.obs_array("demo_0", "agentview_image")[()]))
    assert maps.shape == tuple(direct.shape)


def test_interrupted_extraction_resumes(dataset, tiny_cnn, monkeypatch):
    real, calls = cache_mod._encode, []

    def dies_on_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_mod, "_encode", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        build_feature_cache(dataset, "agentview", tiny_cnn, camera_size=32, batch_size=4, dtype="float32")
    monkeypatch.setattr(cache_mod, "_encode", real)
    cache, stats = build_feature_cache(dataset, "agentview", tiny_cnn, camera_size=32, batch_size=4, dtype="float32")
    assert stats.frames == 14  # demo_0 (7 frames) was complete before the kill; the partial demo_1 is redone
    with open_dataset(dataset) as ds:
        for demo in ds.demo_keys:
            direct = tiny_cnn.embed(frames_to_tensor(ds.obs_array(demo, "agentview_image")[()])).numpy()
            np.testing.assert_allclose(cache.embeddings(demo), direct, rtol=1e-5, atol=1e-5)


def test_config_errors_name_the_problem(dataset, tiny_cnn):
    with pytest.raises(ConfigError, match="obs key .frontview_image. for camera .frontview. is absent.*agentview_image.*no task"):
        build_feature_cache(dataset, "frontview", tiny_cnn, camera_size=32)
    with pytest.raises(ConfigError, match="camera size 16 is below the encoder's native input size 32"):
        build_feature_cache(dataset, "agentview", tiny_cnn, camera_size=16)
    with pytest.raises(ConfigError, match="frames are 32x32 but task.camera_size=64"):
        build_feature_cache(dataset, "agentview", tiny_cnn, camera_size=64, source="stored")
    with pytest.raises(ConfigError, match="unknown encoder 'no_such_net'"):
        build_s2_encoder("no_such_net", "random", {"scales": [1, 2]})
    with pytest.raises(ConfigError, match="multiple of its native input size 32"):
        build_s2_encoder("tiny_cnn", "random", {"scales": [1, 1.5]})
    with pytest.raises(ConfigError, match=r'^s2.scale=\[1, 2\]: unknown option; s2 has antialias, crop_batch_size, img_si'):
        build_s2_encoder("tiny_cnn", "random", {"scale": [1, 2]})
