"""End to end: `python -m s2policy.runtime` runs a checkpoint on the simulated robot (a MuJoCo task stepping in real
time behind the Robot protocol) and reports its cadence."""

import json

import pytest
import torch

from .test_runtime_support import write_tiny_checkpoint

pytest.importorskip("envs")  # first: it picks the headless GL backend before mujoco loads
pytestmark = pytest.mark.simulator


def test_cli_runs_a_checkpoint_on_the_sim_robot(tmp_path, capsys):
    from s2policy.runtime.__main__ import main

    ckpt = write_tiny_checkpoint(tmp_path / "policy.safetensors", head="transformer", proprio_dim=16, action_dim=7,
                                 task="lift")
    threads = torch.get_num_threads()
    try:
        code = main(["--checkpoint", str(ckpt), "--robot", "sim", "--hz", "10", "--seconds", "1.5",
                     "--camera-size", "48", "--threads", "1", "--max-observation-age", "1.0",
                     "--json", str(tmp_path / "report.json")])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    printed = capsys.readouterr().out
    assert "cadence:" in printed and "encode" in printed and "task: lift" in printed
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ticks"] >= 8 and report["inferences"] >= 8 and report["stop_reason"] == "1.5 s"
    assert report["extra"]["sim_steps"] >= 5  # the simulated world advanced while the loop ran
    assert report["stage_ms"]["encode"]["p50"] > 0


def test_cli_runs_a_spatial_policy_on_the_sim_robot_at_its_training_frame_size(tmp_path, capsys):
    from s2policy.runtime.__main__ import main

    ckpt = write_tiny_checkpoint(tmp_path / "policy.safetensors", head="spatial", grid=-1, proprio_dim=16,
                                 action_dim=7, task="lift")
    threads = torch.get_num_threads()
    try:  # no --camera-size: the sim renders the training size (64), the grid the spatial head was trained on
        code = main(["--checkpoint", str(ckpt), "--robot", "sim", "--hz", "10", "--seconds", "1.5", "--threads", "1",
                     "--max-observation-age", "1.0", "--json", str(tmp_path / "report.json")])
    finally:
        torch.set_num_threads(threads)
    assert code == 0, capsys.readouterr()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["inferences"] >= 3 and report["stage_ms"]["encode"]["p50"] > 0  # generous: a loaded machine


def test_cli_runs_a_camera_free_policy_and_its_export(tmp_path, capsys):
    """encoder=none policies (the study's controls) run in the robot loop like any other: no frames requested."""
    from s2policy.policy import Policy
    from s2policy.runtime.__main__ import main
    from s2policy.runtime.export import export_policy

    ckpt = write_tiny_checkpoint(tmp_path / "policy.safetensors", encoder="none", proprio_dim=16, action_dim=7,
                                 task="lift")
    export_policy(Policy.load(ckpt, device="cpu"), tmp_path / "export", "onnx", parity_steps=2)
    threads = torch.get_num_threads()
    try:
        for source in (["--checkpoint", str(ckpt)], ["--exported", str(tmp_path / "export")]):
            assert main([*source, "--robot", "sim", "--hz", "10", "--seconds", "1.0", "--threads", "1",
                         "--max-observation-age", "1.0", "--json", str(tmp_path / "report.json")]) == 0
            report = json.loads((tmp_path / "report.json").read_text())
            assert report["ticks"] >= 5 and report["inferences"] >= 5, source
    finally:
        torch.set_num_threads(threads)
    assert "task: lift" in capsys.readouterr().out


def test_cli_reports_a_bad_checkpoint(tmp_path, capsys):
    from s2policy.runtime.__main__ import main

    assert main(["--checkpoint", str(tmp_path / "missing.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err
