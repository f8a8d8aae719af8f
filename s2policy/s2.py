"""S2 ("Scaling on Scales", Shi et al. 2024): one backbone, several image scales, features merged on channels.

`multiscale_forward` keeps the reference s2wrapper's signature and, for square inputs whose scales tile into
crops, its exact numbers. The algorithm in four steps (see `plan_scales`, `run_scales`, `merge_scales`):

1. resize the *original* image to every scale (bicubic) and cut it into crops of side `max_split_size`;
2. run the backbone on the crops (tile-major on the batch axis: tile (i, j) of image b sits at (i * n_w + j) * B + b);
3. stitch each scale's crop outputs back into one feature map, average its prefix (CLS) tokens over crops;
4. resize every map to the grid of scale `resize_output_to_idx` with area pooling and concatenate on channels.

Beyond the reference (keyword arguments with documented defaults):
- non-square frames: every axis is tiled on its own; `fit="resize"` rounds each scale to whole crops per axis;
- `antialias=True` filters an axis that is made smaller (the reference aliases when a real high-resolution frame
  is shrunk to the small scale); `antialias=False` reproduces the reference exactly;
- `batch_scales` / `chunk_size` / `channels_last`: how crops are grouped into backbone calls (speed and memory only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .errors import ConfigError

Size2 = tuple[int, int]


@dataclass(frozen=True)
class ScalePlan:
    """How one scale is made: resize the frame to `size` (h, w), then cut `grid` (n_h, n_w) crops of side `crop`."""

    size: Size2
    grid: Size2
    crop: int

    @property
    def num_crops(self) -> int:
        return self.grid[0] * self.grid[1]


def _target_size(frame: Size2, scale: float | None, img_size: int | Sequence[int] | None) -> Size2:
    h, w = frame
    if img_size is not None:
        if isinstance(img_size, int):
            # An int is the side of a square frame, and the shorter side of a non-square one (aspect kept).
            short = min(h, w)
            return (img_size, round(img_size * w / short)) if h == short else (round(img_size * h / short), img_size)
        return int(img_size[0]), int(img_size[1])
    return int(h * scale), int(w * scale)  # int(), not round(): the reference's rounding


def plan_scales(
    frame: Size2,
    scales: Sequence[float] | None = None,
    img_sizes: Sequence[int | Sequence[int]] | None = None,
    max_split_size: int | None = None,
    fit: str = "exact",
) -> list[ScalePlan]:
    """Sizes and crop grids of every scale for a frame of `frame` = (H, W) pixels.

    `img_sizes` (absolute) win over `scales` (multiples of the frame side), as in the reference. The crop side is
    `max_split_size` (default: the frame's shorter side). `fit="exact"` requires every scale to be a whole number of
    crops per axis and raises otherwise (the reference would send wrong-sized crops); `fit="resize"` rounds each axis
    to the nearest whole number of crops (at least one), changing that scale's aspect ratio slightly.
    """
    if img_sizes is None and scales is None:
        raise ConfigError("S2 needs either scales=[...] or img_sizes=[...]")
    if fit not in ("exact", "resize"):
        raise ConfigError(f"fit must be 'exact' or 'resize', got {fit!r}")
    crop = int(max_split_size or min(frame))
    entries = [(None, s) for s in img_sizes] if img_sizes is not None else [(s, None) for s in scales]
    if not entries:
        raise ConfigError("S2 needs at least one scale")
    plans = []
    for scale, img_size in entries:
        size = _target_size(frame, scale, img_size)
        if min(size) <= 0:
            raise ConfigError(f"scale {scale or img_size} makes a {size[0]}x{size[1]} image from a {frame} frame")
        if fit == "resize":
            grid = (max(1, int(size[0] / crop + 0.5)), max(1, int(size[1] / crop + 0.5)))  # half rounds up
            size = (grid[0] * crop, grid[1] * crop)
        elif size[0] % crop or size[1] % crop:
            raise ConfigError(
                f"scale {scale if scale is not None else img_size} of a {frame[0]}x{frame[1]} frame is "
                f"{size[0]}x{size[1]} pixels, which does not tile into {crop}x{crop} crops (the backbone's input); "
                f"use image sizes that are multiples of {crop}, or fit='resize' to round each axis to whole crops"
            )
        else:
            grid = (size[0] // crop, size[1] // crop)
        plans.append(ScalePlan(size=size, grid=grid, crop=crop))
    return plans


def resize_image(x: torch.Tensor, size: Size2, antialias: bool = True) -> torch.Tensor:
    """Bicubic resize of (B, C, H, W) to `size`, computed in float32 and cast back (as the reference does).

    With `antialias`, only an axis that shrinks is low-pass filtered: torch's antialiased bicubic uses a different
    kernel (a=-0.5) from the plain one (a=-0.75), so a growing axis keeps the plain kernel the reference uses.
    """
    in_size = tuple(x.shape[-2:])
    if in_size == tuple(size):
        return x  # bicubic at scale 1 samples pixel centres: the identity
    x32 = x.to(torch.float32)
    shrink = [antialias and size[i] < in_size[i] for i in range(2)]
    grow = [size[i] > in_size[i] for i in range(2)]
    if any(shrink) and any(grow):  # bicubic is separable: filter the shrinking axis alone
        first = (size[0], in_size[1])
        x32 = F.interpolate(x32, size=first, mode="bicubic", align_corners=False, antialias=shrink[0])
        out = F.interpolate(x32, size=tuple(size), mode="bicubic", align_corners=False, antialias=shrink[1])
    else:
        out = F.interpolate(x32, size=tuple(size), mode="bicubic", align_corners=False, antialias=any(shrink))
    return out.to(x.dtype)


def split_into_crops(x: torch.Tensor, grid: Size2, channels_last: bool = False) -> torch.Tensor:
    """(B, C, n_h*c, n_w*c) -> (n_h*n_w*B, C, c, c), tile-major: crop (i, j) of image b at (i*n_w + j)*B + b."""
    b, ch, h, w = x.shape
    nh, nw = grid
    t = x.reshape(b, ch, nh, h // nh, nw, w // nw)
    if channels_last:  # build the crops directly in NHWC memory instead of copying twice
        t = t.permute(2, 4, 0, 3, 5, 1).reshape(nh * nw * b, h // nh, w // nw, ch).permute(0, 3, 1, 2)
        # A 1x1 grid reshapes without a copy, leaving the NCHW layout: make the NHWC copy explicitly (no-op otherwise).
        return t.contiguous(memory_format=torch.channels_last)
    return t.permute(2, 4, 0, 1, 3, 5).reshape(nh * nw * b, ch, h // nh, w // nw)


def merge_crops(y: torch.Tensor, grid: Size2) -> torch.Tensor:
    """Inverse of `split_into_crops` on feature maps: (n_h*n_w*B, C, g_h, g_w) -> (B, C, n_h*g_h, n_w*g_w)."""
    nh, nw = grid
    n, c, gh, gw = y.shape
    b = n // (nh * nw)
    return y.reshape(nh, nw, b, c, gh, gw).permute(2, 3, 0, 4, 1, 5).reshape(b, c, nh * gh, nw * gw)


def _call_in_chunks(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk: int | None) -> torch.Tensor:
    if chunk is None or chunk >= x.shape[0]:
        return model(x)
    return torch.cat([model(part) for part in x.split(chunk)], dim=0)


def run_scales(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    plans: Sequence[ScalePlan],
    antialias: bool = True,
    batch_scales: bool = False,
    chunk_size: int | None = None,
    channels_last: bool = False,
) -> list[torch.Tensor]:
    """Resize, crop and run `model`; returns one raw output per scale, (num_crops * B, ...), tile-major.

    `batch_scales` sends the crops of all scales through one stream of calls of at most `chunk_size` crops (the
    reference makes one call per scale); results are the same up to float reassociation in the backbone.
    """
    crops = [
        split_into_crops(resize_image(x, p.size, antialias), p.grid, channels_last)
        for p in plans
    ]
    if not batch_scales:
        return [_call_in_chunks(model, c, chunk_size) for c in crops]
    outs = _call_in_chunks(model, torch.cat(crops, dim=0) if len(crops) > 1 else crops[0], chunk_size)
    return list(outs.split([c.shape[0] for c in crops], dim=0))


def _tokens_to_map(out: torch.Tensor, num_prefix_token: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """'bnc' crop output (n, P+N, C) -> spatial map (n, C, g, g) and prefix tokens (n, P, C) or None."""
    n_tokens = out.shape[1] - num_prefix_token
    side = math.isqrt(max(n_tokens, 0))
    if side * side != n_tokens or n_tokens == 0:
        hint = ""
        for p in range(1, 9):  # suggest the prefix count that would make the rest a square grid
            if p != num_prefix_token and math.isqrt(out.shape[1] - p) ** 2 == out.shape[1] - p:
                hint = f"; with num_prefix_token={p} the rest would be a {math.isqrt(out.shape[1] - p)}^2 grid"
                break
        raise ConfigError(
            f"the model returned {out.shape[1]} tokens per crop; after removing num_prefix_token={num_prefix_token} "
            f"prefix (CLS/register) tokens, {n_tokens} is not a square grid of patch tokens{hint}"
        )
    prefix = out[:, :num_prefix_token] if num_prefix_token else None
    grid = out[:, num_prefix_token:].transpose(1, 2).reshape(out.shape[0], out.shape[2], side, side)
    return grid, prefix


def merge_scales(
    outs: Sequence[torch.Tensor],
    plans: Sequence[ScalePlan],
    batch: int,
    resize_output_to_idx: int = 0,
    num_prefix_token: int = 0,
    output_shape: str = "bnc",
) -> torch.Tensor:
    """Stitch crop outputs per scale, area-resize to one grid, concatenate on channels (steps 3-4 above)."""
    maps, prefixes = [], []
    for out, plan in zip(outs, plans):
        if output_shape == "bnc":
            out, prefix = _tokens_to_map(out, num_prefix_token)
            if prefix is not None:
                prefixes.append(prefix.reshape(plan.num_crops, batch, *prefix.shape[1:]).mean(dim=0))
        maps.append(merge_crops(out, plan.grid))
    grid = tuple(maps[resize_output_to_idx].shape[-2:])
    merged = torch.cat(
        [m if tuple(m.shape[-2:]) == grid else F.interpolate(m.to(torch.float32), size=grid, mode="area").to(m.dtype)
         for m in maps],
        dim=1,
    )
    if output_shape == "bchw":
        return merged
    merged = merged.flatten(2).transpose(1, 2)
    return torch.cat([torch.cat(prefixes, dim=-1), merged], dim=1) if prefixes else merged


def multiscale_forward(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    scales: Sequence[float] | None = None,
    img_sizes: Sequence[int | Sequence[int]] | None = None,
    max_split_size: int | None = None,
    resize_output_to_idx: int = 0,
    num_prefix_token: int = 0,
    output_shape: str = "bnc",
    split_forward: bool = False,
    *,
    antialias: bool = True,
    fit: str = "exact",
    batch_scales: bool = False,
    chunk_size: int | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Run `model` on `x` (B, C, H, W) at several scales and merge its features (the reference s2wrapper API).

    Returns (B, P + h0*w0, C*K) for `output_shape='bnc'` (ViT tokens, P prefix tokens averaged over crops) or
    (B, C*K, h0, w0) for 'bchw' (CNN maps), where K = number of scales and (h0, w0) is the feature grid of scale
    `resize_output_to_idx` (an index into the scales as given; -1 = last). Gradients flow (no no_grad here).

    Extensions (keyword-only): `antialias` low-pass filters axes that shrink (scales >= 1 never shrink, so they match
    the reference either way; `antialias=False` reproduces it for every scale); `fit` ('exact' raises on scales that do not tile, 'resize' rounds them,
    see `plan_scales`); `batch_scales`, `chunk_size` (max crops per call; `split_forward` means chunks of B),
    `channels_last` change speed and memory only.
    """
    if x.dim() != 4:
        raise ValueError(f"S2 input must be a 4-D (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if output_shape not in ("bnc", "bchw"):
        raise ConfigError(f"output_shape must be 'bnc' (ViT tokens) or 'bchw' (CNN maps), got {output_shape!r}")
    if output_shape == "bchw" and num_prefix_token:
        raise ConfigError("num_prefix_token must be 0 for 'bchw' outputs: CNN feature maps have no prefix tokens")
    plans = plan_scales(tuple(x.shape[-2:]), scales, img_sizes, max_split_size, fit)
    if not -len(plans) <= resize_output_to_idx < len(plans):
        raise ConfigError(f"resize_output_to_idx={resize_output_to_idx} is out of range for {len(plans)} scales")
    if split_forward and chunk_size is None:
        chunk_size = x.shape[0]
    outs = run_scales(model, x, plans, antialias, batch_scales, chunk_size, channels_last)
    return merge_scales(outs, plans, x.shape[0], resize_output_to_idx, num_prefix_token, output_shape)
