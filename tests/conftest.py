"""Suite-wide settings: headless MuJoCo rendering must be chosen before anything imports mujoco."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
