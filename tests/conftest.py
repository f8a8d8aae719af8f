"""Suite-wide settings: headless MuJoCo rendering must be chosen before anything imports mujoco."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")


import pytest  # noqa: E402


@pytest.fixture
def one_torch_thread():
    """torch.set_num_threads(1) for one test, restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
