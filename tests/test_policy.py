"""Policy: head shapes, chunk execution, checkpoint round trip, batched acting, clear checkpoint errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s2policy.errors import CheckpointError, ConfigError
from s2policy import build_s2_encoder
from s2policy.policy import ChunkExecutor, Normalizer, Policy, PolicyConfig, build_head, read_policy_config

F, P, A = 32, 5, 3


@pytest.fixture(scope="module")
def encoder():
    return build_s2_encoder("tiny_cnn", "random", {"scales": [1, 2]})


def make_policy(encoder, head="transformer", execution="receding", **head_kwargs) -> Policy:
    torch.manual_seed(0)
    kwargs = {"history": 4, "horizon": 5, "d_model": 16, "layers": 1, "heads": 2, "dropout": 0.0} | head_kwargs
    config = PolicyConfig(
        encoder="tiny_cnn", weights="random", s2={"scales": [1, 2]}, cameras=["agentview"], proprio_keys=["proprio"],
        proprio_dim=P, action_dim=A, feature_dim=encoder.out_dim, head=head,
        head_kwargs=kwargs if head == "transformer" else {}, execution=execution, n_action_steps=3, task="lift",
    )
    rng = np.random.default_rng(0)
    policy = Policy.create(config, encoder, Normalizer.fit(rng.normal(size=(50, P))),
                           Normalizer.fit(rng.uniform(-1, 1, size=(50, A))))
    with torch.no_grad():  # BatchNorm running statistics away from their defaults, so saving them matters
        for m in policy.head.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-1, 1)
    return policy.eval()


def observations(n_steps: int, n_envs: int = 1, size=(40, 56), seed=0):
    rng = np.random.default_rng(seed)
    return [[{"agentview": rng.integers(0, 256, (*size, 3), dtype=np.uint8),
              "proprio": rng.normal(size=P).astype(np.float32)} for _ in range(n_envs)] for _ in range(n_steps)]


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_head_shapes(kind):
    head = build_head(kind, F, P, A, **({"history": 6, "horizon": 4, "d_model": 16, "layers": 1, "heads": 2}
                                        if kind == "transformer" else {}))
    t = head.history
    out = head(torch.randn(2, t, F), torch.randn(2, t, P), torch.randn(2, t, A))
    assert out.shape == (2, t, head.horizon, A)
    with pytest.raises(ConfigError, match="unknown policy head 'cnn'"):
        build_head("cnn", F, P, A)


def test_transformer_is_causal():
    head = build_head("transformer", F, P, A, history=5, horizon=2, d_model=16, layers=2, heads=2, dropout=0.0).eval()
    x = [torch.randn(1, 5, d) for d in (F, P, A)]
    y = [v.clone() for v in x]
    y[0][:, -1] = torch.randn(F)  # changing the last step must not change earlier positions' predictions
    a, b = head(*x), head(*y)
    torch.testing.assert_close(a[:, :-1], b[:, :-1])
    assert not torch.allclose(a[:, -1], b[:, -1])


def test_normalizer_round_trip_and_constant_dims():
    data = np.c_[np.random.default_rng(0).normal(3, 2, size=(100, 2)), np.full(100, 7.0)]
    norm = Normalizer.fit(data)
    x = torch.as_tensor(data, dtype=torch.float32)
    torch.testing.assert_close(norm.unnormalize(norm.normalize(x)), x)
    assert norm.std[2] == 1.0  # a constant dimension is centred, not divided by ~0


def test_receding_horizon_and_ensembling():
    chunk = np.arange(10, dtype=np.float32).reshape(5, 2)
    ex = ChunkExecutor("receding", n_action_steps=3, ensemble_decay=0.01, horizon=5)
    ex.reset_all(1)
    ex.add_chunk(0, chunk)
    assert [ex.pop(0)[0] for _ in range(3)] == [0, 2, 4] and ex.needs_chunk(0)
    ens = ChunkExecutor("ensemble", n_action_steps=1, ensemble_decay=0.0, horizon=5)
    ens.reset_all(1)
    ens.add_chunk(0, chunk)
    ens.pop(0)
    ens.add_chunk(0, chunk + 100)
    np.testing.assert_allclose(ens.pop(0), (chunk[1] + chunk[0] + 100) / 2)  # tick 1: old chunk[1], new chunk[0]


@pytest.mark.parametrize("head,execution", [("mlp", "receding"), ("transformer", "receding"),
                                            ("transformer", "ensemble")])
def test_save_load_gives_identical_actions(encoder, tmp_path, head, execution):
    policy = make_policy(encoder, head, execution)
    path = policy.save(tmp_path / "policy.safetensors")
    loaded = Policy.load(path, device="cpu")
    assert read_policy_config(path).task == "lift"
    for step in observations(7):
        a, b = policy.act(step[0]), loaded.act(step[0])
        assert a.shape == (A,) and a.dtype == np.float32
        np.testing.assert_array_equal(a, b)


def test_act_batch_keeps_one_queue_per_env(encoder):
    policy = make_policy(encoder)
    steps = observations(6, n_envs=3)
    batched = np.stack([policy.act_batch(step) for step in steps])  # (T, N, A)
    for env in range(3):
        policy.reset()
        serial = np.stack([policy.act(step[env]) for step in steps])
        np.testing.assert_allclose(batched[:, env], serial, rtol=1e-5, atol=1e-6)
    # Resetting one env restarts only its history and queue.
    policy.reset()
    policy.act_batch(steps[0])
    policy.reset([1])
    second = policy.act_batch(steps[1])
    policy.reset()
    np.testing.assert_allclose(second[1], policy.act(steps[1][1]), rtol=1e-5, atol=1e-6)


def test_bad_checkpoints_raise_checkpoint_error(encoder, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        Policy.load(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        Policy.load(garbage)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not an s2policy policy"):
        Policy.load(foreign)
    good = make_policy(encoder).save(tmp_path / "good.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-50])
    with pytest.raises(CheckpointError, match=str(truncated.name)):
        Policy.load(truncated)
    other = build_s2_encoder("tiny_cnn", "random", {"scales": [1]})
    with pytest.raises(CheckpointError, match="differs from the one it was trained with"):
        Policy.load(good, encoder=other)


def test_save_refuses_non_finite_weights_and_load_refuses_non_finite_files(encoder, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    policy = make_policy(encoder)
    good = policy.save(tmp_path / "good.safetensors")
    with torch.no_grad():
        next(policy.head.parameters()).view(-1)[3] = float("nan")
    with pytest.raises(CheckpointError, match=r"refusing to write policy .*bad.safetensors: non-finite tensors "
                                              r"'head\."):
        policy.save(tmp_path / "bad.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.safetensors"]  # no file, no temporary left
    with safe_open(str(good), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(good))
    tensors["action_norm.std"][1] = float("inf")
    save_file(tensors, str(tmp_path / "inf.safetensors"), metadata=meta)
    for load in (Policy.load, read_policy_config):  # evaluation and the robot loop both go through these
        with pytest.raises(CheckpointError, match=r"inf.safetensors: policy file holds non-finite tensors "
                                                  r"'action_norm.std' \(1 of 3 values NaN/inf\)"):
            load(tmp_path / "inf.safetensors")
