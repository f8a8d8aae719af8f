"""Weight files in the exact official formats (facts/encoders.md), built in tests because the real ones are not
downloadable here; and a loopback HTTP server for download tests."""

from __future__ import annotations

import contextlib
import http.server
import threading
from functools import partial
from pathlib import Path
from typing import Iterator

import torch
import torchvision
from timm.models.vision_transformer import VisionTransformer
from torch import nn

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def imagenet_normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - IMAGENET_MEAN) / IMAGENET_STD


def reference_resnet18(seed: int = 1) -> nn.Module:
    """torchvision ResNet-18 with fc=Identity (R3M's convnet), random weights and non-trivial BatchNorm stats."""
    torch.manual_seed(seed)
    net = torchvision.models.resnet18(weights=None)
    net.fc = nn.Identity()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # eval-mode BN then really uses stored statistics
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def reference_mae_vit(
    embed_dim: int, depth: int, num_heads: int, img_size: int = 224, seed: int = 1, state: dict | None = None
) -> nn.Module:
    """A timm ViT/16 as MVP and VC-1 build it (qkv_bias, LayerNorm eps 1e-6, CLS token, no head), with `state` or
    seeded random weights in which every tensor matters (timm zero-inits biases, pos_embed, ...)."""
    with torch.device("meta"):  # skip timm's slow init: every tensor is set below
        net = VisionTransformer(
            img_size=img_size, patch_size=16, embed_dim=embed_dim, depth=depth, num_heads=num_heads, qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6), num_classes=0,
        )  # fmt: skip
    if state is None:
        gen = torch.Generator().manual_seed(seed)
        state = {}
        for name, p in net.state_dict().items():
            is_norm_scale = name.endswith("weight") and p.ndim == 1
            state[name] = (1.0 if is_norm_scale else 0.0) + 0.02 * torch.randn(p.shape, generator=gen)
    net.load_state_dict(state, assign=True)
    return net.eval()


def r3m_file_contents(convnet_state: dict[str, torch.Tensor]) -> dict:
    """R3M model.pt layout: {'r3m': DataParallel state dict incl. the language head}, plus other top-level keys."""
    r3m = {f"module.convnet.{k}": v for k, v in convnet_state.items()}
    r3m["module.lang_enc.model.embeddings.weight"] = torch.randn(4, 3)
    r3m["module.lang_rew.0.weight"] = torch.randn(2, 5)
    return {"r3m": r3m, "optimizer": {"state": {}, "lr": 1e-4}, "global_step": 1000}


def mae_file_contents(vit_state: dict[str, torch.Tensor]) -> dict:
    """MAE checkpoint layout (MVP, VC-1): {'model': timm ViT keys + decoder + mask_token, ...}."""
    model = dict(vit_state)
    model["mask_token"] = torch.zeros(1, 1, 8)
    model["decoder_embed.weight"] = torch.randn(8, 4)
    model["decoder_pos_embed"] = torch.zeros(1, 5, 8)
    model["decoder_blocks.0.norm1.weight"] = torch.ones(8)
    model["head.weight"] = torch.zeros(10, 8)  # a classifier (supervised MVP files), deleted by MVP too
    return {"model": model, "epoch": 399, "args": {"model": "mae_vit"}}


def placeholder_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's keys and shapes with 1-element storage (stride-0 views), so big-model files stay a few KB."""
    return {k: torch.full((), 0.01, dtype=v.dtype).expand(v.shape) for k, v in module.state_dict().items()}


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves `server.files` (path -> bytes), honours `Range: bytes=N-`, and can cut the first responses short."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if (rng := self.headers.get("Range")) and srv.honour_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_responses > 0:  # simulate a dropped connection half way
            srv.cut_responses -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # keep test output clean
        pass


@contextlib.contextmanager
def loopback_server(files: dict[str, bytes], cut_responses: int = 0, honour_range: bool = True) -> Iterator:
    """A threaded HTTP server on 127.0.0.1 (random free port); yields it, with `.url(path)` and `.requests`."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    server.files, server.requests = files, []
    server.cut_responses, server.honour_range = cut_responses, honour_range
    server.url = lambda path: f"http://127.0.0.1:{server.server_address[1]}{path}"
    with serving(server):
        yield server


@contextlib.contextmanager
def serving(server: http.server.ThreadingHTTPServer) -> Iterator[None]:
    """Run `server` in a daemon thread for the duration of the block, then shut it down and join the thread."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def write(path: Path, contents: object) -> Path:
    torch.save(contents, path)
    return path
