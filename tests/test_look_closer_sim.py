"""Look-closer's gripper selector in our MuJoCo tasks: the crop window holds the gripper the renderer drew."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import envs
from envs.detail_tasks import segmentation_frame
from s2policy.errors import ConfigError
from s2policy.look_closer import LookCloserEncoder, selector_points

pytest.importorskip("mujoco")
pytest.importorskip("robosuite")
pytest.importorskip("metaworld")
pytestmark = [pytest.mark.slow, pytest.mark.simulator]

FRAME = 224
# Bodies whose geoms are the gripper, per suite: the subtree of this body.
GRIPPER_ROOT = {"robosuite": "gripper0_right_right_gripper", "metaworld": "right_hand"}


class Native224(nn.Module):
    """A stand-in backbone with a 224 px native input (only crop placement is under test here)."""

    name, weights_id, native_size, embed_dim, output_shape, num_prefix_tokens = "stub", "stub", 224, 3, "bchw", 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(x, 32)


def gripper_mask(env, camera: str) -> np.ndarray:
    """(H, W) bool: pixels where the renderer drew a gripper geom (segmentation render, upright like the frames)."""
    import mujoco

    model, data = env.mj_model_data
    root = model.body(GRIPPER_ROOT[env.task.suite]).id
    in_subtree = np.zeros(model.nbody, bool)
    for b in range(model.nbody):  # parents come before children in MuJoCo's body order
        in_subtree[b] = b == root or (b > 0 and in_subtree[model.body_parentid[b]])
    gripper_geoms = np.flatnonzero(in_subtree[model.geom_bodyid])
    seg = segmentation_frame(env, camera)
    return np.isin(seg[..., 0], gripper_geoms) & (seg[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM))


@pytest.mark.parametrize("task", ["lift", "mw-hammer"])
def test_gripper_crop_contains_the_rendered_gripper(task):
    env = envs.make_env(task, camera_size=FRAME, seed=11)
    camera = env.cameras[0]
    encoder = LookCloserEncoder(Native224(), img_sizes=[224, 448], selector="gripper", crops=1,
                                camera_models={camera: env.camera_model(camera)})
    expert = envs.make_expert(task)
    obs, _ = env.reset(seed=11)
    expert.reset()
    checked = 0
    for step in range(30):
        if step % 10 == 0:
            points = selector_points(encoder, obs)  # proprio[:3]: the end-effector, in world coordinates
            x = torch.from_numpy(obs[camera]).permute(2, 0, 1)[None].float() / 255
            box = encoder.features(x, points).boxes[0, 0].numpy() * FRAME  # the 224 px crop of the 448 scale
            mask = gripper_mask(env, camera)
            assert mask.sum() > 50, f"{task}: the gripper is not in view at step {step}"
            ys, xs = np.nonzero(mask)
            inside = (xs >= box[0]) & (xs < box[2]) & (ys >= box[1]) & (ys < box[3])
            assert inside.mean() > 0.6, f"{task} step {step}: crop {box} holds {inside.mean():.0%} of the gripper"
            # The projected end-effector (the grip point, between the fingers) lies within the drawn gripper.
            uv = env.camera_model(camera).project(points)[0][0].numpy() * FRAME
            assert xs.min() - 2 <= uv[0] <= xs.max() + 2 and ys.min() - 2 <= uv[1] <= ys.max() + 2, \
                f"{task} step {step}: projection {uv} outside the drawn gripper ({xs.min()}..{xs.max()}, " \
                f"{ys.min()}..{ys.max()})"
            checked += 1
        obs, *_ = env.step(expert.act(env, obs))
    assert checked == 3
    env.close()


def test_a_camera_on_the_robot_has_no_fixed_model():
    env = envs.make_env("lift", cameras=[], camera_size=64, seed=0)
    env.reset(seed=0)
    with pytest.raises(ConfigError, match="moving body"):
        env.camera_model("robot0_eye_in_hand")
    env.close()


@pytest.fixture(scope="module")
def lift_checkpoint(tmp_path_factory):
    """A tiny look-closer policy for lift whose camera model comes from the simulator (as training resolves it)."""
    from s2policy.look_closer import resolve_camera_models

    from .test_runtime_support import write_tiny_checkpoint

    s2 = resolve_camera_models({"selector": "gripper", "crops": 1},
                               {"name": "lift", "cameras": ["agentview"], "camera_size": 64})
    path = tmp_path_factory.mktemp("lc") / "policy.safetensors"
    return write_tiny_checkpoint(path, proprio_dim=16, action_dim=7, task="lift", s2_options=s2)


def test_look_closer_policy_evaluates_and_runs_in_the_robot_loop(lift_checkpoint, tmp_path):
    import json

    from s2policy.evaluate import EvalSettings, evaluate
    from s2policy import build_s2_encoder
    from s2policy.runtime.__main__ import main

    summary = evaluate(lift_checkpoint, tmp_path / "eval", EvalSettings(episodes=1, workers=0, max_steps=6))
    assert summary["policy"]["look_closer"] == {"selector": "gripper", "crops": 1, "crop_scale_px": 64}
    one_pass = build_s2_encoder("tiny_cnn", "random", {"scales": [1]}).gmacs()
    assert summary["cost"]["gmacs_per_frame"] == pytest.approx(2 * one_pass)  # base + 1 crop
    assert summary["speed"]["env_steps"] == 6

    threads = torch.get_num_threads()
    try:
        code = main(["--checkpoint", str(lift_checkpoint), "--robot", "sim", "--hz", "10", "--seconds", "1.5",
                     "--camera-size", "64", "--threads", "1", "--max-observation-age", "1.0",
                     "--json", str(tmp_path / "loop.json")])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    report = json.loads((tmp_path / "loop.json").read_text())
    assert report["inferences"] >= 8 and report["extra"]["sim_steps"] >= 5
