"""The comparison report: pooling over training seeds, the table, the CSV and the plot."""

from __future__ import annotations

import csv
import json

import pytest

from s2policy.evaluate import SUMMARY_FORMAT, wilson_interval
from s2policy.report import ReportError, main, write_report


def summary(encoder, img_sizes, seed, k, n, gmacs, sha=None, first_seed=1_000_000):
    """A minimal summary.json record of one evaluated run."""
    return {
        "format": SUMMARY_FORMAT, "task": "lift", "train_seed": seed, "checkpoint": f"runs/{encoder}_{seed}",
        "checkpoint_sha256": sha or f"{encoder}{img_sizes}{seed}",
        "policy": {"encoder": encoder, "weights": "pretrained", "img_sizes": img_sizes, "camera_size": [448, 448],
                   "cameras": ["agentview"], "head": "mlp", "proprio_keys": ["proprio"]},
        "cost": {"encoder_params": 3_400_000, "gmacs_per_frame": gmacs},
        "eval": {"first_seed": first_seed, "variation": {}},
        "success": {"successes": k, "episodes": n},
        "mean_length": 80.0,
        "speed": {"policy_ms_per_env_step": 12.0},
    }


def write_runs(root, runs):
    for i, s in enumerate(runs):
        folder = root / f"run{i}" / "eval"
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps(s))


def test_report_pools_seeds_per_configuration(tmp_path):
    write_runs(tmp_path / "runs", [
        summary("efficientnet_lite0", [224], 0, 20, 50, 0.4),
        summary("efficientnet_lite0", [224], 1, 30, 50, 0.4),
        summary("efficientnet_lite0", [224, 448], 0, 35, 50, 2.0),
        summary("efficientnet_lite2", [260], 0, 25, 50, 0.9),
        # the same checkpoint evaluated on the same seeds again: counted once
        summary("efficientnet_lite2", [260], 0, 25, 50, 0.9),
    ])
    out = write_report([tmp_path / "runs"], tmp_path / "report", title="Lift")
    rows = list(csv.DictReader(open(out["csv"])))
    assert [r["configuration"] for r in rows] == ["efficientnet_lite0 224px, mlp head",
                                                   "efficientnet_lite0 S2 224+448, mlp head",
                                                   "efficientnet_lite2 260px, mlp head"]
    base = rows[0]
    assert (base["successes"], base["episodes"], base["seeds"]) == ("50", "100", "2")
    assert float(base["ci_low"]) == pytest.approx(wilson_interval(50, 100)[0], abs=1e-4)
    assert base["per_seed"] == "0:20/50 1:30/50"
    assert rows[2]["episodes"] == "50"
    md = out["markdown"].read_text()
    assert "| lift | efficientnet_lite0 S2 224+448, mlp head |" in md and "**70.0** [" in md
    assert out["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_cli_and_errors(tmp_path, capsys):
    write_runs(tmp_path / "runs", [summary("tiny_cnn", [32, 64], 0, 1, 2, 0.001)])
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "rep")]) == 0
    assert "tiny_cnn S2 32+64" in capsys.readouterr().out
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text("{}")
    with pytest.raises(ReportError, match="not an s2policy evaluation summary"):
        write_report([tmp_path / "bad"], tmp_path / "rep2")
    with pytest.raises(ReportError, match="no summary.json"):
        write_report([tmp_path / "rep"], tmp_path / "rep3")
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "rep4")]) == 2


def test_camera_free_controls_are_labelled_by_their_inputs_and_drawn_as_bands(tmp_path):
    proprio = summary("efficientnet_lite0", [224], 0, 5, 50, 0.0)
    privileged = summary("efficientnet_lite0", [224], 0, 45, 50, 0.0)
    for s, keys in ((proprio, ["proprio"]), (privileged, ["proprio", "object"])):
        s["policy"].update(cameras=[], proprio_keys=keys)
        s["cost"]["encoder_params"] = 0
        s["checkpoint_sha256"] += "+".join(keys)
    write_runs(tmp_path / "runs", [summary("efficientnet_lite0", [224], 0, 20, 50, 0.4), proprio, privileged])
    out = write_report([tmp_path / "runs"], tmp_path / "report")
    rows = list(csv.DictReader(open(out["csv"])))
    assert [r["configuration"] for r in rows] == ["efficientnet_lite0 224px, mlp head", "no image: proprio, mlp head",
                                                   "no image: proprio+object, mlp head"]
    assert [r["successes"] for r in rows] == ["20", "5", "45"]
    assert out["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_head_and_spatial_grid_are_part_of_the_configuration(tmp_path):
    """Same encoder and scales with a pooled head and a spatial head on either S2 grid: three configurations."""
    runs = []
    for i, (head, grid) in enumerate([("mlp", 0), ("spatial", 0), ("spatial", -1), ("spatial", -1)]):
        s = summary("efficientnet_lite0", [224, 448], i, 10 + i, 50, 2.0, sha=f"run{i}")
        s["policy"].update(head=head, s2={"img_sizes": [224, 448], "resize_output_to_idx": grid})
        runs.append(s)
    write_runs(tmp_path / "runs", runs)
    rows = list(csv.DictReader(open(write_report([tmp_path / "runs"], tmp_path / "report")["csv"])))
    assert [(r["configuration"], r["runs"]) for r in rows] == [
        ("efficientnet_lite0 S2 224+448, mlp head", "1"),
        ("efficientnet_lite0 S2 224+448, spatial head (224 grid)", "1"),
        ("efficientnet_lite0 S2 224+448, spatial head (448 grid)", "2"),
    ]


def test_printed_result_line_names_the_inputs_of_a_camera_free_control():
    from s2policy.evaluate.cli import format_summary

    s = summary("efficientnet_lite0", [224], 0, 25, 50, 0.0)
    s["success"]["confidence"] = 0.95
    s["speed"]["steps_per_second"] = 55.0
    assert format_summary(s).startswith("lift efficientnet_lite0 img_sizes=[224]: success 50.0% (25/50")
    s["policy"].update(cameras=[], proprio_keys=["proprio", "object"])
    assert format_summary(s).startswith("lift no image, inputs proprio+object: success 50.0% (25/50")


def _arm_run(arm, seed, k, n=50, task="lift", encoder="efficientnet_lite0", img_sizes=(224,), gmacs=0.4):
    s = summary(encoder, list(img_sizes), seed, k, n, gmacs, sha=f"{task}{arm}{seed}")
    s["task"] = task
    s["checkpoint"] = f"studies/x/runs/{arm}/seed{seed}/policy.safetensors"
    return s


def test_differences_between_study_arms_with_newcombe_intervals(tmp_path):
    from s2policy.evaluate import difference_interval
    from s2policy.report import study_arm

    runs = [_arm_run("base", 1, 20), _arm_run("base", 2, 22),
            _arm_run("base_s2", 1, 40, img_sizes=(224, 448), gmacs=1.9),
            _arm_run("base_s2", 2, 41, img_sizes=(224, 448), gmacs=1.9)]
    assert [study_arm(r) for r in runs] == ["base", "base", "base_s2", "base_s2"]
    assert study_arm({"checkpoint": "outputs/lift_run/policy.safetensors"}) is None
    write_runs(tmp_path / "runs", runs)
    out = write_report([tmp_path / "runs"], tmp_path / "report", compare=[("base_s2", "base")],
                       latency={("lift", "base"): 30.0, ("lift", "base_s2"): 140.0})
    (row,) = list(csv.DictReader(open(out["differences"])))
    assert (row["a_successes"], row["a_episodes"], row["b_successes"], row["b_episodes"]) == ("81", "100", "42", "100")
    low, high = difference_interval(81, 100, 42, 100)
    assert float(row["difference"]) == pytest.approx(0.39) and float(row["ci_low"]) == pytest.approx(low, abs=1e-4)
    assert float(row["ci_high"]) == pytest.approx(high, abs=1e-4)
    # one comparison: the adjusted interval is the 95% one
    assert row["comparisons"] == "1" and (row["adjusted_low"], row["adjusted_high"]) == (row["ci_low"], row["ci_high"])
    md = out["markdown"].read_text()
    assert "| lift | base_s2 | base | 81/100 | 42/100 | **+39.0** [" in md
    assert "measured apart" in md and "| 140.0 |" in md  # the latency given, not the evaluations' 12 ms
    assert [r["policy_ms_per_step"] for r in csv.DictReader(open(out["csv"]))] == ["30.0", "140.0"]
    assert out["latency_plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_arm_and_bad_latency_file_are_refused_before_writing(tmp_path, capsys):
    write_runs(tmp_path / "runs", [_arm_run("base", 1, 20)])
    with pytest.raises(ReportError, match="no runs of study configuration 'larger'; found: base"):
        write_report([tmp_path / "runs"], tmp_path / "report", compare=[("base", "larger")])
    assert not (tmp_path / "report").exists()
    (tmp_path / "lat.json").write_text('{"results": [{"task": "lift"}]}')
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "r2"), "--latency", str(tmp_path / "lat.json")]) == 2
    assert "lat.json: not a policy latency record" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "runs"), "--out", str(tmp_path / "r3"), "--compare", "base"])
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()


def test_stage_wall_times_per_task_and_arm_from_the_study_stage_logs(tmp_path):
    for task in ("lift", "can"):
        write_runs(tmp_path / task, [_arm_run("base", 1, 20, task=task), _arm_run("base_s2", 1, 30, task=task)])
        (tmp_path / task / "stages.json").write_text(json.dumps({
            "collect": {"reused": True},
            "train base seed1": {"seconds": 600.0, "reused": True}, "eval base seed1": {"seconds": 300.0},
            "train base seed2": {"seconds": 60.0}, "eval base seed2": {"seconds": 240.0},
            "train base_s2 seed1": {"seconds": 1200.0}, "eval base_s2 seed1": {"seconds": 900.0},
            "report": {"seconds": 1.0}}))
    out = write_report([tmp_path / "lift", tmp_path / "can"], tmp_path / "report")
    md = out["markdown"].read_text()
    assert "| lift | base | 10.0, 1.0 | 5.0, 4.0 | 20 |" in md
    assert "| can | base_s2 | 20.0 | 15.0 | 35 |" in md
    assert "| lift | **all** | | | **0.9 h** |" in md  # (600 + 300 + 60 + 240 + 1200 + 900) s
    rows = list(csv.DictReader(open(out["stage_times"])))
    assert len(rows) == 12 and rows[0] == {"task": "lift", "configuration": "base", "stage": "train", "seed": "1",
                                           "seconds": "600.0"}
    (tmp_path / "lift" / "stages.json").write_text('{"train base seed1": {"seconds": "ten"}}')
    with pytest.raises(ReportError, match="lift/stages.json: not a study stage log"):
        write_report([tmp_path / "lift"], tmp_path / "report2")
    assert not (tmp_path / "report2").exists()


def test_task_outcomes_are_counted_from_the_episode_records(tmp_path):
    """mw-push-twin: an episode whose look-alike puck ended at the goal counts as wrong_puck_at_goal, pooled over
    seeds; the column and the CSV field appear only when a task defines outcomes."""
    from envs.detail_tasks import SUCCESS_RADIUS

    def final_object(second_at_goal: bool) -> list[float]:
        o = [0.0] * 18
        o[14:17] = [0.1, 0.8, 0.0]  # the goal
        o[7:10] = [0.1 + (0.5 if not second_at_goal else 0.5 * SUCCESS_RADIUS), 0.8, 0.0]  # the look-alike puck
        return o

    for seed, wrong in ((1, [True, False, False]), (2, [True, True, False])):
        run = _arm_run("base", seed, 1, n=3, task="mw-push-twin")
        folder = tmp_path / "runs" / f"base{seed}" / "eval"
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps(run))
        (folder / "episodes.json").write_text(json.dumps([{"index": i, "success": False, "final_object": final_object(w)}
                                                          for i, w in enumerate(wrong)]))
    out = write_report([tmp_path / "runs"], tmp_path / "report")
    assert "| Outcomes |" in out["markdown"].read_text()
    assert "| wrong_puck_at_goal 3/6 |" in out["markdown"].read_text()
    assert [r["outcomes"] for r in csv.DictReader(open(out["csv"]))] == ["wrong_puck_at_goal 3/6"]
    write_runs(tmp_path / "lift", [_arm_run("base", 1, 20)])
    lift = write_report([tmp_path / "lift"], tmp_path / "report_lift")
    assert "Outcomes" not in lift["markdown"].read_text() and "outcomes" not in lift["csv"].read_text()
    (folder / "episodes.json").write_text("[{\"final_object\": [1.0]}]")
    with pytest.raises(ReportError, match="base2/eval/episodes.json: unreadable per-episode record"):
        write_report([tmp_path / "runs"], tmp_path / "report2")


def test_bonferroni_adjusted_differences_widen_with_the_tasks_comparisons(tmp_path):
    """m comparisons on one task: each adjusted interval is Newcombe's at 1 - 0.05/m and contains the 95% one; the
    count is per task (another task's comparisons do not widen these)."""
    from s2policy.evaluate import difference_interval
    from s2policy.report import differences, find_summaries, load_summary, pool_runs

    runs = [_arm_run("base", 1, 20), _arm_run("base_s2", 1, 30, img_sizes=(224, 448), gmacs=1.9),
            _arm_run("larger", 1, 35, encoder="efficientnet_lite2", gmacs=0.86),
            _arm_run("base", 1, 10, task="mw-hammer"), _arm_run("larger", 1, 12, task="mw-hammer",
                                                                encoder="efficientnet_lite2", gmacs=0.86)]
    write_runs(tmp_path / "runs", runs)
    rows = differences(pool_runs([load_summary(f) for f in find_summaries([tmp_path / "runs"])]),
                       [("base_s2", "base"), ("larger", "base"), ("base_s2", "larger")])
    assert sorted((r["task"], r["comparisons"]) for r in rows) == [("lift", 3)] * 3 + [("mw-hammer", 1)]
    for r in rows:
        args = (r["a_successes"], r["a_episodes"], r["b_successes"], r["b_episodes"])
        low, high = difference_interval(*args, confidence=1 - 0.05 / r["comparisons"])
        assert (r["adjusted_low"], r["adjusted_high"]) == (round(low, 4), round(high, 4))
        assert r["adjusted_low"] <= r["ci_low"] and r["ci_high"] <= r["adjusted_high"]
        assert (r["comparisons"] == 1) == (r["adjusted_low"] == r["ci_low"])
