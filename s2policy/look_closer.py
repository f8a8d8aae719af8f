"""Look-closer: scale-selective S2. The base scale sees the whole frame; only `k` native-size crops of the higher
scale are encoded, placed per frame by a selector, so the cost is (base crops + k) backbone passes instead of S2's
(base crops + every tile).

    enc = LookCloserEncoder(build_encoder("efficientnet_lite0"), img_sizes=[224, 448], selector="gripper", crops=1,
                            camera_models={"agentview": env.camera_model("agentview")})
    out = enc.features(frames, points=eef_xyz, camera="agentview")  # base (B, C), crops (B, k, C), boxes (B, k, 4)
    emb = enc.embed(frames, points=eef_xyz, camera="agentview")     # (B, C * (1 + k) + 4k): what pooled heads read

Selectors (where the crops go):
- `gripper`: crop 1 is centred on the end-effector, projected with the camera's intrinsics and extrinsics; any further
  crops go where `saliency` points, outside the crops already placed.
- `saliency` (image only, no robot state): the base-scale feature cells that differ most from the frame's mean
  feature, greedily, each next crop outside the windows already chosen (docs/s2.md argues the design).
- `tiles`: every tile of the higher scale's grid -- plain S2's second scale, kept as the equivalence check.

Crops are windows of the upscaled frame centred on the selected point and clamped to the frame. Placement is
made of tensor ops (projection, rounding, clamping, gather), so it is traced into exported graphs.

State that selectors need (the end-effector position) is read by `selector_points` from an observation-like mapping:
a demo's stored `obs` group during feature extraction, the live observation in evaluation and the robot loop.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .camera_model import CameraModel, load_calibration
from .errors import ConfigError
from .s2 import ScalePlan, _call_in_chunks, _tokens_to_map, merge_crops, resize_image, split_into_crops
from .s2_encoder import S2Encoder

SELECTORS = ("gripper", "saliency", "tiles")
# s2.* config keys that belong to look-closer (read in `LookCloserOptions.from_s2`, declared in configs/config.yaml).
LOOK_CLOSER_KEYS = ("selector", "crops", "point_key", "point_index", "calibration", "camera_models")


@dataclass(frozen=True)
class LookCloserOptions:
    """The look-closer part of the `s2` config group, checked. `camera_models` is filled in by
    `resolve_camera_models` (from the task's simulator or the calibration file) and stored in checkpoints."""

    selector: str
    crops: int | None = None
    point_key: str = "proprio"
    point_index: int = 0
    calibration: str | None = None
    camera_models: Mapping[str, Mapping[str, Any]] | None = None

    def __post_init__(self) -> None:
        if self.selector not in SELECTORS:
            raise ConfigError(f"s2.selector={self.selector!r}: expected one of {list(SELECTORS)} (or null: plain S2)")
        if self.crops is not None and (not isinstance(self.crops, int) or isinstance(self.crops, bool)
                                       or self.crops < 1):
            raise ConfigError(f"s2.crops={self.crops!r}: look-closer needs at least one crop (k >= 1); "
                              "for no high-resolution view at all, use a single scale (s2.scales=[1]) instead")
        if not isinstance(self.point_index, int) or self.point_index < 0:
            raise ConfigError(f"s2.point_index={self.point_index!r}: expected a non-negative int")

    @property
    def needs_points(self) -> bool:
        return self.selector == "gripper"

    @classmethod
    def from_s2(cls, s2: Mapping[str, Any] | None) -> LookCloserOptions | None:
        """Look-closer options of an `s2` config dict; None when `s2.selector` is unset (plain S2)."""
        s2 = s2 or {}
        if s2.get("selector") is None:
            stray = sorted(k for k in LOOK_CLOSER_KEYS if k not in ("point_key", "point_index")
                           and s2.get(k) is not None)
            if stray:
                raise ConfigError(f"s2 options {stray} only apply to look-closer: set s2.selector as well")
            return None
        return cls(**{k: s2[k] for k in LOOK_CLOSER_KEYS if s2.get(k) is not None})


def split_s2_options(s2: Mapping[str, Any]) -> tuple[dict[str, Any], LookCloserOptions | None]:
    """(S2Encoder keyword arguments, look-closer options or None) of an `s2` config dict."""
    options = LookCloserOptions.from_s2(s2)
    return {k: v for k, v in s2.items() if k not in LOOK_CLOSER_KEYS}, options


# --- camera models ---------------------------------------------------------------------------------------------------
def resolve_camera_models(s2: Mapping[str, Any], task: Mapping[str, Any]) -> dict[str, Any]:
    """`s2` with `camera_models` filled in when the selector needs them, before any expensive work.

    Source, in order: models already present (a checkpoint's), `s2.calibration` (a real robot's calibration file),
    the task's simulator (`env.camera_model`). Raises ConfigError naming the camera when none provides one.
    """
    options = LookCloserOptions.from_s2(s2)
    cameras = list(task.get("cameras") or [])
    if options is None or not options.needs_points or not cameras:
        return dict(s2)
    models = dict(options.camera_models or {})
    if options.calibration is not None:
        models.update({c: m.to_dict() for c, m in load_calibration(options.calibration).items() if c in cameras})
    missing = [c for c in cameras if c not in models]
    if missing:
        models.update(_simulated_camera_models(task, missing, options))
    return {**s2, "camera_models": {c: models[c] for c in cameras}}


def _simulated_camera_models(task: Mapping[str, Any], cameras: list[str], options: LookCloserOptions):
    name = task.get("name")
    where = (f"s2.selector={options.selector} projects the end-effector into camera(s) {cameras}, which needs "
             "their intrinsics and extrinsics")
    try:
        import envs
    except ImportError as e:
        raise ConfigError(f"{where}; give s2.calibration=<file> (the simulator is not installed: {e})") from e
    if name not in envs.TASKS:
        raise ConfigError(f"{where}: task {name!r} is not a simulated task and s2.calibration names no file for "
                          f"them; write a calibration record (docs/s2.md#camera-calibration)")
    unknown = [c for c in cameras if c not in envs.get_task(name).cameras]
    if unknown:
        raise ConfigError(f"{where}: task {name!r} has no camera(s) {unknown} "
                          f"(cameras: {list(envs.get_task(name).cameras)})")
    size = task.get("camera_size") or 224  # only the aspect ratio matters: intrinsics rescale with the frame
    env = envs.make_env(name, cameras=[], camera_size=size, seed=0)
    try:
        env.reset(seed=0)
        return {c: env.camera_model(c).to_dict() for c in cameras}
    finally:
        env.close()


# --- the state selectors read ---------------------------------------------------------------------------------------
def needs_points(encoder: Any) -> bool:
    """Whether `encoder`'s selector reads robot state (the end-effector position)."""
    options = getattr(encoder, "look_closer", None)
    return options is not None and options.needs_points


def selector_points(encoder: Any, source: Mapping[str, Any] | Sequence[Mapping[str, Any]],
                    device: torch.device | str = "cpu") -> torch.Tensor | None:
    """End-effector positions (N, 3) float32 for `encoder`'s selector, or None when it needs no robot state.

    `source`: one observation-like mapping whose `point_key` holds (N, D) or (D,) values -- a demo's stored obs
    group, a batched observation -- or a list of per-environment observations. The one place that reads it, for
    feature extraction, training without a cache, evaluation, the robot loop and export.
    """
    if not needs_points(encoder):
        return None
    return read_points(source, encoder.look_closer.point_key, encoder.look_closer.point_index, device)


def read_points(source: Mapping[str, Any] | Sequence[Mapping[str, Any]], key: str, i: int,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """`source[key][..., i:i + 3]` as float32 (N, 3) (see `selector_points`; exported policies call this directly)."""
    items = list(source) if isinstance(source, Sequence) else [source]
    if any(key not in item for item in items):
        raise ConfigError(f"the look-closer gripper selector reads the end-effector position from observation key "
                          f"{key!r} (s2.point_key), which is missing (keys: {sorted(items[0]) if items else []})")
    values = [np.asarray(item[key], dtype=np.float32) for item in items]
    arr = np.stack(values) if isinstance(source, Sequence) else values[0]
    arr = arr.reshape(1, -1) if arr.ndim == 1 else arr.reshape(arr.shape[0], -1)
    if arr.shape[1] < i + 3:
        raise ConfigError(f"observation key {key!r} has {arr.shape[1]} values; s2.point_index={i} needs x, y, z at "
                          f"{i}..{i + 2}")
    return torch.as_tensor(np.ascontiguousarray(arr[:, i:i + 3]), device=device)


def points_fingerprint(encoder: Any, obs_groups: Sequence[Mapping[str, Any]]) -> str | None:
    """sha256 of the selector inputs of every demo (they change the features, so caches key on them)."""
    if not needs_points(encoder):
        return None
    h = hashlib.sha256()
    for obs in obs_groups:
        h.update(selector_points(encoder, obs).numpy().tobytes())
    return h.hexdigest()


# --- crop placement -------------------------------------------------------------------------------------------------
def crop_corners(centres: torch.Tensor, image_hw: tuple[int, int], crop: int) -> torch.Tensor:
    """Normalised (x, y) centres (B, k, 2) -> integer top-left corners (B, k, 2) as (row, col) of `crop`-px windows
    in an image of `image_hw`, clamped so every window lies inside the image. Non-finite centres -> the middle."""
    h, w = int(image_hw[0]), int(image_hw[1])
    if crop > h or crop > w:
        raise ConfigError(f"crops of {crop} px are larger than the {h}x{w} image they are cut from")
    centres = torch.where(torch.isfinite(centres), centres, torch.full_like(centres, 0.5))
    col = torch.round(centres[..., 0] * w - crop / 2).clamp(0, w - crop)
    row = torch.round(centres[..., 1] * h - crop / 2).clamp(0, h - crop)
    return torch.stack([row, col], dim=-1).long()


def cut_crops(image: torch.Tensor, corners: torch.Tensor, crop: int) -> torch.Tensor:
    """(B, C, H, W) and corners (B, k, 2) -> crops (B * k, C, crop, crop), frame-major (crop j of frame b at
    b * k + j). Two gathers (rows, then columns): exportable to ONNX and TorchScript."""
    b, c, h, w = image.shape
    k = corners.shape[1]
    offsets = torch.arange(crop, device=image.device)
    rows = (corners[..., 0:1] + offsets).reshape(b, k, 1, crop, 1).expand(b, k, c, crop, w)
    cols = (corners[..., 1:2] + offsets).reshape(b, k, 1, 1, crop).expand(b, k, c, crop, crop)
    strips = image.unsqueeze(1).expand(b, k, c, h, w).gather(3, rows)
    return strips.gather(4, cols).reshape(b * k, c, crop, crop)


# Input pixels kept around an upsampled crop's source region: bicubic reads 2 pixels either side of a sample point,
# plus one for the rounding of the crop's start to whole input pixels.
_BICUBIC_MARGIN = 3


def crops_of_scale(frames: torch.Tensor, corners: torch.Tensor, plan: ScalePlan,
                   antialias: bool = True) -> torch.Tensor:
    """Crops (B * k, C, crop, crop) of the frames resized to `plan.size`, at `corners` (B, k, 2) in that size.

    When the scale is a whole multiple m >= 2 of the frame, only each crop's source region (crop / m + 6 pixels a
    side) is upsampled instead of the whole frame: the same bicubic taps and weights (equal up to float rounding of
    the sample positions, ~1e-6), at about a quarter of the resize cost per crop. Otherwise the whole frame is
    resized once and cut.
    """
    b, _, h, w = frames.shape
    m = plan.size[0] // h
    region = plan.crop // m + 2 * _BICUBIC_MARGIN if m >= 2 else 0
    if m < 2 or plan.size != (m * h, m * w) or plan.crop % m or region > min(h, w):
        return cut_crops(resize_image(frames, plan.size, antialias), corners, plan.crop)
    k = corners.shape[1]
    starts = (torch.div(corners, m, rounding_mode="floor") - _BICUBIC_MARGIN).clamp(min=0)
    starts = torch.minimum(starts, torch.tensor([h - region, w - region], device=corners.device))
    upsampled = resize_image(cut_crops(frames, starts, region), (m * region, m * region), antialias)
    return cut_crops(upsampled, (corners - m * starts).reshape(b * k, 1, 2), plan.crop)


def corners_to_boxes(corners: torch.Tensor, image_hw: tuple[int, int], crop: int) -> torch.Tensor:
    """Top-left corners (B, k, 2) -> normalised boxes (B, k, 4) as (x0, y0, x1, y1) in [0, 1]."""
    h, w = image_hw
    x0, y0 = corners[..., 1].float() / w, corners[..., 0].float() / h
    return torch.stack([x0, y0, x0 + crop / w, y0 + crop / h], dim=-1)


def saliency_centres(fmap: torch.Tensor, k: int, window: tuple[float, float],
                     taken: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy centres (B, k, 2) of the most distinctive cells of a feature map (B, C, h, w).

    Score of a cell = L2 distance of its feature from the frame's mean feature (a table or a wall is uniform; the
    gripper and the objects stand out). After each pick, cells whose centres fall inside the chosen window (size
    `window` = (width, height) in normalised units) are excluded, and so are cells inside `taken` centres' windows.
    """
    h, w = fmap.shape[-2:]
    f = fmap.float()
    score = (f - f.mean(dim=(2, 3), keepdim=True)).pow(2).sum(dim=1).flatten(1)  # (B, h*w)
    ys = (torch.arange(h, device=f.device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=f.device, dtype=torch.float32) + 0.5) / w
    cell = torch.stack([xs.repeat(h), ys.repeat_interleave(w)], dim=-1)  # (h*w, 2) as (x, y)
    half = torch.tensor(window, device=f.device, dtype=torch.float32) / 2
    excluded = torch.full_like(score, float("-inf"))

    def suppress(score: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:  # centre (B, 2)
        inside = ((cell[None] - centre[:, None]).abs() < half).all(dim=-1)
        return torch.where(inside, excluded, score)

    for j in range(0 if taken is None else taken.shape[1]):
        score = suppress(score, taken[:, j])
    centres = []
    for _ in range(k):
        centre = cell[score.argmax(dim=1)]
        centres.append(centre)
        score = suppress(score, centre)
    return torch.stack(centres, dim=1)


# --- the encoder ----------------------------------------------------------------------------------------------------
@dataclass
class LookCloserFeatures:
    """base (B, C): the base scale's pooled embedding; crops (B, k, C): one pooled embedding per crop;
    boxes (B, k, 4): each crop's window (x0, y0, x1, y1) in normalised frame coordinates; crop_maps
    (B, k, C, g, g) spatial features per crop (CNN maps / ViT patch tokens as a grid)."""

    base: torch.Tensor
    crops: torch.Tensor
    boxes: torch.Tensor
    crop_maps: torch.Tensor

    def flat(self) -> torch.Tensor:
        """(B, C * (1 + k) + 4k): base, every crop in order, every box in order."""
        b = self.base.shape[0]
        return torch.cat([self.base, self.crops.reshape(b, -1), self.boxes.reshape(b, -1)], dim=1)


class LookCloserEncoder(S2Encoder):
    """`S2Encoder` whose second scale is seen only through `crops` selected crops.

    Args (besides S2Encoder's; scales / img_sizes must name exactly two scales, base first):
        selector: "gripper" | "saliency" | "tiles" (see the module docstring).
        crops: k, crops of the second scale per frame; default 1 (tiles: every tile of a square frame's grid).
        point_key, point_index: where `selector_points` finds the end-effector's x, y, z (gripper).
        camera_models: {camera: CameraModel or its dict} (gripper), in the frame the points are given in.
        calibration: a calibration file, read when `camera_models` is not given (its path is not part of the
            identity; the models it holds are).

    `embed(frames, points=None, camera=None)` -> (B, out_dim); `features(...)` -> LookCloserFeatures.
    """

    def __init__(self, encoder: torch.nn.Module, *, selector: str, crops: int | None = None,
                 point_key: str = "proprio", point_index: int = 0,
                 camera_models: Mapping[str, Any] | None = None, calibration: str | None = None,
                 **s2_kwargs: Any) -> None:
        s2_kwargs.setdefault("scales", (1, 2))
        super().__init__(encoder, **s2_kwargs)
        if not camera_models and calibration is not None:
            camera_models = load_calibration(calibration)
        models = {c: (m.to_dict() if isinstance(m, CameraModel) else dict(m)) for c, m in (camera_models or {}).items()}
        self.look_closer = LookCloserOptions(selector, crops, point_key, point_index, calibration, models or None)
        if len(self.img_sizes) != 2 or self.img_sizes[1] <= self.img_sizes[0]:
            raise ConfigError(f"look-closer needs two scales, the base and a larger one for the crops (a "
                              f"{self.native_size} px crop of a scale no larger than the base covers the whole frame "
                              f"there); got image sizes {self.img_sizes}")
        native = self.native_size
        self.grid_side = self.img_sizes[1] // native
        tiles = self.grid_side ** 2
        if selector == "tiles" and crops not in (None, tiles):
            raise ConfigError(f"s2.selector=tiles encodes all {tiles} tiles of the {self.img_sizes[1]} px scale; "
                              f"s2.crops={crops} (leave it null)")
        self.k = tiles if selector == "tiles" else (crops or 1)
        if selector != "tiles" and self.k >= tiles:
            raise ConfigError(f"s2.crops={self.k}: the {self.img_sizes[1]} px scale has only {tiles} tiles, so "
                              f"{self.k} selected crops cost as much as plain S2 (s2.selector=null) or more")
        self.camera_models = {c: CameraModel.from_dict(m, f"s2.camera_models[{c!r}]") for c, m in models.items()}
        if selector == "gripper" and not self.camera_models:
            raise ConfigError("s2.selector=gripper projects the end-effector into the image and needs a camera "
                              "model: none was given (the task provides none and s2.calibration is unset)")

    # --- identity and cost ---------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        cfg = super().config()
        o = self.look_closer
        cfg["look_closer"] = {"selector": o.selector, "crops": self.k,
                              "point": [o.point_key, o.point_index] if o.needs_points else None,
                              "camera_models": {c: m.to_dict() for c, m in sorted(self.camera_models.items())}
                              if o.needs_points else None}
        return cfg

    @property
    def out_dim(self) -> int:
        """Channels of `embed`: embed_dim x (1 + k) + 4 k (the crop boxes)."""
        return int(self.encoder.embed_dim) * (1 + self.k) + 4 * self.k

    def crops_per_frame(self, frame_size: tuple[int, int] | None = None) -> int:
        """Backbone passes per frame: the base scale's crops + k."""
        frame_size = frame_size or (self.img_sizes[0],) * 2
        return self.plan(frame_size)[0].num_crops + self.k

    def summary(self) -> dict[str, Any]:
        """What reports show: selector, k and the crops' scale."""
        return {"selector": self.look_closer.selector, "crops": self.k, "crop_scale_px": self.img_sizes[1]}

    # --- forward -------------------------------------------------------------------------------------------------
    def _crop_plan(self, frame_hw: tuple[int, int]) -> ScalePlan:
        plan = self.plan(frame_hw)[1]
        if plan.num_crops <= 1:
            raise ConfigError(f"a {self.native_size} px crop covers the whole {plan.size[0]}x{plan.size[1]} image of "
                              f"scale {self.img_sizes[1]}: there is nothing to look closer at")
        if self.look_closer.selector == "tiles" and plan.num_crops != self.k:
            raise ConfigError(f"s2.selector=tiles on {frame_hw[0]}x{frame_hw[1]} frames gives a {plan.grid} grid, "
                              f"not the {self.grid_side}x{self.grid_side} this encoder was built for (square frames)")
        return plan

    @property
    def _reads_base_map(self) -> bool:
        """Whether crop placement needs the base pass's feature map (saliency, and gripper's crops after the first).
        When it does not, the base crops and the selected crops share one stream of backbone calls."""
        return self.look_closer.selector == "saliency" or (self.look_closer.selector == "gripper" and self.k > 1)

    def _centres(self, base_map: torch.Tensor | None, b: int, device: torch.device, plan: ScalePlan,
                 frame_hw: tuple[int, int], points: torch.Tensor | None, camera: str | None) -> torch.Tensor:
        """Normalised (x, y) crop centres (B, k, 2); `base_map` (B, C, h, w) only when `_reads_base_map`."""
        window = (plan.crop / plan.size[1], plan.crop / plan.size[0])
        selector = self.look_closer.selector
        if selector == "tiles":
            nh, nw = plan.grid
            ys = (torch.arange(nh, dtype=torch.float32) + 0.5) / nh
            xs = (torch.arange(nw, dtype=torch.float32) + 0.5) / nw
            grid = torch.stack([xs.repeat(nh), ys.repeat_interleave(nw)], dim=-1)  # tile-major, as S2
            return grid.to(device).expand(b, -1, -1)
        if selector == "saliency":
            return saliency_centres(base_map, self.k, window)
        if points is None:
            raise ConfigError("s2.selector=gripper needs the end-effector position (points=(B, 3); "
                              "see selector_points)")
        if points.shape != (b, 3):
            raise ValueError(f"points must be (B, 3) = ({b}, 3) end-effector positions, got {tuple(points.shape)}")
        model = self._camera_model(camera).for_frame(frame_hw)
        uv, depth = model.project(points.to(device))
        uv = torch.where((depth > 0)[:, None], uv, torch.full_like(uv, 0.5))  # behind the camera: look at the middle
        centres = uv[:, None]
        if self.k > 1:
            centres = torch.cat([centres, saliency_centres(base_map, self.k - 1, window, taken=centres)], dim=1)
        return centres

    def _camera_model(self, camera: str | None) -> CameraModel:
        if camera is None and len(self.camera_models) == 1:
            return next(iter(self.camera_models.values()))
        if camera not in self.camera_models:
            raise ConfigError(f"no camera model for camera {camera!r}; this encoder has {sorted(self.camera_models)}")
        return self.camera_models[camera]

    def _pooled_map(self, out: torch.Tensor) -> torch.Tensor:
        """Raw crop outputs (n, ...) -> spatial maps (n, C, g, g)."""
        if self.encoder.output_shape == "bchw":
            return out
        return _tokens_to_map(out, int(self.encoder.num_prefix_tokens))[0]

    def features(self, frames: torch.Tensor, points: torch.Tensor | None = None,
                 camera: str | None = None) -> LookCloserFeatures:
        """(B, 3, H, W) in [0, 1] (+ points (B, 3) for gripper) -> LookCloserFeatures. Deterministic."""
        self._check(frames)
        frame_hw = (int(frames.shape[-2]), int(frames.shape[-1]))
        base_plan = self.plan(frame_hw)[0]
        crop_plan = self._crop_plan(frame_hw)
        chunk = self._chunk_size(frames.device)
        b = frames.shape[0]
        with torch.inference_mode():
            base_image = resize_image(frames, base_plan.size, self.antialias)
            base_crops = split_into_crops(base_image, base_plan.grid, self.channels_last)

            def cut(base_map: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
                centres = self._centres(base_map, b, frames.device, crop_plan, frame_hw, points, camera)
                corners = crop_corners(centres, crop_plan.size, crop_plan.crop)
                crops = crops_of_scale(frames, corners, crop_plan, self.antialias)
                return (crops.contiguous(memory_format=torch.channels_last) if self.channels_last else crops), corners

            if self._reads_base_map:
                base_out = _call_in_chunks(self.encoder, base_crops, chunk)
                crops, corners = cut(merge_crops(self._pooled_map(base_out), base_plan.grid))
                out = _call_in_chunks(self.encoder, crops, chunk)
            else:  # placement is known before any pass: base crops and selected crops share backbone calls
                crops, corners = cut(None)
                both = _call_in_chunks(self.encoder, torch.cat([base_crops, crops]), chunk)
                base_out, out = both.split([base_crops.shape[0], crops.shape[0]])
            base = self._pool_crop(base_out).reshape(base_plan.num_crops, b, -1).mean(dim=0)
            pooled = self._pool_crop(out).reshape(b, self.k, -1)
            maps = self._pooled_map(out)
            result = LookCloserFeatures(base, pooled, corners_to_boxes(corners, crop_plan.size, crop_plan.crop),
                                        maps.reshape(b, self.k, *maps.shape[1:]))
        return LookCloserFeatures(*(t.clone() for t in (result.base, result.crops, result.boxes, result.crop_maps)))

    def embed(self, frames: torch.Tensor, points: torch.Tensor | None = None,
              camera: str | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, embed_dim * (1 + k) + 4 k): see `LookCloserFeatures.flat`."""
        return self.features(frames, points, camera).flat()

    def feature_map(self, frames: torch.Tensor) -> torch.Tensor:
        raise ConfigError("look-closer features have no single merged map (the crops sit at selected places): "
                          "use features() for per-crop maps; features.store_maps=true is not supported with "
                          "s2.selector yet")

    def forward(self, frames: torch.Tensor, points: torch.Tensor | None = None,
                camera: str | None = None) -> torch.Tensor:
        return self.embed(frames, points, camera)


def embed_frames(encoder: Any, frames: torch.Tensor, camera: str | None = None,
                 points: torch.Tensor | None = None) -> torch.Tensor:
    """`encoder.embed` for plain S2 and look-closer encoders alike (only look-closer takes points and camera)."""
    if getattr(encoder, "look_closer", None) is None:
        return encoder.embed(frames)
    return encoder.embed(frames, points=points, camera=camera)


def look_closer_summary(encoder: Any) -> dict[str, Any] | None:
    """{selector, crops, crop_scale_px} of a look-closer encoder; None for plain S2 (evaluation summaries)."""
    return encoder.summary() if getattr(encoder, "look_closer", None) is not None else None


def write_calibration(models: Mapping[str, CameraModel], path: str | Path) -> Path:
    """Write a calibration file (e.g. from a simulated task's cameras, as a template for a real robot)."""
    from .camera_model import calibration_record
    from .fileio import atomic_write_text

    atomic_write_text(path, json.dumps(calibration_record(models), indent=1))
    return Path(path)
