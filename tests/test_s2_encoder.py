"""S2Encoder: frozen multi-scale embeddings and feature maps on top of an encoder that meets the DESIGN contract."""

import pytest
import torch
from torch import nn

from s2policy.errors import ConfigError
from s2policy.s2 import multiscale_forward
from s2policy.s2_encoder import S2Encoder
from tests.toy_models import ToyCNN, ToyViT


class ContractEncoder(nn.Module):
    """A toy backbone dressed with the attributes `build_encoder` promises (native 16 px)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.net = ToyCNN() if kind == "cnn" else ToyViT(1)
        self.name, self.weights_id, self.native_size = f"toy_{kind}", "random", 16
        self.output_shape, self.num_prefix_tokens = ("bchw", 0) if kind == "cnn" else ("bnc", 1)
        self.embed_dim = 6 if kind == "cnn" else 5
        self.channels_last = kind == "cnn"
        self.requires_grad_(False).eval()

    def forward(self, x):
        return self.net(x)

    def embed(self, x):
        out = self.net(x)
        return out.mean(dim=(2, 3)) if self.output_shape == "bchw" else out[:, 0]


@pytest.fixture(params=["cnn", "vit"])
def encoder(request):
    return ContractEncoder(request.param)


def test_single_native_scale_equals_encoder_embed(encoder):
    x = torch.rand(4, 3, 16, 16)
    s2 = S2Encoder(encoder, scales=[1])
    torch.testing.assert_close(s2.embed(x), encoder.embed(x))
    assert s2.out_dim == encoder.embed_dim


def test_feature_map_is_multiscale_forward_at_native_crops(encoder):
    x = torch.rand(2, 3, 32, 32)  # a "high-resolution" frame; the 16-px scale is made from it with antialiasing
    s2 = S2Encoder(encoder, img_sizes=[16, 32], resize_output_to_idx=-1)
    expected = multiscale_forward(encoder, x, img_sizes=[16, 32], max_split_size=16, resize_output_to_idx=-1,
                                  num_prefix_token=encoder.num_prefix_tokens, output_shape=encoder.output_shape,
                                  antialias=True)
    torch.testing.assert_close(s2.feature_map(x), expected, rtol=1e-5, atol=1e-6)


def test_embed_pools_each_scale(encoder):
    x = torch.rand(3, 3, 16, 16)
    s2 = S2Encoder(encoder, scales=[1, 2], resize_output_to_idx=-1)
    emb, fmap = s2.embed(x), s2.feature_map(x)
    assert emb.shape == (3, 2 * encoder.embed_dim)
    if encoder.output_shape == "bchw":
        # Growing the small map to the largest grid replicates blocks, so spatial means are unchanged.
        torch.testing.assert_close(emb, fmap.mean(dim=(2, 3)), rtol=1e-5, atol=1e-6)
    else:
        torch.testing.assert_close(emb, fmap[:, 0], rtol=1e-5, atol=1e-6)  # CLS averaged over crops


def test_scales_are_multiples_of_native_size_not_of_the_frame(encoder):
    s2 = S2Encoder(encoder, scales=[1, 2])
    assert s2.img_sizes == [16, 32]
    for frame in [(16, 16), (64, 64)]:
        assert [p.size for p in s2.plan(frame)] == [(16, 16), (32, 32)]


def test_non_square_camera_frames(encoder):
    s2 = S2Encoder(encoder, img_sizes=[16, 32])
    x = torch.rand(2, 3, 48, 64)  # 4:3
    assert [(p.size, p.grid) for p in s2.plan((48, 64))] == [((16, 16), (1, 1)), ((32, 48), (2, 3))]
    assert s2.embed(x).shape == (2, s2.out_dim)
    with pytest.raises(ConfigError, match="does not tile"):
        S2Encoder(encoder, img_sizes=[16, 32], fit="exact").embed(x)


def test_frozen_but_usable_by_a_trainable_head(encoder):
    s2 = S2Encoder(encoder)
    s2.train()
    assert not s2.training and not s2.encoder.training
    assert not any(p.requires_grad for p in s2.parameters())
    head = nn.Linear(s2.out_dim, 2)
    head(s2.embed(torch.rand(2, 3, 16, 16))).sum().backward()  # must not trip over inference-mode tensors
    assert head.weight.grad is not None


def test_cost_is_counted_per_crop(encoder):
    single, s2 = S2Encoder(encoder, scales=[1]), S2Encoder(encoder, scales=[1, 2])
    assert single.gmacs() > 0
    assert s2.crops_per_frame() == 5
    assert s2.gmacs() == pytest.approx(5 * single.gmacs())
    assert S2Encoder(encoder, scales=[1, 2, 3]).gmacs() == pytest.approx(14 * single.gmacs())
    assert s2.params == sum(p.numel() for p in encoder.parameters())


def test_config_names_everything_that_changes_features(encoder):
    base = S2Encoder(encoder, scales=[1, 2]).config()
    assert base == S2Encoder(encoder, img_sizes=[16, 32]).config()
    assert base != S2Encoder(encoder, scales=[1]).config()
    assert base != S2Encoder(encoder, scales=[1, 2], antialias=False).config()
    assert base["encoder"] == encoder.name and base["weights_id"] == "random"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(img_sizes=[16, 24]), r"every size must be a positive multiple of its native input size 16"),
        (dict(scales=[1, 1.5]), r"multiple of its native input size 16"),
        (dict(pool="max"), r"pool must be one of"),
        (dict(resize_output_to_idx=3), r"out of range for 2 scales"),
        (dict(fit="pad"), r"fit must be"),
        (dict(crop_batch_size=0), r"crop_batch_size must be a positive int, 'auto' or None, got 0"),
    ],
)
def test_config_errors(encoder, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        S2Encoder(encoder, **kwargs)


def test_cls_pool_needs_a_cls_token():
    with pytest.raises(ConfigError, match="pool='cls' needs an encoder with a CLS token; toy_cnn has none"):
        S2Encoder(ContractEncoder("cnn"), pool="cls")


def test_input_errors(encoder):
    s2 = S2Encoder(encoder)
    with pytest.raises(ValueError, match=r"expects float frames in \[0, 1\], got torch.uint8"):
        s2.embed(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\) RGB frames, got shape \(1, 16, 16, 3\)"):
        s2.embed(torch.zeros(1, 16, 16, 3))


def test_crop_batch_size_bounds_every_backbone_call(encoder):
    calls = []
    hook = encoder.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    try:
        x = torch.rand(3, 3, 32, 32)
        ref = S2Encoder(encoder, scales=[1, 2], crop_batch_size=None).embed(x)
        assert calls == [15]
        calls.clear()
        torch.testing.assert_close(S2Encoder(encoder, scales=[1, 2]).embed(x), ref, rtol=1e-5, atol=1e-6)
        assert max(calls) == 4 and sum(calls) == 15  # "auto" on CPU
    finally:
        hook.remove()


def test_channels_last_crops_for_every_grid(encoder):
    layouts = []
    hook = encoder.register_forward_pre_hook(
        lambda m, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    try:
        S2Encoder(encoder, scales=[1, 2], channels_last=True, crop_batch_size=None).embed(torch.rand(2, 3, 16, 16))
    finally:
        hook.remove()
    assert layouts == [True]  # the 1x1 grid of scale 1 too, else the joined batch falls back to NCHW
