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


def test_export_rejects_unknown_format(tmp_path):
    policy = Policy.load(write_tiny_checkpoint(tmp_path / "p.safetensors"), device="cpu")
    with pytest.raises(ConfigError, match="format"):
        export_policy(policy, tmp_path / "out", "tflite")
