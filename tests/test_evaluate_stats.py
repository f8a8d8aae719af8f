"""Evaluation building blocks that need no simulator: Wilson intervals, held-out seeds, mp4 writing, the loop."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from s2policy.errors import ConfigError
from s2policy.evaluate import (EVAL_SEED_OFFSET, EpisodeJob, SuccessRate, VideoPlan, VideoWriter, check_disjoint,
                               difference_interval, evaluation_seeds, read_video_info, run_episodes, wilson_interval)
from s2policy.evaluate.env_handles import StepResult


# Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, method 3 (Wilson score).
@pytest.mark.parametrize("k, n, low, high", [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_matches_published_values(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=5e-5) and hi == pytest.approx(high, abs=5e-5)


# Newcombe (1998), "Interval estimation for the difference between independent proportions", Table II, method 10.
@pytest.mark.parametrize("a, m, b, n, low, high", [
    (56, 70, 48, 80, 0.0524, 0.3339),
    (9, 10, 3, 10, 0.1705, 0.8090),
    (5, 56, 0, 29, -0.0381, 0.1926),
])
def test_difference_interval_matches_published_values(a, m, b, n, low, high):
    lo, hi = difference_interval(a, m, b, n)
    assert lo == pytest.approx(low, abs=5e-5) and hi == pytest.approx(high, abs=5e-5)


def test_wilson_edges_and_symmetry():
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(0, 10)[0] == 0.0
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(1 - hi)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(5, 10, 0.99)[1] > hi  # wider at higher confidence
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    assert "50.0% (5/10" in str(SuccessRate(5, 10))


def test_evaluation_seeds_are_held_out(tmp_path):
    a, b = evaluation_seeds(0, 50), evaluation_seeds(1, 50)
    assert a[0] == EVAL_SEED_OFFSET and len(set(a)) == 50 and not set(a) & set(b)
    with pytest.raises(ConfigError):
        evaluation_seeds(0, 0)
    path = tmp_path / "demos.hdf5"
    with h5py.File(path, "w") as f:  # demos collected from seeds far up, crossing the evaluation block
        for i, seed in enumerate([EVAL_SEED_OFFSET - 1, EVAL_SEED_OFFSET + 3]):
            g = f.create_group(f"data/demo_{i}")
            g.attrs["seed"] = seed
            g.create_dataset("actions", data=np.zeros((2, 7), np.float32))
    with pytest.raises(ConfigError, match="overlap the training demos' seeds"):
        check_disjoint(a, path)
    check_disjoint(evaluation_seeds(1, 50), path)  # another eval.seed block is fine


def test_video_writer_makes_valid_mp4_and_leaves_nothing_on_abort(tmp_path):
    writer = VideoWriter(tmp_path / "ok.mp4", fps=10)
    for i in range(12):
        writer.add(np.full((30, 42, 3), 20 * i, np.uint8))  # sizes that are not multiples of 16
    assert writer.close() == tmp_path / "ok.mp4"
    info = read_video_info(tmp_path / "ok.mp4")
    assert info["frames"] == 12 and info["codec"] == "h264"
    broken = VideoWriter(tmp_path / "broken.mp4")
    broken.add(np.zeros((16, 16, 3), np.uint8))
    broken.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.mp4"]


class CountingEnv:
    """Succeeds after (seed % 4) + 2 steps; the observation carries the step count."""

    def __init__(self):
        self.seed, self.t, self.pending = None, 0, None

    def send_reset(self, seed):
        self.seed, self.t = seed, 0
        self.pending = StepResult(self._obs(), False, False)

    def send_step(self, action):
        assert action.shape == (2,)
        self.t += 1
        success = self.t >= self.seed % 4 + 2
        self.pending = StepResult(self._obs(), success, success)

    def _obs(self):
        return {"cam": np.full((4, 4, 3), self.t, np.uint8), "object": np.array([self.seed, self.t], np.float32)}

    def receive(self):
        return self.pending


class RecordingPolicy:
    def __init__(self):
        self.batches, self.resets = [], []

    def reset(self, env_ids=None):
        self.resets.append(env_ids)

    def act_batch(self, observations):
        self.batches.append(len(observations))
        return np.zeros((len(observations), 2), np.float32)


def test_run_episodes_runs_every_job_once_with_a_constant_batch(tmp_path):
    policy, results = RecordingPolicy(), []
    jobs = [EpisodeJob(i, s) for i, s in enumerate([10, 11, 12, 13, 14])]
    timing = run_episodes([CountingEnv(), CountingEnv(), CountingEnv()], policy, iter(jobs), max_steps=4,
                          on_episode=results.append, video=VideoPlan(tmp_path, 1, "cam", fps=5))
    assert sorted(r.seed for r in results) == [10, 11, 12, 13, 14]
    lengths = {r.seed: r.length for r in results}
    assert lengths == {10: 4, 11: 4, 12: 2, 13: 3, 14: 4}  # seed 11 would need 5 steps: capped at max_steps
    assert {r.seed: r.success for r in results} == {10: True, 11: False, 12: True, 13: True, 14: True}
    assert set(policy.batches) == {3} and timing.env_steps == sum(lengths.values())
    assert policy.resets[0] is None and all(isinstance(r, list) for r in policy.resets[1:])
    assert read_video_info(tmp_path / "episode_0000.mp4")["frames"] == 1 + lengths[10]
    assert [r.video is not None for r in sorted(results, key=lambda r: r.index)] == [True] + [False] * 4


def test_output_folders_for_one_and_several_checkpoints(tmp_path):
    from s2policy.evaluate.cli import output_dirs

    for run in ("a/seed0", "b/seed0"):
        (tmp_path / run).mkdir(parents=True)
        (tmp_path / run / "policy.safetensors").write_bytes(b"")
    a, b = str(tmp_path / "a/seed0"), str(tmp_path / "b/seed0/policy.safetensors")
    assert output_dirs([a], None) == [tmp_path / "a/seed0/eval"]
    assert output_dirs([a], "out") == [Path("out")]
    assert output_dirs([a, b], "out") == [Path("out/seed0"), Path("out/seed0-2")]  # same run names kept apart


def test_auto_layout_is_pipelined_only_for_a_cpu_policy_with_two_or_more_workers():
    import torch

    from s2policy.evaluate import EvalSettings
    from s2policy.evaluate.evaluator import resolve_layout

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert EvalSettings().policy_on == "auto"
    assert resolve_layout(EvalSettings(workers=2), cpu) == "main-pipelined"
    assert resolve_layout(EvalSettings(workers=4), cpu) == "main-pipelined"
    assert resolve_layout(EvalSettings(workers=1), cpu) == "main"  # nothing to overlap
    assert resolve_layout(EvalSettings(workers=2), gpu) == "main"  # one batch uses a GPU best
    assert resolve_layout(EvalSettings(workers=0), cpu) == "serial"
    # explicit choices keep their meaning
    assert resolve_layout(EvalSettings(workers=2, policy_on="main"), cpu) == "main"
    assert resolve_layout(EvalSettings(workers=2, policy_on="main", pipeline=True), gpu) == "main-pipelined"
    assert resolve_layout(EvalSettings(workers=2, policy_on="workers"), cpu) == "workers"
    assert resolve_layout(EvalSettings(workers=0, pipeline=True), cpu) == "serial"
