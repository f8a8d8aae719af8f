"""Exported graphs (ONNX on onnxruntime, TorchScript) act like the eager policy."""

import numpy as np
import pytest

from s2policy.errors import ConfigError
from s2policy.policy import Policy
from s2policy.runtime.export import ExportedPolicy, export_policy

from .test_runtime_support import observation, write_tiny_checkpoint


@pytest.mark.parametrize("fmt, head", [("onnx", "mlp"), ("onnx", "transformer"), ("torchscript", "transformer")])
def test_export_parity(tmp_path, fmt, head):
    pytest.importorskip("onnxruntime")
    policy = Policy.load(write_tiny_checkpoint(tmp_path / "p.safetensors", head=head), device="cpu")
    # 96x80 frames: S2 shrinks them to 32 px (antialiased) and 64 px, on a non-square grid.
    manifest = export_policy(policy, tmp_path / "out", fmt, frame_shapes={"agentview": (96, 80)}, parity_steps=3)
    assert manifest.parity_max_abs_diff <= 1e-4
    exported = ExportedPolicy.load(tmp_path / "out")
    rng = np.random.default_rng(7)
    policy.reset()
    for _ in range(5):
        obs = observation(rng, frame_shape=(96, 80))
        np.testing.assert_allclose(exported.act(obs), policy.act(obs), atol=1e-4)
    assert exported.last_times.encode > 0
    with pytest.raises(ValueError, match="re-export"):
        exported.act(observation(rng, frame_shape=(64, 64)))


def test_camera_free_policy_exports_and_acts_on_proprio_alone(tmp_path):
    pytest.importorskip("onnxruntime")
    policy = Policy.load(write_tiny_checkpoint(tmp_path / "p.safetensors", encoder="none"), device="cpu")
    manifest = export_policy(policy, tmp_path / "out", "onnx", parity_steps=3)
    assert manifest.cameras == [] and manifest.feature_dim == 0 and manifest.parity_max_abs_diff <= 1e-4
    exported = ExportedPolicy.load(tmp_path / "out")
    rng = np.random.default_rng(3)
    policy.reset()
    for _ in range(4):
        obs = {"proprio": observation(rng)["proprio"]}  # no frame at all
        np.testing.assert_allclose(exported.act(obs), policy.act(obs), atol=1e-4)


def test_export_rejects_unknown_format(tmp_path):
    policy = Policy.load(write_tiny_checkpoint(tmp_path / "p.safetensors"), device="cpu")
    with pytest.raises(ConfigError, match="format"):
        export_policy(policy, tmp_path / "out", "tflite")


@pytest.mark.parametrize("encoder", ["tiny_cnn", "tiny_vit"])
def test_onnx_backbone_gives_the_same_s2_features_and_cost(encoder):
    pytest.importorskip("onnxruntime")
    import torch

    from s2policy import build_s2_encoder
    from s2policy.runtime.onnx_backbone import OrtBackbone, use_onnx_backbone

    s2 = build_s2_encoder(encoder, "random", {"scales": [1, 2]}).eval()
    frames = torch.rand(3, 3, 64, 64)
    with torch.inference_mode():
        expected, gmacs = s2.embed(frames), s2.gmacs((64, 64))
    runner = use_onnx_backbone(s2, threads=1)
    assert isinstance(s2.encoder.forward, OrtBackbone) and runner is s2.encoder.forward
    calls = []
    s2.encoder.forward = lambda x: calls.append(x.shape[0]) or runner(x)  # count: the crops really go through ORT
    with torch.inference_mode():
        got = s2.embed(frames)
    assert sum(calls) == 3 * 5  # 1 + 4 crops per frame
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert s2.gmacs((64, 64)) == gmacs > 0


def test_eval_settings_refuse_an_unknown_backbone():
    from s2policy.evaluate import EvalSettings

    with pytest.raises(ConfigError, match=r'^eval.backbone="tensorrt": expected one of torch, onnx$'):
        EvalSettings(backbone="tensorrt")


def test_onnx_backbone_errors_name_the_problem(monkeypatch):
    pytest.importorskip("onnxruntime")
    import sys

    from s2policy import build_s2_encoder
    from s2policy.runtime import onnx_backbone
    from s2policy.runtime.export import ExportParityError

    s2 = build_s2_encoder("tiny_cnn", "random", {"scales": [1, 2]}).eval()
    torch_forward = s2.encoder.forward
    monkeypatch.setattr(onnx_backbone, "PARITY_TOLERANCE", -1.0)  # any difference now fails the check
    with pytest.raises(ExportParityError, match=r"ONNX backbone of tiny_cnn differs from torch by .*eval.backbone=torch"):
        onnx_backbone.use_onnx_backbone(s2)
    assert s2.encoder.forward == torch_forward  # a failed check leaves the encoder as it was
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the [export] extra were not installed
    with pytest.raises(ConfigError, match=r"eval.backbone=onnx needs onnxruntime: pip install -e '.\[export\]'"):
        onnx_backbone.use_onnx_backbone(s2)
