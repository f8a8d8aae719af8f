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


@pytest.fixture(autouse=True)
def _root_logging_restored():
    """Hydra's job logging (a CLI run in-process) adds a stderr StreamHandler and a FileHandler to the root logger
    and keeps them: by design for one run per process, but across tests the StreamHandler holds a captured stream
    that pytest has closed, and every later record logs a 'Logging error' traceback into the next test's output."""
    import logging

    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in before and not type(h).__module__.startswith("_pytest")]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
