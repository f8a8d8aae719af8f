"""The study queue: seed-major order, one unit per study at a time, a failing study stops alone, configs checked
before anything runs."""

import subprocess
import sys
from pathlib import Path

import pytest

from s2policy.errors import ConfigError
from s2policy.study_queue import Unit, check_units, plan, run_queue


def test_plan_is_seed_major_then_one_full_report_per_study():
    units = plan(["a", "b"], [1, 2], ["eval.episodes=3"])
    assert [(u.study, u.seeds) for u in units] == [("a", (1,)), ("b", (1,)), ("a", (2,)), ("b", (2,)),
                                                   ("a", (1, 2)), ("b", (1, 2))]
    assert units[0].command()[-2:] == ["eval.episodes=3", "seeds=[1]"]
    assert [u.seeds for u in plan(["a"], None)] == [None]


def _recorder(log: Path, fail: str = ""):
    """argv of a child that logs its start and end (and exits 1 for study `fail`)."""
    def command(unit: Unit) -> list[str]:
        code = (f"import time; f = open({str(log)!r}, 'a'); f.write('start {unit.study} {unit.seeds}\\n'); "
                f"f.flush(); time.sleep(0.3); f.write('end {unit.study} {unit.seeds}\\n'); "
                f"raise SystemExit({1 if unit.study == fail else 0})")
        return [sys.executable, "-c", code]
    return command


def test_queue_runs_units_in_order_one_per_study(tmp_path):
    log = tmp_path / "order.txt"
    assert run_queue(plan(["a", "b"], [1, 2]), tmp_path / "logs", jobs=2, poll=0.05, command=_recorder(log)) == 0
    events = log.read_text().splitlines()
    assert len(events) == 12
    for study in "ab":  # a study's units never overlap and keep their order
        mine = [e for e in events if e.split()[1] == study]
        assert mine == [f"{kind} {study} {seeds}" for seeds in ("(1,)", "(2,)", "(1, 2)") for kind in ("start", "end")]
    # two studies do run side by side with jobs=2
    assert events.index("start b (1,)") < events.index("end a (1,)")
    assert (tmp_path / "logs" / "a.log").is_file()


def test_a_failing_study_stops_alone(tmp_path):
    log = tmp_path / "order.txt"
    code = run_queue(plan(["a", "b"], [1, 2]), tmp_path / "logs", jobs=1, poll=0.05, command=_recorder(log, "a"))
    assert code == 1
    started = [e for e in log.read_text().splitlines() if e.startswith("start")]
    assert started == ["start a (1,)", "start b (1,)", "start b (2,)", "start b (1, 2)"]


@pytest.mark.subprocess
def test_bad_study_config_is_refused_before_anything_runs(tmp_path):

    with pytest.raises(ConfigError, match="eval.episodes"):
        check_units(plan(["study_v2_twin_m12"], [1], ["eval.episodes=0"]))
    check_units(plan(["study_v2_twin_m12", "study_v2_tiny_goal_r20"], [1, 2, 3]))
    result = subprocess.run([sys.executable, "-m", "s2policy.study_queue", "study_v2_twin_m12", "--seeds", "1",
                             "--log-dir", str(tmp_path / "logs"), "--override", "eval.workers=-1"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: ") and "eval.workers" in result.stderr
    assert not (tmp_path / "logs").exists()
