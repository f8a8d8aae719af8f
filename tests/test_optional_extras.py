"""The README's main job installs only `.[sim,export]`: nothing on its path may import an extra it does not list."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Modules of the extras the quickstart does not install, blocked as if absent (None in sys.modules makes `import`
# raise ImportError), then every module the study, training, feature extraction, ONNX backbone and evaluation import.
SCRIPT = """
import sys
for name in ("msgpack", "websockets", "ray", "pyarrow", "av"):
    sys.modules[name] = None
import s2policy.study, s2policy.train, s2policy.features, s2policy.evaluate, s2policy.report
import s2policy.runtime, s2policy.runtime.onnx_backbone, s2policy.runtime.export
from s2policy.runtime import protocol
try:
    protocol.pack({"type": "ping"})
except ImportError as e:
    print("serve:", e)
"""


@pytest.mark.subprocess
def test_the_quickstart_path_needs_no_serve_ray_or_lerobot_extra():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # the server's own protocol names the extra it needs
    assert "serve: the policy server protocol needs msgpack: pip install 's2policy[serve]'" in done.stdout
