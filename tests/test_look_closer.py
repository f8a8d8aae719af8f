"""Look-closer (scale-selective S2): tiles == S2, crops where the selector says, cost, cache keys, policy, export,
clear errors; camera models and calibration records."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from s2policy.camera_model import CameraModel, calibration_record, load_calibration
from s2policy.data import open_dataset
from s2policy.errors import ConfigError
from s2policy import build_s2_encoder
from s2policy.features import build_feature_cache, frames_to_tensor
from s2policy.look_closer import crop_corners, cut_crops, resolve_camera_models, saliency_centres, selector_points
from s2policy.policy import Policy
from s2policy.s2 import merge_crops, multiscale_forward
from s2policy.train.synthetic import write_synthetic_demos

from .test_runtime_support import observation, write_tiny_checkpoint

# A 64x64 camera at the world origin looking along +z: world (x, y, 1) lands at normalised (0.5 + x/2, 0.5 + y/2).
CAMERA = {"width": 64, "height": 64, "fx": 32.0, "fy": 32.0, "cx": 31.5, "cy": 31.5,
          "camera_from_world": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]}


def lc(encoder="tiny_cnn", **options):
    return build_s2_encoder(encoder, "random", {"img_sizes": [32, 64], **options})


def gripper(crops=1, **kw):
    return lc(selector="gripper", crops=crops, camera_models={"agentview": CAMERA}, **kw)


# --- tiles reproduces plain S2 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoder", ["tiny_cnn", "tiny_vit"])
@pytest.mark.parametrize("frame", [(32, 32), (40, 40)])  # 40 px: the base scale is an antialiased shrink
def test_tiles_reproduces_s2_features(encoder, frame):
    torch.manual_seed(0)
    x = torch.rand(3, 3, *frame)
    s2 = build_s2_encoder(encoder, "random", {"img_sizes": [32, 64]})
    tiles = lc(encoder, selector="tiles")
    out = tiles.features(x)
    c = s2.encoder.embed_dim
    emb = s2.embed(x)
    torch.testing.assert_close(out.base, emb[:, :c], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.crops.mean(dim=1), emb[:, c:], rtol=1e-5, atol=1e-6)  # S2's pooled large scale
    # The crops' maps stitched in tile order are S2's large-scale map (the reference function, largest grid).
    ref = multiscale_forward(s2.encoder, x, img_sizes=[32, 64], max_split_size=32, resize_output_to_idx=-1,
                             num_prefix_token=s2.encoder.num_prefix_tokens, output_shape=s2.encoder.output_shape)
    stitched = merge_crops(out.crop_maps.transpose(0, 1).reshape(-1, *out.crop_maps.shape[2:]), (2, 2))
    if s2.encoder.output_shape == "bnc":
        p = s2.encoder.num_prefix_tokens
        ref = ref[:, p:, c:].transpose(1, 2).reshape(stitched.shape)
    else:
        ref = ref[:, c:]
    torch.testing.assert_close(stitched, ref, rtol=1e-5, atol=1e-6)
    expected_boxes = torch.tensor([[0, 0, .5, .5], [.5, 0, 1, .5], [0, .5, .5, 1], [.5, .5, 1, 1]])
    torch.testing.assert_close(out.boxes, expected_boxes.expand(3, 4, 4))
    assert tiles.crops_per_frame(frame) == s2.crops_per_frame(frame) == 5


# --- placement --------------------------------------------------------------------------------------------------------
def test_cut_crops_equals_slicing_and_corners_are_clamped():
    image = torch.rand(2, 3, 20, 30)
    corners = crop_corners(torch.tensor([[[0.5, 0.5], [0.0, 1.0]], [[1.2, -0.3], [float("nan"), 0.2]]]), (20, 30), 8)
    assert corners.tolist() == [[[6, 11], [12, 0]], [[0, 22], [0, 11]]]  # (row, col); NaN -> middle column
    crops = cut_crops(image, corners, 8)
    for b in range(2):
        for j in range(2):
            r, c = corners[b, j].tolist()
            torch.testing.assert_close(crops[b * 2 + j], image[b, :, r:r + 8, c:c + 8], rtol=0, atol=0)
    with pytest.raises(ConfigError, match="larger than the 20x30 image"):
        crop_corners(torch.zeros(1, 1, 2), (20, 30), 24)


def test_gripper_crop_is_centred_on_the_projected_point_and_fed_to_the_encoder():
    enc = gripper()
    x = torch.rand(2, 3, 64, 64)
    points = torch.tensor([[0.0, 0.0, 1.0], [-0.5, 0.25, 1.0]])  # -> pixel centres (32, 32) and (16, 40) of 64
    out = enc.features(x, points)
    torch.testing.assert_close(out.boxes[:, 0], torch.tensor([[.25, .25, .75, .75], [0, .375, .5, .875]]))
    # The crop the encoder saw is that window of the 64 px scale (here: the frame itself).
    direct = enc._pool_crop(enc.encoder(x[1:, :, 24:56, 0:32]))
    torch.testing.assert_close(out.crops[1, 0], direct[0], rtol=1e-5, atol=1e-6)
    behind = enc.features(x[:1], torch.tensor([[0.3, 0.3, -1.0]]))  # behind the camera: look at the middle
    torch.testing.assert_close(behind.boxes[0, 0], torch.tensor([.25, .25, .75, .75]))


def test_saliency_finds_the_distinctive_patch_and_spreads_its_crops():
    x = torch.full((1, 3, 64, 64), 0.5)
    x[:, :, 44:60, 4:20] = torch.rand(3, 16, 16)  # texture on a uniform "table", bottom-left
    out = lc(selector="saliency", crops=2).features(x)
    x0, y0, x1, y1 = out.boxes[0, 0].tolist()
    assert x0 <= 4 / 64 and x1 >= 20 / 64 and y0 <= 44 / 64 and y1 >= 60 / 64, out.boxes
    assert not torch.equal(out.boxes[0, 0], out.boxes[0, 1])
    centres = saliency_centres(torch.rand(2, 4, 6, 6), 3, (0.5, 0.5))
    d = (centres[:, :, None] - centres[:, None]).abs().amax(-1) + torch.eye(3) * 9
    assert (d >= 0.25).all()  # each next centre lies outside the earlier windows


def test_gripper_second_crop_goes_outside_the_first():
    out = gripper(crops=2).features(torch.rand(2, 3, 64, 64), torch.tensor([[0.0, 0.0, 1.0], [0.5, 0.5, 1.0]]))
    centres = (out.boxes[..., :2] + out.boxes[..., 2:]) / 2
    first = (centres[:, :1] - centres[:, 1:]).abs().amax(-1)
    assert (first > 0.1).all()


# --- identity, cost, determinism --------------------------------------------------------------------------------------
def test_embedding_layout_cost_and_determinism():
    enc = gripper(crops=2)
    x, pts = torch.rand(2, 3, 48, 48), torch.tensor([[0.1, 0.2, 1.0], [-0.3, 0.0, 1.2]])
    emb = enc.embed(x, pts)
    out = enc.features(x, pts)
    assert emb.shape == (2, enc.out_dim) == (2, 16 * 3 + 8)
    assert torch.equal(emb, torch.cat([out.base, out.crops.flatten(1), out.boxes.flatten(1)], 1))
    assert torch.equal(emb, enc.embed(x, pts)) and torch.equal(emb, gripper(crops=2).embed(x, pts))
    assert enc.crops_per_frame((48, 48)) == 3
    assert enc.gmacs((48, 48)) == pytest.approx(3 * build_s2_encoder("tiny_cnn", "random", {"scales": [1]}).gmacs())
    assert enc.config()["look_closer"]["crops"] == 2 and enc.summary() == {"selector": "gripper", "crops": 2,
                                                                             "crop_scale_px": 64}


# --- errors before work -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("options, message", [
    ({"selector": "gripper", "crops": 0}, "at least one crop"),
    ({"selector": "gaze"}, "expected one of"),
    ({"crops": 2}, "only apply to look-closer"),
    ({"selector": "gripper"}, "needs a camera model"),
    ({"selector": "saliency", "crops": 4}, "only 4 tiles"),
    ({"selector": "tiles", "crops": 2}, "leave it null"),
    ({"selector": "saliency", "img_sizes": [64, 64]}, "covers the whole frame"),
])
def test_bad_options_fail_with_one_clear_error(options, message):
    with pytest.raises(ConfigError, match=message):
        build_s2_encoder("tiny_cnn", "random", {"img_sizes": [32, 64], **options})


def test_missing_camera_model_is_reported_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="not a simulated task.*calibration"):
        resolve_camera_models({"selector": "gripper"}, {"name": "my_real_robot", "cameras": ["wrist_left"]})
    enc = gripper()
    with pytest.raises(ConfigError, match="no camera model for camera 'side'"):
        enc.embed(torch.rand(1, 3, 64, 64), torch.zeros(1, 3), camera="side")
    with pytest.raises(ConfigError, match="point_key"):
        selector_points(enc, {"joint_pos": np.zeros(7)})


# --- camera models ----------------------------------------------------------------------------------------------------
def test_calibration_file_round_trip_and_validation(tmp_path):
    model = CameraModel.from_dict(CAMERA)
    path = tmp_path / "calib.json"
    path.write_text(json.dumps(calibration_record({"agentview": model})))
    assert load_calibration(path) == {"agentview": model}
    resolved = resolve_camera_models({"selector": "gripper", "calibration": str(path)},
                                     {"name": "my_real_robot", "cameras": ["agentview"]})
    assert resolved["camera_models"] == {"agentview": model.to_dict()}
    direct = lc(selector="gripper", calibration=str(path))  # the Python API reads the file itself
    assert direct.config() == gripper().config()
    bad = dict(CAMERA, camera_from_world=[[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    path.write_text(json.dumps({"format": "s2policy.camera/1", "cameras": {"agentview": bad}}))
    with pytest.raises(ConfigError, match="calib.json, camera 'agentview'.*not a proper rotation"):
        load_calibration(path)
    path.write_text(json.dumps({"cameras": {}}))
    with pytest.raises(ConfigError, match="expected"):
        load_calibration(path)


def test_camera_model_scales_with_the_frame():
    model = CameraModel.from_dict(CAMERA)
    pts = torch.tensor([[0.2, -0.4, 1.0], [-0.7, 0.1, 2.0]])
    torch.testing.assert_close(model.for_frame((128, 128)).project(pts)[0], model.project(pts)[0])
    torch.testing.assert_close(model.project(pts)[0], torch.tensor([[0.6, 0.3], [0.325, 0.525]]))
    with pytest.raises(ConfigError, match="aspect ratio"):
        model.for_frame((48, 64))


# --- cache, policy, export --------------------------------------------------------------------------------------------
@pytest.fixture()
def dataset(tmp_path):
    return write_synthetic_demos(tmp_path / "demos.hdf5", num_demos=3, length=7, image_size=64)


def test_cache_uses_stored_states_and_keys_on_every_option(dataset, tmp_path):
    enc = gripper()
    cache, _ = build_feature_cache(dataset, "agentview", enc, batch_size=5, dtype="float32")
    with open_dataset(dataset) as ds:
        for demo in ds.demo_keys:  # batches of 5 straddle demos of 7: the points must follow their frames
            obs = ds.demo_group(demo)["obs"]
            direct = enc.embed(frames_to_tensor(obs["agentview_image"][()]), selector_points(enc, obs))
            np.testing.assert_allclose(cache.embeddings(demo), direct.numpy(), rtol=1e-5, atol=1e-5)
    assert build_feature_cache(dataset, "agentview", gripper(), dtype="float32")[1].reused

    def folder(encoder):
        return build_feature_cache(dataset, "agentview", encoder, dtype="float32")[0].folder

    moved = dict(CAMERA, cx=20.0)
    others = [gripper(crops=2), lc(selector="saliency"), lc(selector="tiles"), gripper(point_index=1),
              lc(selector="gripper", camera_models={"agentview": moved})]
    folders = {folder(e) for e in others} | {cache.folder}
    assert len(folders) == len(others) + 1
    with h5py_open(dataset) as f:  # new end-effector positions, same frames: the crops move, so must the cache
        f["data/demo_0/obs/proprio"][0, 0] += 0.5
    assert folder(gripper()) != cache.folder


def h5py_open(path):
    import h5py

    return h5py.File(path, "r+")


def test_policy_acts_with_live_points_and_round_trips(tmp_path):
    options = {"selector": "gripper", "crops": 1, "camera_models": {"agentview": CAMERA}}
    path = write_tiny_checkpoint(tmp_path / "p.safetensors", scales=(1, 2), s2_options=options)
    policy = Policy.load(path, device="cpu")
    rng = np.random.default_rng(0)
    obs = observation(rng, frame_shape=(64, 64))
    points = torch.as_tensor(obs["proprio"][None, :3])
    expected = policy.encoder.embed(frames_to_tensor(obs["agentview"]), points)
    torch.testing.assert_close(policy.encode_frames({"agentview": obs["agentview"][None]}, 1, points), expected)
    action = policy.act(obs)
    assert action.shape == (3,) and np.isfinite(action).all()
    assert policy.config.s2["camera_models"]["agentview"] == CAMERA


@pytest.mark.parametrize("fmt, selector", [("onnx", "gripper"), ("torchscript", "gripper"), ("onnx", "saliency")])
def test_export_places_crops_inside_the_graph(tmp_path, fmt, selector):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    from s2policy.runtime.export import ExportedPolicy, export_policy

    options = {"selector": selector, "crops": 2}
    if selector == "gripper":
        options["camera_models"] = {"agentview": CAMERA}
    policy = Policy.load(write_tiny_checkpoint(tmp_path / "p.safetensors", s2_options=options), device="cpu")
    manifest = export_policy(policy, tmp_path / "out", fmt, frame_shapes={"agentview": (64, 64)}, parity_steps=3)
    assert manifest.parity_max_abs_diff <= 1e-4
    assert manifest.points == (["proprio", 0] if selector == "gripper" else None)
    exported = ExportedPolicy.load(tmp_path / "out")
    rng = np.random.default_rng(3)
    policy.reset()
    boxes = set()
    for _ in range(4):
        obs = observation(rng, frame_shape=(64, 64))
        obs["proprio"][:3] = [rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.8), 1.0]  # crops all over the frame
        boxes.add(tuple(policy.encoder.features(frames_to_tensor(obs["agentview"]),
                                                torch.as_tensor(obs["proprio"][None, :3])).boxes[0, 0].tolist()))
        np.testing.assert_allclose(exported.act(obs), policy.act(obs), atol=1e-4)
    assert len(boxes) > 1 or selector == "saliency"  # the graph really moved its crops with the gripper


# --- the whole path: config -> cache -> training -> policy; reports ---------------------------------------------------
def test_training_with_a_calibrated_camera_and_acting_on_live_observations(tmp_path):
    from s2policy.train import train

    from .test_train import run_config

    data = write_synthetic_demos(tmp_path / "demos.hdf5", num_demos=4, length=8, image_size=64)
    calib = tmp_path / "calib.json"
    calib.write_text(json.dumps(calibration_record({"agentview": CameraModel.from_dict(CAMERA)})))
    # The end-effector position is read from obs/object here: a key the head does not get as proprio.
    cfg = run_config(data, tmp_path / "run", "task.camera_size=64", "s2.selector=gripper", "s2.crops=1",
                     "s2.point_key=object", f"s2.calibration={calib}", "train.steps=20")
    policy = Policy.load(train(cfg), device="cpu")
    assert policy.config.s2["camera_models"] == {"agentview": CAMERA} and policy.config.feature_dim == 16 * 2 + 4
    manifest = json.loads(next((tmp_path / "demos.hdf5.features").glob("agentview-*/manifest.json")).read_text())
    assert manifest["inputs"]["encoder"]["look_closer"]["selector"] == "gripper"
    assert "selector_inputs_sha256" in manifest["inputs"]["encoder"]
    obs = observation(np.random.default_rng(1), frame_shape=(64, 64))
    with pytest.raises(ConfigError, match="'object' \\(s2.point_key\\)"):  # no end-effector position in it
        policy.act(obs)
    obs["object"] = np.array([0.1, -0.2, 1.0], np.float32)
    assert np.isfinite(policy.act(obs)).all()


def test_report_labels_and_separates_look_closer_runs():
    from s2policy.report import pool_runs

    from .test_report import summary

    plain = summary("efficientnet_lite0", [224, 448], 0, 30, 50, 1.9)
    closer = summary("efficientnet_lite0", [224, 448], 0, 28, 50, 0.77, sha="lc")
    closer["policy"]["look_closer"] = {"selector": "gripper", "crops": 1, "crop_scale_px": 448}
    configs = pool_runs([plain, closer])
    assert [c.label for c in configs] == ["efficientnet_lite0 S2 224+448, mlp head",
                                          "efficientnet_lite0 224px + look-closer gripper 1x448px, mlp head"]


@pytest.mark.parametrize("frame, size, crop",
                         [((40, 40), (80, 80), 32), ((30, 45), (90, 135), 33), ((40, 40), (60, 60), 32)])
def test_crops_of_an_upscaled_frame_equal_cutting_the_fully_resized_frame(frame, size, crop):
    from s2policy.look_closer import crops_of_scale
    from s2policy.s2 import ScalePlan, resize_image

    x = torch.rand(2, 3, *frame)
    centres = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [0.37, 0.61]], [[0.5, 0.5], [0.02, 0.9], [0.8, 0.1]]])
    corners = crop_corners(centres, size, crop)
    plan = ScalePlan(size=size, grid=(size[0] // crop, size[1] // crop), crop=crop)
    expected = cut_crops(resize_image(x, size), corners, crop)  # 80/40 and 90/30: regions only; 60/40: whole frame
    torch.testing.assert_close(crops_of_scale(x, corners, plan), expected, rtol=0, atol=1e-5)  # float rounding


def test_the_policy_server_places_crops_from_the_served_observation(tmp_path):
    from s2policy.runtime import PolicyRunner
    from s2policy.runtime.service import ChunkRequest

    from .serve_support import tiny_service

    options = {"selector": "gripper", "crops": 1, "camera_models": {"agentview": CAMERA}}
    ckpt = write_tiny_checkpoint(tmp_path / "p.safetensors", s2_options=options)
    service = tiny_service(ckpt)
    runner = PolicyRunner.from_checkpoint(ckpt, device="cpu", warmup_steps=0)
    rng = np.random.default_rng(2)
    session = service.session()
    for _ in range(3):
        obs = observation(rng, frame_shape=(64, 64))
        obs["proprio"][:3] = [rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.8), 1.0]
        (result,) = service.infer([ChunkRequest(session, service.spec.check_observation(obs))])
        np.testing.assert_allclose(result.actions[0], runner.act(obs), rtol=0, atol=1e-6)
