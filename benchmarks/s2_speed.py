"""S2 throughput on this machine: our S2Encoder vs the reference layout vs the bare encoder's best case (JSON).

For each encoder and batch size, with 448-px frames and img_sizes (224, 448) (5 crops of 224 per frame):
- `ours`: S2Encoder.feature_map (crops of all scales streamed in chunks, channels_last where the encoder prefers it);
- `reference_layout`: multiscale_forward as the reference runs it: one contiguous call per scale, no antialias;
- `bare_best`: 5 x the best per-crop time of the bare encoder, swept over batch sizes and memory formats.
Outputs of ours and the reference layout are compared (same numbers up to float reassociation).

    python benchmarks/s2_speed.py --encoders efficientnet_lite0 r3m_resnet18 --batches 1 32
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from s2policy import S2Encoder, build_encoder, multiscale_forward


def best_time(fn, repeats: int, min_seconds: float = 1.0) -> float:
    """Seconds per call: the fastest of `repeats` timed runs (each at least one call), after one warm-up call."""
    fn()
    best = float("inf")
    start = time.perf_counter()
    for i in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        if i >= 1 and time.perf_counter() - start > min_seconds * repeats:
            break
    return best


def bare_best_per_crop(encoder, native: int, batches: list[int], repeats: int) -> dict:
    sweep = {}
    for fmt in ("channels_last", "contiguous"):
        for b in batches:
            x = torch.rand(b, 3, native, native)
            if fmt == "channels_last":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                sweep[f"{fmt}@{b}"] = best_time(lambda: encoder(x), repeats) / b
    best = min(sweep, key=sweep.get)
    return {"per_crop_ms": {k: round(v * 1e3, 2) for k, v in sweep.items()}, "best": best,
            "best_per_crop_s": sweep[best]}


def run(encoder_name: str, batches: list[int], frame: int | None, repeats: int, crop_batch_size: int) -> dict:
    enc = build_encoder(encoder_name, weights="pretrained" if encoder_name.startswith("efficientnet") else "random")
    native = enc.native_size
    frame = frame or 2 * native
    img_sizes = [native, 2 * native]
    s2 = S2Encoder(enc, img_sizes=img_sizes, crop_batch_size=crop_batch_size)
    crops = s2.crops_per_frame((frame, frame))
    bare = bare_best_per_crop(enc, native, [1, 2, 4, 8, 16, 32], repeats)
    result = {"encoder": encoder_name, "native": native, "frame": frame, "img_sizes": img_sizes,
              "crops_per_frame": crops, "crop_batch_size": crop_batch_size, "bare_sweep": bare, "batches": {}}
    for b in batches:
        x = torch.rand(b, 3, frame, frame)

        def reference_layout():
            with torch.inference_mode():
                return multiscale_forward(enc, x, img_sizes=img_sizes, max_split_size=native, antialias=False,
                                          num_prefix_token=enc.num_prefix_tokens, output_shape=enc.output_shape)

        ours_s = best_time(lambda: s2.feature_map(x), repeats)
        ref_s = best_time(reference_layout, repeats)
        same = S2Encoder(enc, img_sizes=img_sizes, antialias=False, crop_batch_size=crop_batch_size).feature_map(x)
        best_s = crops * bare["best_per_crop_s"] * b
        result["batches"][str(b)] = {
            "ours_frames_per_s": round(b / ours_s, 2),
            "reference_layout_frames_per_s": round(b / ref_s, 2),
            "bare_best_frames_per_s": round(b / best_s, 2),
            "speedup_vs_reference_layout": round(ref_s / ours_s, 2),
            "fraction_of_bare_best": round(best_s / ours_s, 3),
            "max_abs_diff_vs_reference_layout": float((same - reference_layout()).abs().max()),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", nargs="+", default=["efficientnet_lite0", "r3m_resnet18"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--frame", type=int, default=None, help="camera frame side (default: 2 x native size)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--crop-batch-size", type=int, default=8)
    args = parser.parse_args()
    report = {
        "machine": {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "processor": platform.processor() or platform.machine()},
        "results": [run(e, args.batches, args.frame, args.repeats, args.crop_batch_size) for e in args.encoders],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
