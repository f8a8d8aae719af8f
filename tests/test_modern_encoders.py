"""DINOv2 (+ registers), SigLIP 2 and CLIP: every official file layout loads strictly into the timm architecture and
computes what an independent reference (transformers, open_clip, timm's own converter) computes on the same input;
S2 on them (patch 14, 5 prefix tokens, the MAP head); the Hugging Face cache and hub client."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from s2policy.encoders import build_encoder
from s2policy.encoders.clip import make_clip
from s2policy.encoders.dinov2 import make_dinov2
from s2policy.encoders.siglip import make_siglip
from s2policy.encoders.weights import load_pretrained
from s2policy.errors import CheckpointError
from s2policy.s2_encoder import S2Encoder

from .encoder_checkpoints import imagenet_normalise, write
from .modern_checkpoints import (
    ARCH_SMALL,
    clip_reference,
    dinov2_hub_state,
    dinov2_reference,
    dinov2_timm_state,
    loopback_hub,
    official_dinov2_positions,
    openclip_reference,
    read_safetensors,
    save_transformers,
    siglip_reference,
)

pytest.importorskip("transformers")
TOL = {"rtol": 1e-4, "atol": 1e-4}


@pytest.fixture(autouse=True)
def private_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("S2POLICY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))


def _save(tmp_path, name: str, state: dict) -> Path:
    from safetensors.torch import save_file

    path = tmp_path / name
    if name.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        write(path, state)
    return path


# ---- DINOv2 --------------------------------------------------------------------------------------------------------


class DINOv2Case:
    """A reference DINOv2, its Hub file (transformers layout), and the reference's outputs at 224 on `x`."""

    def __init__(self, folder, registers: bool, swiglu: bool = False) -> None:
        ref = dinov2_reference(registers, swiglu)
        self.hf_path = save_transformers(ref, folder)
        self.published = read_safetensors(self.hf_path)
        at224 = dinov2_reference(registers, swiglu, image_size=224)
        state = ref.state_dict()
        table = state["embeddings.position_embeddings"]
        state["embeddings.position_embeddings"] = official_dinov2_positions(table, 16, registers)
        at224.load_state_dict(state)
        self.x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            self.expected = at224(pixel_values=imagenet_normalise(self.x))
            self.transformers_own = ref(pixel_values=imagenet_normalise(self.x)).last_hidden_state


@pytest.fixture(scope="module")
def dinov2_case(tmp_path_factory):
    """Reference models cost seconds to build and save: one per variant for the whole module."""
    cases: dict[tuple[bool, bool], DINOv2Case] = {}

    def get(registers: bool, swiglu: bool = False) -> DINOv2Case:
        if (registers, swiglu) not in cases:
            folder = tmp_path_factory.mktemp(f"dinov2_reg{int(registers)}_swiglu{int(swiglu)}")
            cases[registers, swiglu] = DINOv2Case(folder, registers, swiglu)
        return cases[registers, swiglu]

    return get


def _small_dinov2(registers: bool, swiglu: bool = False):
    size = "giant" if swiglu else "base"
    arch = dict(ARCH_SMALL, mlp_ratio=2.66667 * 2) if swiglu else ARCH_SMALL
    name = f"dinov2_vit{size[0]}14{'_reg' if registers else ''}"
    return make_dinov2(name, size, registers, **arch)


@pytest.mark.parametrize("registers", [False, True], ids=["dinov2", "dinov2_reg"])
def test_dinov2_every_official_layout_matches_transformers(registers, tmp_path, dinov2_case):
    case = dinov2_case(registers)
    hf_path, published, expected, x = case.hf_path, case.published, case.expected, case.x
    assert "encoder.layer.0.attention.attention.query.weight" in published  # the Hub's names, not transformers 5's
    hub = dinov2_hub_state(published)
    files = {
        "transformers": hf_path,
        "torch_hub": _save(tmp_path, f"dinov2_vitb14{'_reg4' if registers else ''}_pretrain.pth", hub),
        "timm": _save(tmp_path, "timm.safetensors", dinov2_timm_state(hub)),
    }
    for layout, path in files.items():
        enc = _small_dinov2(registers)
        load_pretrained(enc, path)
        tokens = enc(x)
        assert tokens.shape == (2, (5 if registers else 1) + 256, 48), layout
        torch.testing.assert_close(tokens, expected.last_hidden_state, **TOL, msg=layout)
        torch.testing.assert_close(enc.embed(x), expected.pooler_output, **TOL, msg=layout)  # CLS after the norm
    # The register models resample positions as transformers does; the original ones with the official offset,
    # which transformers' Dinov2Model does not reproduce (a measurable difference, so the test can tell them apart).
    gap = (tokens - case.transformers_own).abs().max()
    assert gap == 0 if registers else gap > 1e-3


def test_dinov2_giant_swiglu_layout_matches_transformers(tmp_path, dinov2_case):
    case = dinov2_case(registers=False, swiglu=True)
    hf_path, published, expected, x = case.hf_path, case.published, case.expected, case.x
    assert "encoder.layer.0.mlp.weights_in.weight" in published
    for path in (hf_path, _save(tmp_path, "dinov2_vitg14_pretrain.pth", dinov2_hub_state(published))):
        enc = _small_dinov2(registers=False, swiglu=True)
        load_pretrained(enc, path)
        torch.testing.assert_close(enc(x), expected.last_hidden_state, **TOL)


def test_dinov2_layer_scale_is_loaded_not_left_at_init(dinov2_case):
    hf_path, published = dinov2_case(registers=True).hf_path, dinov2_case(registers=True).published
    enc = _small_dinov2(registers=True)
    load_pretrained(enc, hf_path)
    torch.testing.assert_close(enc.backbone.blocks[1].ls2.gamma, published["encoder.layer.1.layer_scale2.lambda1"])
    # registers are their own tokens; the CLS position is folded into the CLS token (timm adds positions to patches)
    torch.testing.assert_close(enc.backbone.reg_token, published["embeddings.register_tokens"])
    cls = published["embeddings.cls_token"] + published["embeddings.position_embeddings"][:, :1]
    torch.testing.assert_close(enc.backbone.cls_token, cls)


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda s: s.pop("blocks.1.ls1.gamma"), r"missing keys: 1 \(blocks\.1\.ls1\.gamma\)"),
        (lambda s: s.update({"blocks.0.attn.q_norm.weight": torch.ones(48)}),
         r"unexpected keys: 1 \(blocks\.0\.attn\.q_norm\.weight\)"),
        (lambda s: s.update({"norm.weight": torch.ones(64)}),
         r"shape mismatches: 1 \(norm\.weight: file \(64,\) vs model \(48,\)\)"),
    ],
    ids=["missing", "unexpected", "shape"],
)  # fmt: skip
def test_dinov2_hub_file_is_checked_strictly(edit, problem, tmp_path, dinov2_case):
    hub = dinov2_hub_state(dinov2_case(registers=False).published)
    edit(hub)
    path = _save(tmp_path, "bad.pth", hub)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(path))} does not match the architecture: {problem}"):
        load_pretrained(_small_dinov2(False), path)


def test_a_file_of_another_family_is_refused_by_layout(tmp_path):
    path = save_transformers(clip_reference(), tmp_path / "clip")
    with pytest.raises(CheckpointError, match=r"does not match the architecture: missing keys: \d+ \(cls_token, .*"
                       r"unexpected keys: \d+ \(logit_scale, text_model\."):  # fmt: skip
        load_pretrained(_small_dinov2(False), path)
    siglip_file = _save(tmp_path, "openclip.bin", {"visual.trunk.pos_embed": torch.zeros(1, 4, 48)})
    with pytest.raises(CheckpointError, match=r"openclip\.bin looks like a file in openclip layout \(first keys: "
                       r"visual\.trunk\.pos_embed\).*expected one of: torch_hub, transformers, timm"):  # fmt: skip
        load_pretrained(_small_dinov2(False), siglip_file)


# ---- SigLIP 2 ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def siglip_case(tmp_path_factory):
    """(reference transformers SiglipModel, its Hub file), built once for the module."""
    ref = siglip_reference()
    return ref, save_transformers(ref, tmp_path_factory.mktemp("siglip"))


def test_siglip_transformers_timm_and_openclip_layouts_match_transformers(tmp_path, siglip_case):
    ref, hf_path = siglip_case
    published = read_safetensors(hf_path)
    assert any(k.startswith("text_model.") for k in published) and "logit_bias" in published
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        expected = ref.vision_model(pixel_values=(x - 0.5) / 0.5)
    enc = make_siglip("siglip2_vitb16_224", "vit_base_patch16_siglip_224", **ARCH_SMALL)
    load_pretrained(enc, hf_path)
    torch.testing.assert_close(enc(x), expected.last_hidden_state, **TOL)
    torch.testing.assert_close(enc.embed(x), expected.pooler_output, **TOL)  # the MAP head
    timm_state = enc.backbone.state_dict()
    openclip_state = {f"visual.trunk.{k}": v for k, v in timm_state.items()}
    openclip_state.update({"text.token_embedding.weight": torch.zeros(64, 48), "logit_scale": torch.zeros(()),
                           "logit_bias": torch.zeros(()), "text.positional_embedding": torch.zeros(8, 48)})  # fmt: skip
    for name, state in (("timm.safetensors", timm_state), ("open_clip_model.safetensors", openclip_state)):
        other = make_siglip("siglip2_vitb16_224", "vit_base_patch16_siglip_224", **ARCH_SMALL)
        load_pretrained(other, _save(tmp_path, name, state))
        torch.testing.assert_close(other.embed(x), expected.pooler_output, **TOL)


def test_siglip_exact_gelu_would_be_caught(siglip_case):
    """timm's siglip architectures default to the exact GELU; SigLIP uses the tanh approximation."""
    ref, path = siglip_case
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        expected = ref.vision_model(pixel_values=(x - 0.5) / 0.5).last_hidden_state
    errors = []
    for act in ("gelu_tanh", "gelu"):
        enc = make_siglip("siglip2_vitb16_224", "vit_base_patch16_siglip_224", act_layer=act, **ARCH_SMALL)
        load_pretrained(enc, path)
        errors.append(float((enc(x) - expected).abs().max()))
    assert errors[0] < 2e-6 and errors[1] > 10 * errors[0], errors


# ---- CLIP ----------------------------------------------------------------------------------------------------------

CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


def test_clip_transformers_layout_matches_clip_vision_model(tmp_path):
    ref = clip_reference()
    path = save_transformers(ref, tmp_path / "hf")
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        expected = ref.vision_model(pixel_values=(x - CLIP_MEAN) / CLIP_STD)
        post_norm_tokens = ref.vision_model.post_layernorm(expected.last_hidden_state)
    enc = make_clip("clip_vitb16", "vit_base_patch16_clip_quickgelu_224", **ARCH_SMALL)
    load_pretrained(enc, path)
    torch.testing.assert_close(enc.embed(x), expected.pooler_output, **TOL)  # CLS after post_layernorm
    torch.testing.assert_close(enc(x), post_norm_tokens, **TOL)
    # timm's own CLIP files carry the joint-space projection as `head`: ignored like transformers' visual_projection
    # (saved without the .safetensors suffix, as a hub blob is: recognised by its content)
    timm_file = _save(tmp_path, "timm.safetensors", {**enc.backbone.state_dict(), "head.weight": torch.zeros(32, 48)})
    timm_file = timm_file.rename(tmp_path / "0a1b2c")
    other = make_clip("clip_vitb16", "vit_base_patch16_clip_quickgelu_224", **ARCH_SMALL)
    load_pretrained(other, timm_file)
    torch.testing.assert_close(other.embed(x), expected.pooler_output, **TOL)


def test_clip_openclip_checkpoint_matches_open_clip(tmp_path):
    pytest.importorskip("open_clip")
    ref = openclip_reference()
    path = _save(tmp_path, "open_clip_pytorch_model.bin", ref.state_dict())
    enc = make_clip("clip_vitb16", "vit_base_patch16_clip_quickgelu_224", **ARCH_SMALL)
    load_pretrained(enc, path)
    x = torch.rand(2, 3, 224, 224)
    ref.visual.output_tokens = True
    with torch.no_grad():
        pooled, patch_tokens = ref.visual((x - CLIP_MEAN) / CLIP_STD)
    torch.testing.assert_close(enc.embed(x) @ ref.visual.proj, pooled, **TOL)  # the file's own projection
    torch.testing.assert_close(enc(x)[:, 1:], patch_tokens, **TOL)


# ---- full-size key sets (meta tensors: no memory, no compute) -----------------------------------------------------


def _full_size_reference(name: str):
    import transformers as tf

    dims = {"s": (384, 12, 6, False), "b": (768, 12, 12, False), "l": (1024, 24, 16, False), "g": (1536, 40, 24, True)}
    if name.startswith("dinov2"):
        width, depth, heads, swiglu = dims[name[len('dinov2_vit')]]
        common = dict(hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads, image_size=518,
                      patch_size=14, use_swiglu_ffn=swiglu)  # fmt: skip
        if name.endswith("_reg"):
            return tf.Dinov2WithRegistersModel(tf.Dinov2WithRegistersConfig(num_register_tokens=4, **common))
        return tf.Dinov2Model(tf.Dinov2Config(**common))
    if name.startswith("siglip2"):
        large = "vitl" in name
        return tf.SiglipVisionModel(tf.SiglipVisionConfig(
            hidden_size=1024 if large else 768, intermediate_size=4096 if large else 3072,
            num_hidden_layers=24 if large else 12, num_attention_heads=16 if large else 12,
            image_size=int(name[-3:]), patch_size=16,
        ))  # fmt: skip
    large = "vitl" in name
    return tf.CLIPVisionModel(tf.CLIPVisionConfig(
        hidden_size=1024 if large else 768, intermediate_size=4096 if large else 3072,
        num_hidden_layers=24 if large else 12, num_attention_heads=16 if large else 12,
        image_size=224, patch_size=14 if large else 16,
    ))  # fmt: skip


FULL_SIZE = [f"dinov2_vit{s}14{r}" for s in "sblg" for r in ("", "_reg")] + [
    "siglip2_vitb16_224", "siglip2_vitb16_256", "siglip2_vitl16_256", "clip_vitb16", "clip_vitl14",
]  # fmt: skip


@pytest.mark.parametrize("name", FULL_SIZE)
def test_full_size_transformers_key_sets_map_onto_the_timm_model_exactly(name, tmp_path, monkeypatch):
    """The Hub file of every listed encoder (transformers' names and shapes, on meta) passes the strict check."""
    from transformers.core_model_loading import revert_weight_conversion

    from s2policy.encoders.weights import check_state_dict

    with torch.device("meta"):
        ref = _full_size_reference(name)
        enc = build_encoder(name, weights="random")
    state = revert_weight_conversion(ref, dict(ref.state_dict()))  # the names save_pretrained writes
    check_state_dict(enc.backbone, enc.adapt_state_dict(state, name), name)


OPENCLIP_NAMES = {
    "siglip2_vitb16_224": "ViT-B-16-SigLIP2", "siglip2_vitb16_256": "ViT-B-16-SigLIP2-256",
    "siglip2_vitl16_256": "ViT-L-16-SigLIP2-256", "clip_vitb16": "ViT-B-16-quickgelu",
    "clip_vitl14": "ViT-L-14-quickgelu",
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(OPENCLIP_NAMES))
def test_full_size_openclip_key_sets_map_onto_the_timm_model_exactly(name):
    """open_clip's own full-size models (text tower, logit scale, projection included), on meta."""
    open_clip = pytest.importorskip("open_clip")
    from s2policy.encoders.weights import check_state_dict

    with torch.device("meta"):
        ref = open_clip.create_model(OPENCLIP_NAMES[name], pretrained=None, device="meta")
        enc = build_encoder(name, weights="random")
    check_state_dict(enc.backbone, enc.adapt_state_dict(dict(ref.state_dict()), name), name)


# ---- S2 on these encoders ------------------------------------------------------------------------------------------


def test_s2_on_dinov2_with_registers_averages_all_five_prefix_tokens_over_crops(dinov2_case):
    from .s2_reference import reference_s2 as reference

    enc = _small_dinov2(registers=True)
    load_pretrained(enc, dinov2_case(registers=True).hf_path)
    s2 = S2Encoder(enc, img_sizes=[224, 448], antialias=False, crop_batch_size=None)
    frames = torch.rand(2, 3, 448, 448)
    merged = s2.feature_map(frames)
    assert merged.shape == (2, 5 + 16 * 16, 2 * 48)  # patch 14: a 16x16 grid per 224 crop; 5 prefix tokens
    with torch.no_grad():
        expected = reference(enc, frames, img_sizes=[224, 448], max_split_size=224, num_prefix_token=5)
    torch.testing.assert_close(merged, expected, **TOL)
    crops = enc(torch.nn.functional.interpolate(frames, size=448, mode="bicubic").unfold(2, 224, 224)
                .unfold(3, 224, 224).permute(2, 3, 0, 1, 4, 5).reshape(-1, 3, 224, 224))  # fmt: skip
    torch.testing.assert_close(merged[:, :5, 48:], crops[:, :5].reshape(4, 2, 5, 48).mean(0), **TOL)
    emb = s2.embed(frames)
    torch.testing.assert_close(emb, merged[:, 0], **TOL)  # CLS per scale, averaged over the crops


def test_s2_on_siglip_pools_each_crop_with_the_map_head(siglip_case):
    enc = make_siglip("siglip2_vitb16_224", "vit_base_patch16_siglip_224", **ARCH_SMALL)
    load_pretrained(enc, siglip_case[1])
    s2 = S2Encoder(enc, scales=[1, 2], crop_batch_size=None)
    assert s2.pool == "map"
    frames = torch.rand(1, 3, 448, 448)
    single = S2Encoder(enc, img_sizes=[224]).embed(frames)
    torch.testing.assert_close(single, enc.embed(torch.nn.functional.interpolate(frames, size=224, mode="bicubic",
                                                                                  antialias=True)), **TOL)  # fmt: skip
    assert s2.embed(frames).shape == (1, 96) and s2.feature_map(frames).shape == (1, 196, 96)  # no prefix tokens


# ---- pretrained: the Hugging Face cache and the hub client ---------------------------------------------------------


def _fake_hub_cache(root, repo: str, file_name: str, data: bytes, blob_name: str) -> None:
    """The hub client's cache layout: blobs/<sha256>, snapshots/<commit>/<file> -> blob, refs/main = <commit>."""
    folder = root / f"models--{repo.replace('/', '--')}"
    commit = "a" * 40
    (folder / "blobs").mkdir(parents=True)
    (folder / "blobs" / blob_name).write_bytes(data)
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "snapshots" / commit / file_name).symlink_to(f"../../blobs/{blob_name}")
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)


def test_pretrained_uses_the_hugging_face_cache_offline_and_checks_the_blob_hash(tmp_path, monkeypatch, dinov2_case):
    import hashlib

    from s2policy.encoders import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "download_hub_file", lambda *a: pytest.fail("cached: must not download"))
    data = dinov2_case(registers=False).hf_path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    _fake_hub_cache(tmp_path / "hf_cache", "facebook/dinov2-base", "model.safetensors", data, sha)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    with torch.device("meta"):
        small = _small_dinov2(False)
    load_pretrained(small, "pretrained")
    assert small.weights_id == sha
    # a blob whose bytes do not hash to its name (truncated copy, bit rot) is refused
    blob = tmp_path / "hf_cache" / "models--facebook--dinov2-base" / "blobs" / sha
    blob.write_bytes(data[:-10] + b"0123456789")
    with pytest.raises(CheckpointError, match=rf"sha256 \w+ differs from the expected {sha}.*hf download "
                       r"facebook/dinov2-base model\.safetensors --force-download"):  # fmt: skip
        load_pretrained(_small_dinov2(False), "pretrained")


def test_pretrained_offline_without_the_file_names_repo_and_remedy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = (r"dinov2_vitb14_reg: facebook/dinov2-with-registers-base/model\.safetensors is not in the Hugging Face "
               r"cache and HF_HUB_OFFLINE is set.*hf download")  # fmt: skip
    with pytest.raises(CheckpointError, match=message):
        build_encoder("dinov2_vitb14_reg")


def test_pretrained_prefers_the_torch_hub_file_when_the_hub_cache_has_none(tmp_path, monkeypatch, dinov2_case):
    from s2policy.encoders import hub

    monkeypatch.setattr(hub, "download_hub_file", lambda *a: pytest.fail("found locally: must not download"))
    published = dinov2_case(registers=True).published
    official = tmp_path / "home" / ".cache" / "torch" / "hub" / "checkpoints" / "dinov2_vitb14_reg4_pretrain.pth"
    official.parent.mkdir(parents=True)
    write(official, dinov2_hub_state(published))
    enc = _small_dinov2(True)
    load_pretrained(enc, "pretrained")
    torch.testing.assert_close(enc.backbone.reg_token, published["embeddings.register_tokens"])


def test_pretrained_downloads_with_the_hub_client_once_then_works_offline(monkeypatch, dinov2_case):
    import hashlib

    from huggingface_hub import constants

    from s2policy.encoders import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    data = dinov2_case(registers=True).hf_path.read_bytes()
    url_path = "/facebook/dinov2-with-registers-base/resolve/main/model.safetensors"
    with loopback_hub({url_path: data}) as server:
        monkeypatch.setattr(hub, "ENDPOINT", server.endpoint)
        first = _small_dinov2(True)
        load_pretrained(first, "pretrained")
    assert [r[0] for r in server.requests] == ["HEAD", "GET"]
    assert first.weights_id == hashlib.sha256(data).hexdigest()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # server gone and offline: the hub cache serves it
    second = _small_dinov2(True)
    load_pretrained(second, "pretrained")
    assert second.weights_id == first.weights_id


def test_a_download_whose_bytes_differ_from_the_published_hash_is_refused(monkeypatch, dinov2_case):
    from s2policy.encoders import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    data = dinov2_case(registers=False).hf_path.read_bytes()
    url_path = "/facebook/dinov2-base/resolve/main/model.safetensors"
    published = "e" * 64  # the hash the hub announced; the bytes that arrived hash to something else
    with loopback_hub({url_path: data}, etags={url_path: published}) as server:
        monkeypatch.setattr(hub, "ENDPOINT", server.endpoint)
        with pytest.raises(CheckpointError, match=rf"sha256 \w+ differs from the expected {published}"):
            load_pretrained(_small_dinov2(False), "pretrained")


def test_map_pooling_needs_an_attention_pooling_head():
    from s2policy.errors import ConfigError

    with pytest.raises(ConfigError, match=r"pool='map' needs an encoder with an attention-pooling head; tiny_vit has"):
        S2Encoder(build_encoder("tiny_vit", weights="random"), pool="map")
