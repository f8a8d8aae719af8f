"""Stages depend on each other only downstream: evaluation and the robot loop never import the trainer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.subprocess
@pytest.mark.parametrize("module", ["s2policy.evaluate", "s2policy.runtime", "s2policy.report"])
def test_downstream_stages_do_not_import_the_trainer(module):
    code = (f"import sys, {module}; bad = sorted(m for m in sys.modules if m.startswith('s2policy.train')); "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
