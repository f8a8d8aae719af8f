"""`python -m s2policy.encoders`: every registered encoder with its size and counted cost, native and with S2 (1, 2).

Models are built with random weights on the meta device: shapes and costs need no memory, compute or weight files.
"""

from __future__ import annotations

import argparse

import torch

from ..errors import ConfigError
from ..flops import count_gmacs, count_params
from ..s2_encoder import S2Encoder
from . import build_encoder, list_encoders
from .weights import WeightSpec, weight_spec

S2_SCALES = (1, 2)


def _weight_source(spec: WeightSpec) -> str:
    if spec.package:
        return "package"
    if spec.hf_repo:
        return "hub"
    if spec.url:
        return "download"
    return "local file" if spec.file_format else "-"


def encoder_rows(names: list[str]) -> list[dict[str, object]]:
    """One row per encoder: name, params, native size, embed dim, GMACs at native size and with S2 (1, 2)."""
    rows = []
    for name in names:
        with torch.device("meta"):
            encoder = build_encoder(name, weights="random")
        s2 = S2Encoder(encoder, scales=list(S2_SCALES))
        native = count_gmacs(encoder, torch.zeros(1, 3, encoder.native_size, encoder.native_size, device="meta"))
        rows.append(
            {
                "encoder": name,
                "params": count_params(encoder),
                "native": encoder.native_size,
                "embed_dim": encoder.embed_dim,
                "output": encoder.output_shape,
                "gmacs": native,
                "s2_gmacs": s2.gmacs(),
                "s2_dim": s2.out_dim,
                "weights": _weight_source(weight_spec(name)),
            }
        )
    return rows


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 100_000 else f"{n / 1e3:.1f}k"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m s2policy.encoders", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="encoders to list (default: all)")
    args = parser.parse_args(argv)
    try:
        rows = encoder_rows(args.names or list_encoders())
    except ConfigError as e:
        parser.error(str(e))
    print(
        f"{'encoder':<20}{'params':>9}{'native':>8}{'embed':>7}{'out':>6}{'GMACs':>9}"
        f"{'S2(1,2) GMACs':>15}{'S2 dim':>8}  weights"
    )
    for r in rows:
        print(
            f"{r['encoder']:<20}{_millions(r['params']):>9}{r['native']:>8}{r['embed_dim']:>7}{r['output']:>6}"
            f"{r['gmacs']:>9.3g}{r['s2_gmacs']:>15.3g}{r['s2_dim']:>8}  {r['weights']}"
        )
    print("GMACs = multiply-accumulates per frame (GFLOPs = 2x), counted by torch's FLOP counter; S2 (1, 2) runs")
    print("1 + 4 native-size crops. weights: package = bundled, works offline; download = official URL;")
    print("hub = the Hugging Face cache, else downloaded by the hub client (HF_HUB_OFFLINE=1: cache only);")
    print("local file = the official hosting is offline, pass weights=<path>; - = random weights only.")


if __name__ == "__main__":
    main()
