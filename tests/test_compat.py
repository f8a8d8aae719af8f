"""Compatibility with what earlier releases wrote: policy files (tests/compat/, made by make_compat_policies.py with
s2policy 0.1.0) load and act exactly as they did, feature caches keep their keys, and the published report
regenerates byte for byte from results/."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from s2policy.policy import Policy

REPO = Path(__file__).resolve().parents[1]
COMPAT = REPO / "tests" / "compat"
EXPECTED = json.loads((COMPAT / "expected_actions.json").read_text())


def _observation(raw: dict) -> dict:
    return {k: np.asarray(v, dtype=np.uint8 if k == "agentview" else np.float32) for k, v in raw.items()}


@pytest.mark.parametrize("name", sorted(EXPECTED["actions"]))
def test_policy_files_of_the_first_release_act_as_they_did(name):
    policy = Policy.load(COMPAT / f"{name}.safetensors", device="cpu")
    policy.reset()
    actions = np.stack([policy.act(_observation(o)) for o in EXPECTED["observations"]])
    np.testing.assert_allclose(actions, np.asarray(EXPECTED["actions"][name]), rtol=0, atol=1e-6)


def test_feature_cache_keys_are_unchanged(tmp_path):
    from s2policy import build_s2_encoder
    from s2policy.features import build_feature_cache
    from s2policy.train.synthetic import write_synthetic_demos

    dataset = write_synthetic_demos(tmp_path / "demos.hdf5", num_demos=3, length=8, image_size=32, seed=5)
    encoder = build_s2_encoder("tiny_cnn", "random", {"scales": [1, 2]})
    cache, _ = build_feature_cache(dataset, "agentview", encoder, camera_size=32, progress=False)
    cache.close()
    assert sorted(p.name for p in Path(str(dataset) + ".features").iterdir()) == EXPECTED["feature_caches"]


def test_published_report_regenerates_byte_for_byte(tmp_path):
    pytest.importorskip("matplotlib")
    from s2policy.report import main as report_main

    report_main([str(REPO / "results" / "lift"), str(REPO / "results" / "mw-hammer"), "--out", str(tmp_path),
                 "--title", "Lite0 vs Lite0 + S2 vs Lite2"])
    for name in ("report.md", "results.csv"):
        assert (tmp_path / name).read_bytes() == (REPO / "docs" / "results" / name).read_bytes(), name
