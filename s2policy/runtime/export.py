"""Export a policy's image -> action computation for deployments without the training stack, with a parity check.

Two graphs, because history heads (the transformer) need the features of past steps:
    encoder: {<camera>: uint8 (1, H, W, 3)}, proprio float32 (1, P) -> features (1, F), proprio_norm (1, P)
    head:    features (1, T, F), proprio_norm (1, T, P), prev_actions (1, T, A) normalised -> actions (1, horizon, A)
T = the head's history. Frame sizes are fixed at export (S2's crop plan depends on them). `ExportedPolicy` runs the
pair with the same history and action-chunk execution as `Policy.act`; `export_policy` checks it against eager.

    python -m s2policy.runtime.export --checkpoint run/policy.safetensors --out exported/ --format onnx
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
import warnings
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, S2PolicyError
from ..features.frames import frames_to_tensor, image_key
from ..features.maps import camera_features
from ..fileio import atomic_path, atomic_write_text
from ..logs import log_to_stderr
from ..look_closer import needs_points, read_points
from ..policy import ChunkExecutor, Policy, uses_maps
from .cadence import StageTimes
from .robot import EPISODE_KEY

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("onnx", "torchscript")
MANIFEST = "export.json"
_OPSET = 18  # the first opset whose Resize has antialiasing (S2 shrinks large camera frames with it)


class ExportParityError(S2PolicyError):
    """The exported graphs' actions differ from the eager policy's by more than the tolerance."""


class EncoderGraph(nn.Module):
    """Frames of every camera + raw proprio -> concatenated S2 features (pooled, or maps for a spatial head) and
    normalised proprio (Policy's processing)."""

    def __init__(self, policy: Policy):
        super().__init__()
        self.cameras = list(policy.config.cameras)
        self.encoder = copy.deepcopy(policy.encoder)  # S2Encoder.plan casts traced sizes to ints itself
        self.proprio_norm = copy.deepcopy(policy.proprio_norm)
        self.maps = uses_maps(policy.config.head)  # spatial heads take the merged S2 maps, flattened
        self.takes_points = needs_points(self.encoder)  # look-closer gripper: crops are placed inside the graph

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        points = inputs[-1] if self.takes_points else None
        *frames, proprio = inputs[:-1] if self.takes_points else inputs
        feats = [proprio.new_zeros(proprio.shape[0], 0)]  # encoder=none: no cameras, zero-width features
        feats += [camera_features(self.encoder, frames_to_tensor(f), self.maps, c, points)
                  for c, f in zip(self.cameras, frames)]
        return torch.cat(feats, dim=-1), self.proprio_norm.normalize(proprio)


class HeadGraph(nn.Module):
    """Windows of normalised steps -> unnormalised action chunk predicted at the last step."""

    def __init__(self, policy: Policy):
        super().__init__()
        self.head = copy.deepcopy(policy.head)
        self.action_norm = copy.deepcopy(policy.action_norm)

    def forward(self, features: torch.Tensor, proprio: torch.Tensor, prev_actions: torch.Tensor) -> torch.Tensor:
        return self.action_norm.unnormalize(self.head(features, proprio, prev_actions)[:, -1])


@dataclass
class ExportManifest:
    """What a runtime needs besides the graphs (stored as export.json next to them)."""

    format: str
    cameras: list[str]
    frame_shapes: dict[str, list[int]]
    proprio_keys: list[str]
    proprio_dim: int
    action_dim: int
    feature_dim: int
    history: int
    horizon: int
    execution: str
    n_action_steps: int
    ensemble_decay: float
    action_mean: list[float]
    action_std: list[float]
    encoder_file: str
    head_file: str
    task: str | None = None
    parity_max_abs_diff: float | None = None
    points: list | None = None  # look-closer gripper: [obs key, index] of the end-effector x, y, z (an extra input)


def export_policy(policy: Policy, out_dir: str | Path, fmt: str = "onnx",
                  frame_shapes: Mapping[str, Sequence[int]] | None = None, parity_steps: int = 6,
                  atol: float = 1e-4, seed: int = 0) -> ExportManifest:
    """Write encoder + head graphs and export.json to `out_dir`, then check `parity_steps` actions of the exported
    policy against `policy.act` on random observations; raises ExportParityError beyond `atol`.

    frame_shapes: {camera: (H, W)} the deployed cameras deliver (default: the training camera size, square).
    """
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"export format {fmt!r}: expected one of {EXPORT_FORMATS}")
    cfg = policy.config
    default = None if cfg.camera_size is None else (cfg.camera_size, cfg.camera_size)
    given = dict(frame_shapes or {})
    missing = [c for c in cfg.cameras if c not in given and default is None]
    if missing:
        raise ConfigError(f"cameras {missing}: the checkpoint has no camera_size; pass frame_shapes={{camera: (H, W)}}")
    shapes = {c: [int(v) for v in given.get(c, default)] for c in cfg.cameras}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = policy.history
    enc_inputs = tuple(torch.zeros(1, *shapes[c], 3, dtype=torch.uint8) for c in cfg.cameras)
    enc_inputs += (torch.zeros(1, cfg.proprio_dim),)
    points = None
    if needs_points(policy.encoder):
        points = [policy.encoder.look_closer.point_key, policy.encoder.look_closer.point_index]
        enc_inputs += (torch.zeros(1, 3),)
    head_inputs = (torch.zeros(1, t, cfg.feature_dim), torch.zeros(1, t, cfg.proprio_dim),
                   torch.zeros(1, t, cfg.action_dim))
    suffix = ".onnx" if fmt == "onnx" else ".pt"
    enc_names = ([f"frames_{c}" for c in cfg.cameras] + ["proprio"] + (["points"] if points else []),
                 ["features", "proprio_norm"])
    head_names = (["features", "proprio_norm", "prev_actions"], ["actions"])
    started = time.perf_counter()
    # Graphs are built from CPU copies: the caller's policy keeps its device.
    _write_graph(EncoderGraph(policy).cpu().eval(), enc_inputs, out / f"encoder{suffix}", fmt, enc_names)
    _write_graph(HeadGraph(policy).cpu().eval(), head_inputs, out / f"head{suffix}", fmt, head_names)
    manifest = ExportManifest(
        format=fmt, cameras=list(cfg.cameras), frame_shapes=shapes, proprio_keys=list(cfg.proprio_keys),
        proprio_dim=cfg.proprio_dim, action_dim=cfg.action_dim, feature_dim=cfg.feature_dim, history=t,
        horizon=policy.horizon, execution=cfg.execution, n_action_steps=cfg.n_action_steps,
        ensemble_decay=cfg.ensemble_decay, action_mean=policy.action_norm.mean.tolist(),
        action_std=policy.action_norm.std.tolist(), encoder_file=f"encoder{suffix}", head_file=f"head{suffix}",
        task=cfg.task, points=points,
    )
    atomic_write_text(out / MANIFEST, json.dumps(asdict(manifest), indent=2))
    log.info("exported %s graphs to %s in %.1f s", fmt, out, time.perf_counter() - started)
    diff = check_parity(policy, ExportedPolicy.load(out), parity_steps, seed)
    manifest.parity_max_abs_diff = diff
    atomic_write_text(out / MANIFEST, json.dumps(asdict(manifest), indent=2))
    if not diff <= atol:
        raise ExportParityError(f"{out}: exported actions differ from eager by up to {diff:.3g} (> atol {atol:g})")
    log.info("export parity: max |exported - eager| = %.3g over %d steps", diff, parity_steps)
    return manifest


def _write_graph(module: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, fmt: str,
                 names: tuple[list[str], list[str]]) -> None:
    # Autograd stays on while tracing: with it off, nn.TransformerEncoderLayer takes a fused fast path that neither
    # exporter can translate (tracing records no gradients either way).
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # Shapes become constants while tracing, as intended: frame sizes are fixed in the exported graph.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(module, inputs, check_trace=False), str(tmp))
        else:
            _register_antialiased_resize()
            _register_area_resize()
            torch.onnx.export(module, inputs, str(tmp), input_names=names[0], output_names=names[1],
                              opset_version=_OPSET, dynamo=False)


def _register_antialiased_resize() -> None:
    """Teach the ONNX exporter torch's antialiased bicubic (it has no built-in mapping): ONNX Resize with
    antialias=1, cubic a=-0.5 and weights renormalised inside the image (exclude_outside=1), which is the same
    filter torch uses when it shrinks an image."""

    def symbolic(g: Any, x: Any, output_size: Any, align_corners: Any, *scale_factors: Any) -> Any:
        from torch.onnx import symbolic_helper

        size = symbolic_helper._maybe_get_const(output_size, "is")
        batch_channels = g.op("Slice", g.op("Shape", x), g.op("Constant", value_t=torch.tensor([0])),
                              g.op("Constant", value_t=torch.tensor([2])))
        sizes = g.op("Concat", batch_channels, g.op("Constant", value_t=torch.tensor(list(size), dtype=torch.int64)),
                     axis_i=0)
        empty = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
        return g.op("Resize", x, empty, empty, sizes, mode_s="cubic", antialias_i=1, cubic_coeff_a_f=-0.5,
                    coordinate_transformation_mode_s="half_pixel", exclude_outside_i=1)

    torch.onnx.register_custom_op_symbolic("aten::_upsample_bicubic2d_aa", symbolic, _OPSET)


def _register_area_resize() -> None:
    """Teach the ONNX exporter S2's merge of a coarse scale's map onto a finer grid (area interpolation =
    adaptive average pooling, which it only exports when shrinking): growing by a whole factor is block replication,
    i.e. nearest-neighbour Resize; shrinking by a whole factor is average pooling. Spatial heads on the largest
    scale's grid need the first."""

    def symbolic(g: Any, x: Any, output_size: Any) -> Any:
        from torch.onnx import symbolic_helper

        out = list(symbolic_helper._parse_arg(output_size, "is"))
        size = list(symbolic_helper._get_tensor_sizes(x)[2:])
        if all(o % i == 0 for o, i in zip(out, size)):
            batch_channels = g.op("Slice", g.op("Shape", x), g.op("Constant", value_t=torch.tensor([0])),
                                  g.op("Constant", value_t=torch.tensor([2])))
            sizes = g.op("Concat", batch_channels, g.op("Constant", value_t=torch.tensor(out, dtype=torch.int64)),
                         axis_i=0)
            empty = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
            return g.op("Resize", x, empty, empty, sizes, mode_s="nearest", nearest_mode_s="floor",
                        coordinate_transformation_mode_s="asymmetric")
        if all(i % o == 0 for o, i in zip(out, size)):
            k = [i // o for o, i in zip(out, size)]
            return g.op("AveragePool", x, kernel_shape_i=k, strides_i=k)
        raise ConfigError(f"cannot export S2's area resize of a {size} map to {out}: the grids of the scales must be "
                          "whole multiples of each other")

    torch.onnx.register_custom_op_symbolic("aten::adaptive_avg_pool2d", symbolic, _OPSET)


class ExportedPolicy:
    """An exported policy with `Policy.act`'s behaviour (history window, action chunks, reset on new episode), on
    onnxruntime or a TorchScript runtime. `act(observation)` -> float32 (A,). Frames must have the exported sizes.

    `last_times`: `encode` = the encoder graph, `head` = the head graph, `preprocess` = the rest.
    """

    def __init__(self, manifest: ExportManifest, encoder: Any, head: Any):
        self.manifest = manifest
        self._encoder, self._head = encoder, head
        self.action_dim = manifest.action_dim
        self._mean = np.asarray(manifest.action_mean, np.float32)
        self._std = np.asarray(manifest.action_std, np.float32)
        self.executor = ChunkExecutor(manifest.execution, manifest.n_action_steps, manifest.ensemble_decay,
                                      manifest.horizon)
        self.last_times = StageTimes()
        self._episode: Any = None
        self.reset()

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None) -> "ExportedPolicy":
        """Load a directory written by `export_policy`."""
        path = Path(path)
        try:
            manifest = ExportManifest(**json.loads((path / MANIFEST).read_text()))
        except (OSError, ValueError, TypeError) as e:
            from ..errors import CheckpointError

            raise CheckpointError(f"{path / MANIFEST}: not an s2policy export manifest: {e}") from e
        load = _onnx_runner if manifest.format == "onnx" else _torchscript_runner
        return cls(manifest, load(path / manifest.encoder_file, threads), load(path / manifest.head_file, threads))

    def reset(self) -> None:
        self._history: deque = deque(maxlen=self.manifest.history)
        self._prev_action = np.zeros((self.manifest.action_dim,), np.float32)
        self.executor.reset_all(1)

    def act(self, observation: Mapping[str, Any]) -> np.ndarray:
        m = self.manifest
        start = time.perf_counter()
        episode = observation.get(EPISODE_KEY)
        if episode is not None and episode != self._episode:
            if self._episode is not None:
                self.reset()
            self._episode = episode
        encode = head = 0.0
        needs = self.executor.needs_chunk(0)
        if needs or m.history > 1:  # history heads need every step's features, as in Policy.act
            t0 = time.perf_counter()
            feats, prop = self.encode(observation)
            encode = time.perf_counter() - t0
            self._history.append((feats, prop, self._prev_action))
        if needs:
            t0 = time.perf_counter()
            chunk = self.plan(self._history)
            head = time.perf_counter() - t0
            self.executor.add_chunk(0, chunk)
        action = np.asarray(self.executor.pop(0), np.float32)
        self._prev_action = self.normalize_action(action)
        total = time.perf_counter() - start
        self.last_times = StageTimes(preprocess=max(total - encode - head, 0.0), encode=encode, head=head)
        return action

    def encode(self, observation: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """One observation -> (features (F,), normalised proprio (P,)): the encoder graph."""
        m = self.manifest
        inputs = [self._frame(observation, c)[None] for c in m.cameras] + [self._proprio(observation)[None]]
        if m.points:  # look-closer gripper selector: the end-effector position places the crops in the graph
            inputs.append(read_points(observation, *m.points).numpy())
        feats, prop = self._encoder(inputs)
        return feats[0], prop[0]

    def plan(self, steps: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
        """The last steps [(features, normalised proprio, normalised previous action), ...] -> the chunk
        (horizon, A) predicted at the last one: the head graph (steps before the first repeat it, as in training)."""
        steps = list(steps)
        steps = [steps[0]] * (self.manifest.history - len(steps)) + steps
        window = [np.stack(x)[None].astype(np.float32) for x in zip(*steps)]
        (chunk,) = self._head(window)
        return chunk[0]

    def normalize_action(self, action: np.ndarray) -> np.ndarray:
        return ((action - self._mean) / self._std).astype(np.float32)

    def _frame(self, observation: Mapping[str, Any], camera: str) -> np.ndarray:
        key = next((k for k in (camera, image_key(camera)) if k in observation), None)
        if key is None:
            raise KeyError(f"observation has no frame for camera {camera!r} (keys: {sorted(observation)})")
        frame = np.ascontiguousarray(observation[key])
        expected = (*self.manifest.frame_shapes[camera], 3)
        if frame.dtype != np.uint8 or frame.shape != expected:
            raise ValueError(f"camera {camera!r}: the export takes uint8 frames of shape {expected}, got "
                             f"{frame.dtype} {frame.shape} (re-export with frame_shapes matching the camera)")
        return frame

    def _proprio(self, observation: Mapping[str, Any]) -> np.ndarray:
        parts = [np.asarray(observation[k], np.float32).reshape(-1) for k in self.manifest.proprio_keys]
        proprio = np.concatenate(parts)
        if proprio.shape != (self.manifest.proprio_dim,):
            raise ValueError(f"proprio has {proprio.size} values, the policy was trained on "
                             f"{self.manifest.proprio_dim}")
        return proprio


def _onnx_runner(path: Path, threads: int | None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda inputs: session.run(None, dict(zip(names, inputs)))


def _torchscript_runner(path: Path, threads: int | None) -> Any:
    module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            out = module(*(torch.from_numpy(np.ascontiguousarray(x)) for x in inputs))
        return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]

    return run


def check_parity(policy: Policy, exported: ExportedPolicy, steps: int = 6, seed: int = 0) -> float:
    """Max |exported - eager| over `steps` consecutive actions on random observations (both policies are reset
    before and after; the eager one runs on its own device and precision)."""
    rng = np.random.default_rng(seed)
    m = exported.manifest
    policy.reset()
    exported.reset()
    worst = 0.0
    for _ in range(steps):
        obs: dict[str, Any] = {c: rng.integers(0, 256, size=(*m.frame_shapes[c], 3), dtype=np.uint8) for c in m.cameras}
        obs[m.proprio_keys[0]] = rng.normal(size=m.proprio_dim).astype(np.float32)
        obs |= {k: np.zeros(0, np.float32) for k in m.proprio_keys[1:]}
        if m.points and m.points[0] not in obs:  # a look-closer point key that is not a proprio key
            obs[m.points[0]] = rng.normal(size=int(m.points[1]) + 3).astype(np.float32)
        worst = max(worst, float(np.max(np.abs(exported.act(obs) - policy.act(obs)))))
    policy.reset()
    exported.reset()
    return worst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m s2policy.runtime.export", description="export a policy checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="onnx")
    p.add_argument("--frame-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="camera frame size the deployment delivers (default: the training camera size)")
    p.add_argument("--atol", type=float, default=1e-4)
    args = p.parse_args(argv)
    log_to_stderr(logging.INFO, "%(levelname)s %(name)s: %(message)s")
    try:
        policy = Policy.load(args.checkpoint, device="cpu")
        shapes = {c: args.frame_size for c in policy.config.cameras} if args.frame_size else None
        manifest = export_policy(policy, args.out, args.format, frame_shapes=shapes, atol=args.atol)
    except S2PolicyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported {manifest.format} to {args.out}: parity max abs diff {manifest.parity_max_abs_diff:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
