"""DINOv2 / SigLIP 2 / CLIP weight files in their official layouts, made from independent reference models.

transformers (and open_clip) models are the references: a file "in transformers layout" is what the reference
model's `save_pretrained` writes (transformers 5 renames modules internally and reverts to the published key names
on saving, so the file has the Hub's names, e.g. `attention.attention.query`), an OpenCLIP file is an open_clip
model's `state_dict()`, and the DINOv2 torch-hub and timm layouts are derived from the reference tensors with
the renames written out here (and timm's own DINOv2 converter), never with s2policy's key maps. Small widths and
depths keep the tests fast; key names and per-tensor layouts are the official ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .encoder_checkpoints import serving

DINOV2_SMALL = {"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4}
VIT_SMALL = {"hidden_size": 48, "intermediate_size": 192, "num_hidden_layers": 2, "num_attention_heads": 4}
ARCH_SMALL = {"embed_dim": 48, "depth": 2, "num_heads": 4}  # the same model on s2policy's (timm's) side


def randomize(module: nn.Module, seed: int = 1) -> nn.Module:
    """Every tensor random (norm scales around 1), so a tensor loaded into the wrong place changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            is_scale = name.endswith(("norm1.weight", "norm2.weight", "norm.weight", "layernorm.weight")) or (
                "norm" in name and name.endswith("weight") and t.ndim == 1
            )
            noise = torch.randn(t.shape, generator=gen)
            t.copy_((1.0 + 0.1 * noise) if is_scale else 0.05 * noise if "lambda1" not in name else 0.5 + 0.1 * noise)
    return module.eval()


def dinov2_reference(registers: bool, swiglu: bool = False, image_size: int = 518) -> nn.Module:
    """A small transformers Dinov2Model / Dinov2WithRegistersModel (official 37x37 position table at 518)."""
    from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    common = dict(DINOV2_SMALL, image_size=image_size, patch_size=14, layer_norm_eps=1e-6, use_swiglu_ffn=swiglu)
    if registers:
        model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=4, **common))
    else:
        model = Dinov2Model(Dinov2Config(**common))
    return randomize(model)


def dinov2_hub_state(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The torch-hub `.pth` layout (dinov2_vitX14[_reg4]_pretrain.pth) of a transformers DINOv2 state dict."""
    out = {
        "cls_token": hf_state["embeddings.cls_token"],
        "mask_token": hf_state["embeddings.mask_token"],  # (1, C) in both
        "pos_embed": hf_state["embeddings.position_embeddings"],
        "patch_embed.proj.weight": hf_state["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": hf_state["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": hf_state["layernorm.weight"],
        "norm.bias": hf_state["layernorm.bias"],
    }
    if "embeddings.register_tokens" in hf_state:
        out["register_tokens"] = hf_state["embeddings.register_tokens"]
    depth = 1 + max(int(k.split(".")[2]) for k in hf_state if k.startswith("encoder.layer."))
    for i in range(depth):
        hf, hub = f"encoder.layer.{i}.", f"blocks.{i}."
        for p in ("weight", "bias"):
            out[hub + f"norm1.{p}"] = hf_state[hf + f"norm1.{p}"]
            out[hub + f"norm2.{p}"] = hf_state[hf + f"norm2.{p}"]
            qkv = [hf_state[hf + f"attention.attention.{n}.{p}"] for n in ("query", "key", "value")]
            out[hub + f"attn.qkv.{p}"] = torch.cat(qkv)
            out[hub + f"attn.proj.{p}"] = hf_state[hf + f"attention.output.dense.{p}"]
            if hf + f"mlp.weights_in.{p}" in hf_state:  # ViT-g: SwiGLUFFNFused
                out[hub + f"mlp.w12.{p}"] = hf_state[hf + f"mlp.weights_in.{p}"]
                out[hub + f"mlp.w3.{p}"] = hf_state[hf + f"mlp.weights_out.{p}"]
            else:
                out[hub + f"mlp.fc1.{p}"] = hf_state[hf + f"mlp.fc1.{p}"]
                out[hub + f"mlp.fc2.{p}"] = hf_state[hf + f"mlp.fc2.{p}"]
        out[hub + "ls1.gamma"] = hf_state[hf + "layer_scale1.lambda1"]
        out[hub + "ls2.gamma"] = hf_state[hf + "layer_scale2.lambda1"]
    return out


def dinov2_timm_state(hub_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's layout (timm/vit_*_patch14_dinov2 model.safetensors), by timm's own converter of the hub file."""
    from timm.models.vision_transformer import _convert_dinov2

    return _convert_dinov2(dict(hub_state), None)


def official_dinov2_positions(table: torch.Tensor, grid: int, registers: bool) -> torch.Tensor:
    """What the official DINOv2 code adds to the patches at `grid` x `grid` (interpolate_pos_encoding): bicubic,
    offset 0.1 on the scale factor without antialiasing (original models); exact size with antialiasing (registers)."""
    side = int((table.shape[1] - 1) ** 0.5)
    patch = table[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    if registers:
        patch = F.interpolate(patch, size=(grid, grid), mode="bicubic", antialias=True)
    else:
        patch = F.interpolate(patch, scale_factor=((grid + 0.1) / side,) * 2, mode="bicubic", antialias=False)
    return torch.cat([table[:, :1], patch.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1)


def siglip_reference(image_size: int = 224) -> nn.Module:
    """A small transformers SiglipModel (vision + text tower, as google/siglip2-* files hold)."""
    from transformers import SiglipConfig, SiglipModel

    vision = dict(VIT_SMALL, image_size=image_size, patch_size=16, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
    text = dict(VIT_SMALL, vocab_size=64, max_position_embeddings=8, projection_size=48)
    return randomize(SiglipModel(SiglipConfig(text_config=text, vision_config=vision)))


def clip_reference() -> nn.Module:
    """A small transformers CLIPModel with OpenAI CLIP's choices (QuickGELU, eps 1e-5, no patch bias)."""
    from transformers import CLIPConfig, CLIPModel

    vision = dict(VIT_SMALL, image_size=224, patch_size=16, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    text = dict(VIT_SMALL, vocab_size=64, max_position_embeddings=8, hidden_act="quick_gelu")
    return randomize(CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)))


def openclip_reference() -> nn.Module:
    """A small open_clip CLIP (OpenAI ViT-B/16 recipe: QuickGELU, 224, patch 16) with its text tower."""
    from open_clip.model import CLIP

    model = CLIP(
        embed_dim=32, quick_gelu=True,
        vision_cfg={"layers": 2, "width": 48, "head_width": 12, "patch_size": 16, "image_size": 224},
        text_cfg={"context_length": 8, "vocab_size": 64, "width": 32, "heads": 4, "layers": 1},
    )  # fmt: skip
    return randomize(model)


def save_transformers(model: nn.Module, folder: Path) -> Path:
    """The reference model as the Hub publishes it: `model.safetensors` from `save_pretrained`."""
    model.save_pretrained(folder)
    return folder / "model.safetensors"


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def meta_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Key names and shapes of a (full-size) module built on the meta device."""
    return dict(module.state_dict())


class _HubHandler(http.server.BaseHTTPRequestHandler):
    """The two requests the hub client makes for `<repo>/resolve/<revision>/<file>`: HEAD (commit, ETag = the LFS
    file's sha256, size), then GET. `server.etags` can override an ETag to play a corrupted transfer."""

    def _answer(self, with_body: bool) -> None:
        srv = self.server
        path = self.path.split("?")[0]
        srv.requests.append((self.command, path))
        data = srv.files.get(path)
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", "c" * 40)
        self.send_header("ETag", f'"{srv.etags.get(path) or hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if with_body:
            self.wfile.write(data)

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(with_body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(with_body=True)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def loopback_hub(files: dict[str, bytes], etags: dict[str, str] | None = None) -> Iterator:
    """A Hugging Face Hub stand-in on 127.0.0.1: `files` maps "/<repo>/resolve/main/<file>" to bytes."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HubHandler)
    server.files, server.etags, server.requests = files, etags or {}, []
    server.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    with serving(server):
        yield server
