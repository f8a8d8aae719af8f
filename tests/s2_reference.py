"""A plain re-statement of the reference s2wrapper algorithm (facts/s2.md), written loop by loop for clarity.

Only tests use it: it is the oracle our vectorised, extended `multiscale_forward` must match.
"""

import math

import torch
import torch.nn.functional as F


def reference_s2(model, x, scales=None, img_sizes=None, max_split_size=None, resize_output_to_idx=0,
                 num_prefix_token=0, output_shape="bnc", split_forward=False):
    b, _, side, side_w = x.shape
    assert side == side_w, "the reference handles square inputs only"
    sizes = img_sizes or [int(side * s) for s in scales]
    split = max_split_size or side
    splits = [math.ceil(s / split) for s in sizes]

    outs = []
    for size, n in zip(sizes, splits):
        img = F.interpolate(x.to(torch.float32), size=size, mode="bicubic").to(x.dtype)
        t = size // n
        crops = torch.cat([img[:, :, i * t:(i + 1) * t, j * t:(j + 1) * t] for i in range(n) for j in range(n)])
        if split_forward:
            outs.append(torch.cat([model(c) for c in crops.split(b)]))
        else:
            outs.append(model(crops))

    prefixes = []
    if num_prefix_token > 0:
        prefixes = [o[:, :num_prefix_token] for o in outs]
        outs = [o[:, num_prefix_token:] for o in outs]
    if output_shape == "bnc":
        maps = []
        for o in outs:
            g = int(o.shape[1] ** 0.5)
            maps.append(o.reshape(o.shape[0], g, g, o.shape[2]).permute(0, 3, 1, 2))
        outs = maps

    merged = []
    for o, n in zip(outs, splits):
        rows = [torch.cat([o[(i * n + j) * b:(i * n + j + 1) * b] for j in range(n)], dim=-1) for i in range(n)]
        merged.append(torch.cat(rows, dim=-2))

    grid = merged[resize_output_to_idx].shape[-2]
    out = torch.cat([F.interpolate(m.to(torch.float32), size=grid, mode="area").to(m.dtype) for m in merged], dim=1)
    if output_shape == "bnc":
        out = out.permute(0, 2, 3, 1).reshape(b, -1, out.shape[1])
    if num_prefix_token > 0:
        pref = [torch.stack(p.split(b, dim=0), dim=0).mean(dim=0) for p in prefixes]
        out = torch.cat([torch.cat(pref, dim=-1), out], dim=1)
    return out
