"""Run an S2 encoder's backbone passes through ONNX Runtime, keeping S2 itself (resize, split, merge) in torch.

Every S2 crop is one native-size backbone pass, so the backbone is where the time goes, and ONNX Runtime's CPU
kernels run small CNN crops faster than torch eager on one thread (measured speed-up and parity on trained
policies: docs/results.md). The swap is checked on random crops before use and changes nothing else: same weights,
same S2 arithmetic, same pooled features within float32 rounding.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .export import ExportParityError

log = logging.getLogger(__name__)

#: Largest |torch - ORT| backbone output difference accepted by the check (float32 kernels differ ~1e-5).
PARITY_TOLERANCE = 1e-3


class OrtBackbone:
    """A callable standing in for `backbone.forward`: (N, 3, S, S) float tensor -> the backbone's output tensor."""

    def __init__(self, session, input_name: str):
        self.session, self.input_name = session, input_name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch = np.ascontiguousarray(x.detach().float().cpu().numpy())  # channels_last crops -> NCHW buffer
        return torch.from_numpy(self.session.run(None, {self.input_name: batch})[0])


def use_onnx_backbone(s2_encoder: nn.Module, threads: int = 1) -> OrtBackbone | None:
    """Make `s2_encoder` (an S2Encoder on the CPU) run its backbone crops in ONNX Runtime with `threads` intra-op
    threads, in place (nothing to do, and None, for an encoder without weights). The counted GMACs are computed
    first (they need the torch modules). Raises ExportError if
    onnxruntime is missing (ConfigError) or the exported backbone disagrees with torch (ExportParityError)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ConfigError("eval.backbone=onnx needs onnxruntime: pip install -e '.[export]'") from e
    backbone = s2_encoder.encoder
    if not backbone.state_dict():  # the "none" encoder: no backbone pass to run anywhere
        return None
    s2_encoder.gmacs()  # cache the counted cost while the torch graph is still the one that runs
    size = int(backbone.native_size)
    probe = torch.rand(2, 3, size, size)
    buf = io.BytesIO()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about shape checks that are constant for fixed-size crops
        torch.onnx.export(backbone, (probe,), buf, input_names=["crops"], output_names=["out"],
                          dynamic_axes={"crops": {0: "n"}, "out": {0: "n"}}, opset_version=18, dynamo=False)
        expected = backbone(probe).numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = int(threads), 1
    session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
    runner = OrtBackbone(session, "crops")
    diff = float(np.abs(runner(probe).numpy() - expected).max())
    if not diff <= PARITY_TOLERANCE:
        name = getattr(backbone, "name", type(backbone).__name__)
        raise ExportParityError(f"ONNX backbone of {name} differs from torch by {diff:.3g} (> {PARITY_TOLERANCE}); "
                                "evaluate with eval.backbone=torch")
    backbone.forward = runner  # nn.Module.__call__ dispatches to the instance attribute
    log.info("backbone crops run in ONNX Runtime (%d thread(s)); parity check max abs diff %.2g", threads, diff)
    return runner


@contextlib.contextmanager
def onnx_backbone(s2_encoder: nn.Module, threads: int = 1) -> Iterator[OrtBackbone | None]:
    """`use_onnx_backbone` for the duration of a block (e.g. one feature extraction), then the torch backbone again."""
    runner = use_onnx_backbone(s2_encoder, threads)
    try:
        yield runner
    finally:
        if runner is not None:
            del s2_encoder.encoder.forward  # the instance attribute set above; the module's own forward is back
