"""Offscreen camera rendering shared by every suite, tuned for CPU software rendering.

MUJOCO_GL must be chosen before mujoco is first imported; envs/__init__.py calls `select_gl_backend` for that.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Iterable, Sequence

import numpy as np

from s2policy.errors import ConfigError

logger = logging.getLogger(__name__)

CameraSize = int | Sequence[int]


def select_gl_backend() -> None:
    """Default to EGL (works headless, CPU llvmpipe or GPU); a user's MUJOCO_GL (e.g. osmesa) wins."""
    if "MUJOCO_GL" not in os.environ and "mujoco" in sys.modules:
        logger.warning("mujoco was imported before envs without MUJOCO_GL set; it will use its default GL backend "
                       "(GLFW, which needs a display). Set MUJOCO_GL=egl or import envs first.")
    os.environ.setdefault("MUJOCO_GL", "egl")


def image_hw(camera_size: CameraSize) -> tuple[int, int]:
    """int -> square (H, W); (H, W) kept (non-square frames are allowed)."""
    if isinstance(camera_size, (int, np.integer)):
        return int(camera_size), int(camera_size)
    height, width = (int(v) for v in camera_size)
    return height, width


def tune_model_for_cpu(model) -> None:
    """Turn off the costly effects that dominate software rendering time (shadows, reflections, multisampling).

    The measured effect per task is in docs/envs.md.
    """
    model.light_castshadow[:] = 0
    model.mat_reflectance[:] = 0
    model.vis.quality.offsamples = 0


class CameraRenderer:
    """Renders named cameras of a live MjModel/MjData into upright uint8 (H, W, 3) images.

    rotate_180: cameras whose MJCF orientation makes frames come out upside down (Meta-World's corner views).
    hidden_geom_groups: geom groups not drawn (robosuite puts collision meshes in group 0).
    """

    def __init__(self, model, data, cameras: Sequence[str], camera_size: CameraSize, rotate_180: Iterable[str] = (),
                 hidden_geom_groups: Iterable[int] = ()):
        import mujoco

        names = {model.camera(i).name for i in range(model.ncam)}
        unknown = [c for c in cameras if c not in names]
        if unknown:
            raise ConfigError(f"unknown camera(s) {unknown}; this scene has {sorted(names)}")
        self.model, self.data = model, data
        self.cameras = list(cameras)
        self.height, self.width = image_hw(camera_size)
        # The offscreen framebuffer must be at least as large as the frames we ask for.
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        self.rotate_180 = set(rotate_180)
        self._scene_option = mujoco.MjvOption()
        for group in hidden_geom_groups:
            self._scene_option.geomgroup[group] = 0
        self._renderer = mujoco.Renderer(model, self.height, self.width) if self.cameras else None

    def render(self) -> dict[str, np.ndarray]:
        """camera name -> uint8 (H, W, 3) image of the current simulator state."""
        frames = {}
        for camera in self.cameras:
            self._renderer.update_scene(self.data, camera=camera, scene_option=self._scene_option)
            image = self._renderer.render()
            frames[camera] = np.ascontiguousarray(image[::-1, ::-1]) if camera in self.rotate_180 else image
        return frames

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
