"""Pinhole camera models: projecting world points (the end-effector) into camera frames.

One record format serves simulated and real cameras. A real robot's calibration is a JSON file:

    {"format": "s2policy.camera/1",
     "cameras": {"agentview": {"width": 640, "height": 480, "fx": 615.2, "fy": 615.0, "cx": 319.4, "cy": 241.7,
                               "camera_from_world": [[r11, r12, r13, tx], [r21, r22, r23, ty],
                                                     [r31, r32, r33, tz], [0, 0, 0, 1]]}}}

Conventions (OpenCV's, so a `cv2.calibrateCamera` / hand-eye result can be pasted in): the camera frame has x right,
y down, z forward (into the scene); pixel (u, v) = (column, row) of the *upright* image as the policy receives it,
with the centre of the top-left pixel at (0, 0); `camera_from_world` maps points from the frame in which the robot
reports its end-effector position (usually the robot base) to the camera frame, in metres.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConfigError

CALIBRATION_FORMAT = "s2policy.camera/1"
_FIELDS = ("width", "height", "fx", "fy", "cx", "cy", "camera_from_world")


@dataclass(frozen=True)
class CameraModel:
    """Intrinsics (pixels, OpenCV convention) and extrinsics (4x4 rigid `camera_from_world`, row-major)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    camera_from_world: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        m = np.asarray(self.camera_from_world, dtype=np.float64)
        problems = []
        if self.width <= 0 or self.height <= 0:
            problems.append(f"width/height {self.width}x{self.height} must be positive")
        if not all(math.isfinite(v) for v in (self.fx, self.fy, self.cx, self.cy)) or self.fx <= 0 or self.fy <= 0:
            problems.append(f"fx, fy must be positive and fx, fy, cx, cy finite (got {self.fx}, {self.fy}, "
                            f"{self.cx}, {self.cy})")
        if m.shape != (4, 4) or not np.isfinite(m).all():
            problems.append(f"camera_from_world must be a finite 4x4 matrix, got shape {m.shape}")
        else:
            rot = m[:3, :3]
            if not np.allclose(rot @ rot.T, np.eye(3), atol=1e-4) or np.linalg.det(rot) < 0:
                problems.append("the rotation block of camera_from_world is not a proper rotation (R R^T != I)")
            if not np.allclose(m[3], [0, 0, 0, 1]):
                problems.append(f"the last row of camera_from_world must be [0, 0, 0, 1], got {m[3].tolist()}")
        if problems:
            raise ConfigError("invalid camera model: " + "; ".join(problems))

    # --- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, record: Mapping[str, Any], where: str = "camera record") -> CameraModel:
        missing = [k for k in _FIELDS if k not in record]
        if missing:
            raise ConfigError(f"{where}: missing field(s) {missing}; a camera record has {list(_FIELDS)}")
        try:
            return cls(int(record["width"]), int(record["height"]), float(record["fx"]), float(record["fy"]),
                       float(record["cx"]), float(record["cy"]),
                       tuple(tuple(float(v) for v in row) for row in record["camera_from_world"]))
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: {e}") from e

    @classmethod
    def from_mujoco(cls, model: Any, data: Any, camera: str, frame_hw: tuple[int, int],
                    rotate_180: bool = False) -> CameraModel:
        """The model of a fixed MuJoCo camera rendered at `frame_hw` (H, W) (`data` after mj_forward).

        MuJoCo cameras look along their -z axis with +y up and square pixels; focal length = (H / 2) / tan(fovy / 2).
        `rotate_180`: the frames are turned by 180 degrees to make them upright (Meta-World's corner views).
        """
        cam = model.camera(camera).id
        if int(model.cam_bodyid[cam]) != 0:
            raise ConfigError(f"camera {camera!r} is mounted on a moving body: its pose changes every step, so no "
                              "fixed camera model describes it (use a fixed camera or the image-only selector)")
        if np.any(np.asarray(model.cam_sensorsize[cam]) > 0):
            raise ConfigError(f"camera {camera!r} defines sensorsize/focal intrinsics; only fovy cameras are supported")
        h, w = int(frame_hw[0]), int(frame_hw[1])
        f = 0.5 * h / math.tan(math.radians(float(model.cam_fovy[cam])) / 2)
        # MuJoCo camera axes (x right, y up, z backward) -> OpenCV's (x right, y down, z forward); a 180-degree turn
        # of the image flips x and y once more.
        flip = np.diag([-1.0, 1.0, -1.0]) if rotate_180 else np.diag([1.0, -1.0, -1.0])
        world_from_cam = np.asarray(data.cam_xmat[cam], dtype=np.float64).reshape(3, 3) @ flip
        m = np.eye(4)
        m[:3, :3] = world_from_cam.T
        m[:3, 3] = -world_from_cam.T @ np.asarray(data.cam_xpos[cam], dtype=np.float64)
        return cls(w, h, f, f, (w - 1) / 2, (h - 1) / 2, tuple(tuple(float(v) for v in row) for row in m))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["camera_from_world"] = [list(row) for row in self.camera_from_world]
        return d

    # --- use ---------------------------------------------------------------------------------------------------
    def for_frame(self, frame_hw: tuple[int, int]) -> CameraModel:
        """The same camera delivering frames of `frame_hw` (H, W): intrinsics scale with the image; the aspect
        ratio must be the calibrated one (a crop or a letterbox would need its own calibration)."""
        h, w = int(frame_hw[0]), int(frame_hw[1])
        if (h, w) == (self.height, self.width):
            return self
        if abs(h * self.width - w * self.height) > max(self.width, self.height) * 0.5:
            raise ConfigError(f"frames of {h}x{w} do not have the aspect ratio of the calibrated "
                              f"{self.height}x{self.width} camera; calibrate the camera at this resolution")
        sx, sy = w / self.width, h / self.height
        return CameraModel(w, h, self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
                           self.camera_from_world)

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World points (..., 3) -> (normalised image coordinates (..., 2) as (x, y) in [0, 1] inside the frame,
        depth (...,) along the optical axis; negative = behind the camera). Pure tensor ops (exportable)."""
        m = torch.tensor(self.camera_from_world, dtype=torch.float32, device=points.device)
        p = points.to(torch.float32) @ m[:3, :3].T + m[:3, 3]
        z = p[..., 2]
        safe_z = torch.where(z.abs() > 1e-6, z, torch.full_like(z, 1e-6))
        u = (self.fx * p[..., 0] / safe_z + self.cx + 0.5) / self.width
        v = (self.fy * p[..., 1] / safe_z + self.cy + 0.5) / self.height
        return torch.stack([u, v], dim=-1), z


def load_calibration(path: str | Path) -> dict[str, CameraModel]:
    """Read a calibration file (format in the module docstring) -> {camera name: CameraModel}."""
    path = Path(path)
    try:
        blob = json.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"camera calibration {path}: cannot read it ({e.strerror})") from e
    except ValueError as e:
        raise ConfigError(f"camera calibration {path}: not JSON ({e})") from e
    if not isinstance(blob, dict) or blob.get("format") != CALIBRATION_FORMAT:
        raise ConfigError(f"camera calibration {path}: expected "
                          f"{{'format': {CALIBRATION_FORMAT!r}, 'cameras': {{...}}}}")
    cameras = blob.get("cameras")
    if not isinstance(cameras, dict) or not cameras:
        raise ConfigError(f"camera calibration {path}: 'cameras' must map camera names to records")
    return {name: CameraModel.from_dict(rec, f"camera calibration {path}, camera {name!r}")
            for name, rec in cameras.items()}


def calibration_record(models: Mapping[str, CameraModel]) -> dict[str, Any]:
    """The JSON-able calibration file content for `models` (what `load_calibration` reads back)."""
    return {"format": CALIBRATION_FORMAT, "cameras": {name: m.to_dict() for name, m in models.items()}}
