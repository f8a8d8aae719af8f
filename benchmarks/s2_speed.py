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


def interleaved_best(fns: dict, repeats: int) -> dict:
    """Seconds per call of each function: the fastest of `repeats` rounds, after a warm-up call each.

    Rounds alternate between the functions, so load from other processes hits every candidate alike and the
    ratios between them stay meaningful on a noisy machine.
    """
    for fn in fns.values():
        fn()
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def bare_best_per_crop(encoder, native: int, batches: list[int], repeats: int) -> dict:
    def call(x):
        with torch.inference_mode():
            return encoder(x)

    inputs = {}
    for fmt in ("channels_last", "contiguous"):
        for b in batches:
            x = torch.rand(b, 3, native, native)
            inputs[f"{fmt}@{b}"] = x.contiguous(memory_format=torch.channels_last) if fmt == "channels_last" else x
    times = interleaved_best({k: (lambda x=x: call(x)) for k, x in inputs.items()}, repeats)
    sweep = {k: t / inputs[k].shape[0] for k, t in times.items()}
    best = min(sweep, key=sweep.get)
    return {"per_crop_ms": {k: round(v * 1e3, 2) for k, v in sweep.items()}, "best": best,
            "best_per_crop_s": sweep[best]}


def run(encoder_name: str, batches: list[int], frame: int | None, repeats: int, crop_batch_size: int | str) -> dict:
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

        # The bare encoder's best layout is re-timed in the same rounds, so all three see the same load.
        b_best = int(bare["best"].split("@")[1])
        crop = torch.rand(b_best, 3, native, native)
        if bare["best"].startswith("channels_last"):
            crop = crop.contiguous(memory_format=torch.channels_last)

        def bare_best():
            with torch.inference_mode():
                return enc(crop)

        t = interleaved_best({"ours": lambda: s2.feature_map(x), "ref": reference_layout, "bare": bare_best}, repeats)
        ours_s, ref_s = t["ours"], t["ref"]
        same = S2Encoder(enc, img_sizes=img_sizes, antialias=False, crop_batch_size=crop_batch_size).feature_map(x)
        best_s = crops * b * t["bare"] / b_best
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
    parser.add_argument("--crop-batch-size", default="auto", help="int, or auto (S2Encoder's default)")
    args = parser.parse_args()
    if args.crop_batch_size != "auto":
        args.crop_batch_size = int(args.crop_batch_size)
    report = {
        "machine": {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "processor": platform.processor() or platform.machine()},
        "results": [run(e, args.batches, args.frame, args.repeats, args.crop_batch_size) for e in args.encoders],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
