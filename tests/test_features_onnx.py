"""Feature extraction with the backbone in ONNX Runtime (features.backbone=onnx): the same features as torch within
float32 rounding, its own cache key (torch keys unchanged), and the torch backbone back afterwards."""

from __future__ import annotations

import numpy as np
import pytest

from s2policy import build_s2_encoder
from s2policy.features import build_feature_cache, frames_to_tensor
from s2policy.train.synthetic import write_synthetic_demos

pytest.importorskip("onnxruntime")


def test_onnx_extraction_matches_torch_in_its_own_cache_and_restores_the_torch_backbone(tmp_path, caplog):
    import logging

    from s2policy.data import open_dataset

    dataset = write_synthetic_demos(tmp_path / "demos.hdf5", num_demos=2, length=5, cameras=("agentview",))
    encoder = build_s2_encoder("tiny_cnn", "random", {"scales": [1, 2]})
    torch_cache, _ = build_feature_cache(dataset, "agentview", encoder, camera_size=32, dtype="float32",
                                         device="cpu")
    with caplog.at_level(logging.INFO, logger="s2policy.runtime.onnx_backbone"):
        onnx_cache, stats = build_feature_cache(dataset, "agentview", encoder, camera_size=32, dtype="float32",
                                                device="cpu", backbone="onnx")
    assert "backbone crops run in ONNX Runtime" in caplog.text  # exported, checked against torch, then used
    assert stats.frames == 10 and onnx_cache.folder != torch_cache.folder  # torch and ONNX caches never mix
    assert "forward" not in vars(encoder.encoder)  # the torch backbone runs again after extraction
    with open_dataset(dataset) as ds:
        for demo in ds.demo_keys:
            direct = encoder.embed(frames_to_tensor(ds.obs_array(demo, "agentview_image")[()])).numpy()
            np.testing.assert_allclose(onnx_cache.embeddings(demo), direct, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(onnx_cache.embeddings(demo), torch_cache.embeddings(demo), rtol=1e-4,
                                       atol=1e-5)
    # the torch cache keeps its key (caches extracted before the option existed are reused) ...
    again, reused = build_feature_cache(dataset, "agentview", encoder, camera_size=32, dtype="float32",
                                        device="cpu", backbone="torch")
    assert reused.reused and again.folder == torch_cache.folder
    # ... and an ONNX cache is reused without exporting the backbone again
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="s2policy.runtime.onnx_backbone"):
        onnx_again, onnx_reused = build_feature_cache(dataset, "agentview", encoder, camera_size=32,
                                                      dtype="float32", device="cpu", backbone="onnx")
    assert onnx_reused.reused and onnx_again.folder == onnx_cache.folder and "ONNX Runtime" not in caplog.text
