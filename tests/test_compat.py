"""Compatibility with what earlier releases wrote: policy files (tests/compat/, made by make_compat_policies.py with
s2policy 0.1.0) load and act exactly as they did, feature-cache keys differ only by the format number, and the
published report regenerates byte for byte from results/."""

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


def test_provenance_of_a_first_release_policy_comes_from_its_training_state(tmp_path):
    """0.1.0 policy files do not record where they came from; evaluation then reads the training state beside them
    (the dataset and seed it was trained with), without importing the trainer."""
    import json
    import shutil

    import torch
    from safetensors.torch import save_file

    from s2policy.evaluate import read_checkpoint_info

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(COMPAT / "camera_free_mlp.safetensors", run / "policy.safetensors")
    (tmp_path / "demos.hdf5").write_bytes(b"")
    save_file({"step": torch.zeros(1)}, str(run / "checkpoints" / "last.safetensors"),
              metadata={"run_config": json.dumps({"seed": 1, "dataset": str(tmp_path / "demos.hdf5")})})
    info = read_checkpoint_info(run)
    assert info.config.provenance == {} and info.task == "lift"
    assert (info.train_seed, info.dataset) == (1, tmp_path / "demos.hdf5")
    assert info.config.encoder == "none" and info.config.cameras == []  # the 0.1.0 control, read as encoder=none


def test_feature_cache_keys_change_only_by_the_format_number(tmp_path, monkeypatch):
    """Every input of the cache key (dataset fingerprint, encoder identity, frames, dtype) hashes as 0.1.0 did; only
    the format number moved (2: one checksummed shard per demo), so a 0.1.0 cache is re-extracted once, never
    misread."""
    from s2policy import build_s2_encoder
    from s2policy.features import build_feature_cache
    from s2policy.features import cache as cache_module
    from s2policy.train.synthetic import write_synthetic_demos

    assert cache_module.CACHE_FORMAT == 2
    monkeypatch.setattr(cache_module, "CACHE_FORMAT", 1)
    dataset = write_synthetic_demos(tmp_path / "demos.hdf5", num_demos=3, length=8, image_size=32, seed=5)
    encoder = build_s2_encoder("tiny_cnn", "random", {"scales": [1, 2]})
    cache, _ = build_feature_cache(dataset, "agentview", encoder, camera_size=32, progress=False)
    cache.close()
    assert sorted(p.name for p in Path(str(dataset) + ".features").iterdir()) == EXPECTED["feature_caches"]


STUDY_V2_COMPARE = ["base_s2:base", "base_s2:larger", "base_spatial:base", "base_s2_spatial:base_s2",
                    "base_s2_spatial:base_spatial", "base_s2_spatial:larger", "look_closer_gripper:base",
                    "look_closer_gripper:larger", "look_closer_saliency:base", "look_closer_saliency:larger",
                    "larger:base", "privileged:base"]  # configs/study_v2.yaml's compare
#: every published report (docs/results.md) -> the report command's arguments that wrote it
PUBLISHED_REPORTS = {
    "docs/results": ["results/lift", "results/mw-hammer", "--title", "Lite0 vs Lite0 + S2 vs Lite2"],
    **{f"docs/results_v2/{variant}": [f"results/v2/{variant}", "--title", title, "--latency", "results/v2/latency.json",
                                      "--compare", *STUDY_V2_COMPARE]
       for variant, title in [("twin_m12", "mw-push-twin (mark_radius 0.012): scales, heads and look-closer"),
                              ("tiny_goal_r20", "mw-push-tiny-goal (goal_radius 0.02): scales, heads and look-closer")]},
}


@pytest.mark.parametrize("folder", sorted(PUBLISHED_REPORTS))
def test_published_report_regenerates_byte_for_byte(folder, tmp_path, monkeypatch):
    """The tables in docs/ are what the report command makes of the raw records in results/ (run from the repo)."""
    pytest.importorskip("matplotlib")
    from s2policy.report import main as report_main

    monkeypatch.chdir(REPO)
    assert report_main([*PUBLISHED_REPORTS[folder], "--out", str(tmp_path)]) == 0
    for name in ("report.md", "results.csv", "differences.csv", "stage_times.csv"):
        if (REPO / folder / name).exists() or (tmp_path / name).exists():
            assert (tmp_path / name).read_bytes() == (REPO / folder / name).read_bytes(), name


def test_tables_quoted_in_results_md_are_the_reports_rows():
    """docs/results.md quotes the per-task tables of the published reports; a quoted row (first cell a task of some
    report, a success or difference cell `**rate** [low, high]`) must be a row of a report verbatim, so the prose
    cannot drift from what the records say."""
    import re

    report_rows = {line for folder in PUBLISHED_REPORTS
                   for line in (REPO / folder / "report.md").read_text().splitlines() if line.startswith("| ")}
    tasks = {row.split("|")[1].strip() for row in report_rows} - {"Task", "---"}
    quoted = [line for line in (REPO / "docs" / "results.md").read_text().splitlines()
              if line.startswith("| ") and line.split("|")[1].strip() in tasks
              and re.search(r"\*\*[-+]?[\d.]+\*\* \[", line)]
    assert len(quoted) >= 10  # the first study's table at least
    assert [line for line in quoted if line not in report_rows] == []
