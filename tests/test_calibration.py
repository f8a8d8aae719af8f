"""The calibration report: pooled rates, the gap's interval, the gate at its edges, task outcomes, files written."""

from __future__ import annotations

import json

import pytest

from s2policy.calibration import GATE_BASE, GATE_GAP, load_calibrations, main
from s2policy.evaluate.stats import difference_interval


def _record(folder, task, successes, episodes, final_objects=None):
    folder.mkdir(parents=True)
    summary = {"task": task, "eval": {"variation": {"cue_radius": 0.01}},
               "success": {"successes": successes, "episodes": episodes}}
    (folder / "summary.json").write_text(json.dumps(summary))
    objects = final_objects or [None] * episodes
    (folder / "episodes.json").write_text(json.dumps([{"final_object": o} for o in objects]))


def _cue_object(puck_x):  # the puck, the other goal (right), the correct goal (left)
    return [puck_x, 0.85, 0.02, 1, 0, 0, 0, 0.15, 0.85, 0.02, 0, 0, 0, 0, -0.15, 0.85, 0.02]


@pytest.mark.parametrize("base, privileged, passes", [
    (20, 33, True),    # base 40%, gap +26 points
    (20, 32, False),   # gap +24 points: too small
    (7, 30, False),    # base 14%: below the band
    (8, 30, True),     # base 16%, gap +44
    (38, 50, False),   # base 76%: above the band
])
def test_gate_and_gap(tmp_path, base, privileged, passes):
    _record(tmp_path / "v" / "base" / "seed0", "mw-push-cue", base, 50)
    _record(tmp_path / "v" / "privileged" / "seed0", "mw-push-cue", privileged, 50)
    (c,) = load_calibrations(tmp_path)
    assert c.passes is passes
    assert c.gap == pytest.approx((privileged - base) / 50)
    assert c.gap_interval == pytest.approx(difference_interval(privileged, 50, base, 50))
    assert GATE_GAP == 0.25 and GATE_BASE == (0.15, 0.75)


def test_pools_seeds_counts_outcomes_and_writes_report(tmp_path):
    root = tmp_path / "results"
    _record(root / "cue" / "base" / "seed0", "mw-push-cue", 1, 3, [_cue_object(x) for x in (-0.15, 0.0, 0.15)])
    _record(root / "cue" / "base" / "seed1", "mw-push-cue", 1, 2, [_cue_object(x) for x in (-0.14, 0.01)])
    _record(root / "cue" / "privileged" / "seed0", "mw-push-cue", 5, 5, [_cue_object(-0.15)] * 5)
    _record(root / "incomplete" / "base" / "seed0", "mw-push-cue", 1, 2)  # no privileged run yet: left out
    (c,) = load_calibrations(root)
    assert (c.base.successes, c.base.trials) == (2, 5)
    assert c.outcomes == {"base": {"correct_side": 2, "wrong_goal": 1},
                          "privileged": {"correct_side": 5, "wrong_goal": 0}}
    assert main(["report", str(root), "--out", str(tmp_path / "out")]) == 0
    table = (tmp_path / "out" / "calibration.md").read_text()
    assert "| `cue` | `mw-push-cue` | cue_radius=0.01 | 2/5 = 40% [" in table and "+60 [" in table
    assert "correct_side 2 / 5; wrong_goal 1 / 0" in table
    assert json.loads((tmp_path / "out" / "calibration.json").read_text())[0]["passes_gate"] is True
    assert (tmp_path / "out" / "calibration.png").stat().st_size > 1000
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")]) == 2
    assert not (tmp_path / "o2").exists()
