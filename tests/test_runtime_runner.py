"""PolicyRunner gives exactly Policy.act's actions, for every head and execution mode, on any frame size."""

import numpy as np
import pytest

from s2policy.errors import CheckpointError
from s2policy.policy import Policy
from s2policy.runtime import EPISODE_KEY, PolicyRunner

from .test_runtime_support import ACTION_DIM, observation, write_tiny_checkpoint


@pytest.mark.parametrize(
    "head, execution",
    [("mlp", "receding"), ("transformer", "receding"), ("transformer", "ensemble")],
)
def test_runner_matches_policy_act(tmp_path, head, execution):
    ckpt = write_tiny_checkpoint(tmp_path / "policy.safetensors", head=head, execution=execution)
    reference = Policy.load(ckpt, device="cpu")
    runner = PolicyRunner.from_checkpoint(ckpt, device="cpu", warmup_steps=2)
    rng = np.random.default_rng(1)
    for step in range(5):  # spans several chunks of the transformer's receding horizon
        obs = observation(rng, frame_shape=(48, 64) if step % 2 else (70, 70))  # the camera may change size
        expected = reference.act(obs)
        got = runner.act(obs)
        assert got.shape == (ACTION_DIM,) and got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)
    times = runner.last_times
    assert times.encode > 0 and times.preprocess >= 0 and (times.head > 0 or head == "transformer")


def test_episode_change_resets_history(tmp_path):
    ckpt = write_tiny_checkpoint(tmp_path / "p.safetensors", head="transformer")
    runner = PolicyRunner.from_checkpoint(ckpt, device="cpu", warmup_steps=0)
    fresh = PolicyRunner.from_checkpoint(ckpt, device="cpu", warmup_steps=0)
    rng = np.random.default_rng(2)
    for _ in range(3):
        runner.act(observation(rng, episode=0))
    obs = observation(rng, episode=1)
    np.testing.assert_array_equal(runner.act(obs), fresh.act(obs))


def test_warmup_leaves_no_state(tmp_path):
    ckpt = write_tiny_checkpoint(tmp_path / "p.safetensors", head="transformer")
    warmed = PolicyRunner.from_checkpoint(ckpt, device="cpu", warmup_steps=3)
    cold = Policy.load(ckpt, device="cpu")
    obs = observation(np.random.default_rng(3))
    np.testing.assert_array_equal(warmed.act(obs), cold.act(obs))


def test_reduced_precision_and_memory_format_options(tmp_path):
    ckpt = write_tiny_checkpoint(tmp_path / "p.safetensors")
    obs = observation(np.random.default_rng(5))
    exact = PolicyRunner.from_checkpoint(ckpt, device="cpu", warmup_steps=0).act(obs)
    runner = PolicyRunner.from_checkpoint(ckpt, device="cpu", precision="bf16", channels_last=False, warmup_steps=1)
    assert runner.policy.config.precision == "bf16" and runner.policy.encoder.channels_last is False
    np.testing.assert_allclose(runner.act(obs), exact, atol=0.25)  # bf16 autocast on the encoder: close, not equal


def test_bad_checkpoint_is_one_clear_error(tmp_path):
    bad = tmp_path / "policy.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="policy.safetensors"):
        PolicyRunner.from_checkpoint(bad, device="cpu")


def test_unknown_precision_is_rejected(tmp_path):
    ckpt = write_tiny_checkpoint(tmp_path / "p.safetensors")
    with pytest.raises(ValueError, match="precision"):
        PolicyRunner.from_checkpoint(ckpt, device="cpu", precision="fp8")


def test_episode_key_is_ignored_by_policy(tmp_path):
    ckpt = write_tiny_checkpoint(tmp_path / "p.safetensors")
    runner = PolicyRunner.from_checkpoint(ckpt, device="cpu", warmup_steps=0)
    obs = observation(np.random.default_rng(4))
    a = runner.act({**obs, EPISODE_KEY: 5})
    assert np.isfinite(a).all()
