"""Official weight-file layouts of the modern ViTs (DINOv2, SigLIP 2, CLIP) -> timm VisionTransformer keys.

Users hold the same weights in several layouts: DINOv2's torch-hub `.pth`, Hugging Face `model.safetensors` written by
transformers (`Dinov2Model`, `SiglipModel`, `CLIPModel`), timm's own `model.safetensors`, and OpenCLIP checkpoints.
Each layout is one declarative `KeyMap`: regex renames (first full match wins), tensor reshapes where the layouts
store a tensor differently, and the known extras that are dropped on purpose (text towers, mask tokens, logit scales,
projections into a joint text-image space). A key that no rule knows keeps its file name, so the strict check in
weights.py reports it as unexpected by the name the user sees in the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from ..errors import CheckpointError

Tensor = torch.Tensor
Reshape = Callable[[Tensor], Tensor]


def _leading_batch(t: Tensor) -> Tensor:
    """(N, C) or (C,) -> (1, N, C) / (1, 1, C): transformers / OpenCLIP store tokens without timm's batch axes."""
    return t.reshape(1, -1, t.shape[-1])


@dataclass(frozen=True)
class Rule:
    """`pattern` (full match on a file key) -> `target` (a `re` replacement template), reshaped by `reshape`."""

    pattern: str
    target: str
    reshape: Reshape | None = None


@dataclass(frozen=True)
class KeyMap:
    """One file layout.

    rules: renames into timm keys. Targets ending in `.qkv.q|k|v.<weight|bias>` are pieces fused into one timm
        `qkv` tensor (transformers stores query, key and value separately); `.in_proj_q|kv.<...>` pieces split a packed
        attention input projection into timm's separate `q` and `kv` (the SigLIP pooling head).
    ignore: full-match regexes of tensors that are known not to belong to the image encoder.
    """

    name: str
    rules: tuple[Rule, ...] = ()
    ignore: tuple[str, ...] = ()

    def apply(self, state: Mapping[str, Tensor], source: str) -> dict[str, Tensor]:
        """File tensors -> timm-named tensors, known extras dropped, unknown keys passed through unchanged."""
        rules = [(re.compile(r.pattern), r) for r in self.rules]
        ignore = [re.compile(p) for p in self.ignore]
        out: dict[str, Tensor] = {}
        for key, value in state.items():
            if any(p.fullmatch(key) for p in ignore):
                continue
            for pattern, rule in rules:
                if m := pattern.fullmatch(key):
                    new_key = m.expand(rule.target)
                    out[new_key] = rule.reshape(value) if rule.reshape else value
                    break
            else:
                out[key] = value
        return _split_packed(_fuse_qkv(out, source))


_QKV_PIECE = re.compile(r"(.*)\.qkv\.([qkv])\.(weight|bias)")


def _fuse_qkv(state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """Concatenate `X.qkv.q/k/v.<p>` pieces into `X.qkv.<p>` (timm's order: q, k, v along the output axis)."""
    pieces: dict[tuple[str, str], dict[str, Tensor]] = {}
    out = {}
    for key, value in state.items():
        if m := _QKV_PIECE.fullmatch(key):
            pieces.setdefault((m[1], m[3]), {})[m[2]] = value
        else:
            out[key] = value
    for (prefix, param), parts in pieces.items():
        if set(parts) != {"q", "k", "v"}:
            missing = sorted({"q", "k", "v"} - set(parts))
            raise CheckpointError(f"{source}: attention {prefix} has no {'/'.join(missing)} {param} (incomplete file)")
        out[f"{prefix}.qkv.{param}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


_PACKED = re.compile(r"(.*)\.in_proj_packed\.(weight|bias)")


def _split_packed(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """`X.in_proj_packed.<p>` (q, k, v stacked, as torch.nn.MultiheadAttention stores them) -> timm's `X.q` / `X.kv`."""
    out = {}
    for key, value in state.items():
        if m := _PACKED.fullmatch(key):
            dim = value.shape[0] // 3
            out[f"{m[1]}.q.{m[2]}"] = value[:dim]
            out[f"{m[1]}.kv.{m[2]}"] = value[dim:]
        else:
            out[key] = value
    return out


# ---- shared pieces of the transformers layouts ---------------------------------------------------------------------

# Image towers inside a two-tower model (SiglipModel, CLIPModel; also vision-only models saved by transformers 4) sit
# under `vision_model.`; vision-only models saved by transformers 5 have no prefix.
_V = r"(?:vision_model\.)?"


def _hf_encoder_layers() -> tuple[Rule, ...]:
    """SigLIP / CLIP encoder blocks in transformers (`encoder.layers.N.self_attn.q_proj`, `layer_norm1`, ...)."""
    p = _V + r"encoder\.layers\.(\d+)\."
    return (
        Rule(p + r"layer_norm1\.(weight|bias)", r"blocks.\1.norm1.\2"),
        Rule(p + r"layer_norm2\.(weight|bias)", r"blocks.\1.norm2.\2"),
        Rule(p + r"self_attn\.([qkv])_proj\.(weight|bias)", r"blocks.\1.attn.qkv.\2.\3"),
        Rule(p + r"self_attn\.out_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
        Rule(p + r"mlp\.(fc1|fc2)\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
    )


# Buffers older transformers versions saved into files (`position_ids`); never weights.
_HF_BUFFERS = (r".*\.position_ids",)

# ---- DINOv2 --------------------------------------------------------------------------------------------------------

DINOV2_HUB = KeyMap(
    "DINOv2 torch-hub .pth",
    rules=(
        Rule(r"register_tokens", "reg_token"),
        # ViT-g's fused SwiGLU: w12 = both input projections stacked (timm's packed fc1), w3 = output projection.
        Rule(r"blocks\.(\d+)\.mlp\.w12\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
        Rule(r"blocks\.(\d+)\.mlp\.w3\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    ),
    ignore=(r"mask_token",),  # masked-image-modelling token of pretraining: never used on real images
)

DINOV2_TRANSFORMERS = KeyMap(
    "transformers Dinov2Model / Dinov2WithRegistersModel",
    rules=(
        Rule(r"embeddings\.cls_token", "cls_token"),
        Rule(r"embeddings\.register_tokens", "reg_token"),
        Rule(r"embeddings\.position_embeddings", "pos_embed"),
        Rule(r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
        Rule(r"encoder\.layer\.(\d+)\.norm([12])\.(weight|bias)", r"blocks.\1.norm\2.\3"),
        Rule(r"encoder\.layer\.(\d+)\.attention\.attention\.query\.(weight|bias)", r"blocks.\1.attn.qkv.q.\2"),
        Rule(r"encoder\.layer\.(\d+)\.attention\.attention\.key\.(weight|bias)", r"blocks.\1.attn.qkv.k.\2"),
        Rule(r"encoder\.layer\.(\d+)\.attention\.attention\.value\.(weight|bias)", r"blocks.\1.attn.qkv.v.\2"),
        Rule(r"encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
        Rule(r"encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1", r"blocks.\1.ls\2.gamma"),
        Rule(r"encoder\.layer\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
        Rule(r"encoder\.layer\.(\d+)\.mlp\.weights_in\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
        Rule(r"encoder\.layer\.(\d+)\.mlp\.weights_out\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
        Rule(r"layernorm\.(weight|bias)", r"norm.\1"),
    ),
    ignore=(r"embeddings\.mask_token", *_HF_BUFFERS),
)

# ---- SigLIP (2) ----------------------------------------------------------------------------------------------------

_SIGLIP_TEXT = (r"text_model\..*", r"logit_scale", r"logit_bias")

SIGLIP_TRANSFORMERS = KeyMap(
    "transformers SiglipModel / SiglipVisionModel",
    rules=(
        Rule(_V + r"embeddings\.patch_embedding\.(weight|bias)", r"patch_embed.proj.\1"),
        Rule(_V + r"embeddings\.position_embedding\.weight", "pos_embed", _leading_batch),
        *_hf_encoder_layers(),
        Rule(_V + r"post_layernorm\.(weight|bias)", r"norm.\1"),
        # The attention-pooling (MAP) head: a learned probe attends over the tokens (torch MultiheadAttention).
        Rule(_V + r"head\.probe", "attn_pool.latent"),
        Rule(_V + r"head\.attention\.in_proj_(weight|bias)", r"attn_pool.in_proj_packed.\1"),
        Rule(_V + r"head\.attention\.out_proj\.(weight|bias)", r"attn_pool.proj.\1"),
        Rule(_V + r"head\.layernorm\.(weight|bias)", r"attn_pool.norm.\1"),
        Rule(_V + r"head\.mlp\.(fc1|fc2)\.(weight|bias)", r"attn_pool.mlp.\1.\2"),
    ),
    ignore=(*_SIGLIP_TEXT, *_HF_BUFFERS),
)

# OpenCLIP wraps a timm trunk for SigLIP (timm_model_name, timm_pool 'map', timm_proj 'none').
SIGLIP_OPENCLIP = KeyMap(
    "OpenCLIP (timm trunk)",
    rules=(Rule(r"visual\.trunk\.(.*)", r"\1"),),
    ignore=(r"text\..*", r"logit_scale", r"logit_bias"),
)

# ---- CLIP ----------------------------------------------------------------------------------------------------------

CLIP_TRANSFORMERS = KeyMap(
    "transformers CLIPModel / CLIPVisionModel",
    rules=(
        Rule(_V + r"embeddings\.class_embedding", "cls_token", _leading_batch),
        Rule(_V + r"embeddings\.patch_embedding\.weight", "patch_embed.proj.weight"),
        Rule(_V + r"embeddings\.position_embedding\.weight", "pos_embed", _leading_batch),
        Rule(_V + r"pre_layrnorm\.(weight|bias)", r"norm_pre.\1"),  # sic: transformers' spelling
        *_hf_encoder_layers(),
        Rule(_V + r"post_layernorm\.(weight|bias)", r"norm.\1"),
    ),
    # visual_projection maps the CLS into the joint text-image space: a linear map a trained head subsumes.
    ignore=(r"text_model\..*", r"text_projection\.weight", r"visual_projection\.weight", r"logit_scale", *_HF_BUFFERS),
)

CLIP_OPENCLIP = KeyMap(
    "OpenCLIP",
    rules=(
        Rule(r"visual\.class_embedding", "cls_token", _leading_batch),
        Rule(r"visual\.positional_embedding", "pos_embed", _leading_batch),
        Rule(r"visual\.conv1\.weight", "patch_embed.proj.weight"),
        Rule(r"visual\.ln_pre\.(weight|bias)", r"norm_pre.\1"),
        Rule(r"visual\.transformer\.resblocks\.(\d+)\.ln_([12])\.(weight|bias)", r"blocks.\1.norm\2.\3"),
        Rule(r"visual\.transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)", r"blocks.\1.attn.qkv.\2"),
        Rule(r"visual\.transformer\.resblocks\.(\d+)\.attn\.out_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
        Rule(r"visual\.transformer\.resblocks\.(\d+)\.mlp\.c_fc\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
        Rule(r"visual\.transformer\.resblocks\.(\d+)\.mlp\.c_proj\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
        Rule(r"visual\.ln_post\.(weight|bias)", r"norm.\1"),
    ),
    ignore=(
        r"visual\.proj",  # projection into the joint space (see CLIP_TRANSFORMERS)
        r"token_embedding\.weight", r"positional_embedding", r"transformer\..*", r"ln_final\..*",
        r"text_projection", r"logit_scale", r"attn_mask",
    ),
)

# timm's own files already use timm keys; the CLIP ones carry the joint-space projection as a classifier `head`.
TIMM = KeyMap("timm")
TIMM_CLIP = KeyMap("timm", ignore=(r"head\.(weight|bias)",))


def detect_layout(keys: list[str], candidates: Mapping[str, KeyMap], source: str) -> KeyMap:
    """Pick the layout of a file from its key names, among the layouts its family ships in.

    Distinctive keys: OpenCLIP `visual.*`; transformers `vision_model.*` (SigLIP, CLIP) or `embeddings.*` (DINOv2);
    DINOv2 torch hub `mask_token` / `register_tokens` (timm drops the first and renames the second); otherwise timm.
    """
    names = set(keys)
    if any(k.startswith("visual.") for k in names):
        layout = "openclip"
    elif any(k.startswith(("vision_model.", "embeddings.")) for k in names):
        layout = "transformers"
    elif "mask_token" in names or "register_tokens" in names:
        layout = "torch_hub"
    else:
        layout = "timm"
    if layout not in candidates:
        raise CheckpointError(
            f"{source} looks like a file in {layout} layout (first keys: {', '.join(keys[:3])}), which this encoder's "
            f"weights do not come in; expected one of: {', '.join(candidates)}"
        )
    return candidates[layout]
