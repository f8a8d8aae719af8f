"""multiscale_forward: equality with the reference algorithm, extensions, and error messages."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from s2policy.errors import ConfigError
from s2policy.s2 import multiscale_forward, plan_scales, resize_image
from tests.s2_reference import reference_s2
from tests.toy_models import PatchCNN, ToyCNN, ToyViT

CNN, VIT1, VIT2 = ToyCNN(), ToyViT(1), ToyViT(2)
MODELS = {"cnn": (CNN, "bchw", 0), "vit_p1": (VIT1, "bnc", 1), "vit_p2": (VIT2, "bnc", 2), "vit_p0": (ToyViT(0), "bnc", 0)}


class Recorder(torch.nn.Module):
    """Wraps a model and remembers the shape of every batch it was called with."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        return self.model(x)


SCALE_CASES = [
    dict(scales=[1]),
    dict(scales=[1, 2]),
    dict(scales=[2, 1]),
    dict(scales=[1, 2, 3]),
    dict(scales=[1, 2], max_split_size=8),
    dict(img_sizes=[16, 32, 48]),
    dict(img_sizes=[32, 16], max_split_size=16),
]


@pytest.mark.parametrize(
    "model_name,case,idx,split_forward",
    [(m, c, i, sf) for m, c, i, sf in itertools.product(MODELS, range(len(SCALE_CASES)), [0, -1, 1], [False, True])
     if i < len(SCALE_CASES[c].get("scales", SCALE_CASES[c].get("img_sizes")))],
)
def test_matches_reference(model_name, case, idx, split_forward):
    model, shape, prefix = MODELS[model_name]
    kw = SCALE_CASES[case]
    torch.manual_seed(case)
    x = torch.rand(3, 3, 16, 16)
    args = dict(kw, resize_output_to_idx=idx, num_prefix_token=prefix, output_shape=shape, split_forward=split_forward)
    expected = reference_s2(model, x, **args)
    with torch.no_grad():
        got = multiscale_forward(model, x, **args)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize(
    "options",
    [dict(batch_scales=True), dict(batch_scales=True, chunk_size=5), dict(chunk_size=4, channels_last=True),
     dict(batch_scales=True, chunk_size=2, channels_last=True)],
)
def test_batching_options_change_speed_not_results(model_name, options):
    model, shape, prefix = MODELS[model_name]
    x = torch.rand(2, 3, 16, 16)
    args = dict(scales=[1, 2, 3], num_prefix_token=prefix, output_shape=shape, resize_output_to_idx=-1)
    expected = reference_s2(model, x, **args)
    rec = Recorder(model)
    got = multiscale_forward(rec, x, **args, **options)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    n_crops = 2 * (1 + 4 + 9)
    assert sum(c[0] for c in rec.calls) == n_crops
    if options.get("chunk_size"):
        assert max(c[0] for c in rec.calls) <= options["chunk_size"]
    if options.get("batch_scales") and not options.get("chunk_size"):
        assert len(rec.calls) == 1


def test_crops_are_tile_major():
    # Crop (i, j) of image b must sit at batch index (i * n + j) * B + b, as in the reference.
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    seen = []
    multiscale_forward(lambda c: seen.append(c) or c[:, :, ::4, ::4], x, scales=[1], max_split_size=4,
                       output_shape="bchw")
    crops = seen[0]
    for i, j, b in itertools.product(range(2), range(2), range(2)):
        torch.testing.assert_close(crops[(i * 2 + j) * 2 + b, 0], x[b, 0, i * 4:(i + 1) * 4, j * 4:(j + 1) * 4])


def test_gradients_flow():
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    multiscale_forward(VIT1, x, scales=[1, 2], num_prefix_token=1).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("model_name", ["cnn", "vit_p1"])
@pytest.mark.parametrize("hw,split", [((16, 24), 8), ((24, 16), 8), ((8, 32), 8)])
def test_non_square_tiles_each_axis(model_name, hw, split):
    # Patch-local models commute with tiling: S2 at scale 1 on tiles = the model on the whole frame.
    model, shape, prefix = (PatchCNN(), "bchw", 0) if model_name == "cnn" else MODELS[model_name]
    x = torch.rand(2, 3, *hw)
    rec = Recorder(model)
    got = multiscale_forward(rec, x, scales=[1], max_split_size=split, num_prefix_token=prefix, output_shape=shape)
    assert all(c[2:] == (split, split) for c in rec.calls)
    if shape == "bchw":
        torch.testing.assert_close(got, model(x), rtol=1e-5, atol=1e-6)
    else:
        whole = model.patch(x).flatten(2).transpose(1, 2)
        torch.testing.assert_close(got[:, prefix:], model.mix(whole), rtol=1e-5, atol=1e-6)


def test_non_square_two_scales_shapes():
    x = torch.rand(2, 3, 16, 24)
    out = multiscale_forward(CNN, x, scales=[1, 2], max_split_size=8, output_shape="bchw")
    assert out.shape == (2, 12, 4, 6)
    out = multiscale_forward(CNN, x, scales=[1, 2], max_split_size=8, output_shape="bchw", resize_output_to_idx=1)
    assert out.shape == (2, 12, 8, 12)


def test_fit_resize_rounds_each_axis_to_whole_crops():
    # A 4:3 camera frame with img_sizes given as the shorter side, crops of 16 px.
    x = torch.rand(1, 3, 24, 32)
    plans = plan_scales((24, 32), img_sizes=[16, 32], max_split_size=16, fit="resize")
    assert [(p.size, p.grid) for p in plans] == [((16, 16), (1, 1)), ((32, 48), (2, 3))]
    rec = Recorder(CNN)
    out = multiscale_forward(rec, x, img_sizes=[16, 32], max_split_size=16, fit="resize", output_shape="bchw")
    assert out.shape == (1, 12, 4, 4)
    assert {c[2:] for c in rec.calls} == {(16, 16)}
    with pytest.raises(ConfigError, match=r"16x21 pixels, which does not tile into 16x16 crops"):
        multiscale_forward(CNN, x, img_sizes=[16, 32], max_split_size=16, output_shape="bchw")


def test_antialias_only_changes_downscaled_scales():
    x = torch.rand(2, 3, 32, 32)
    args = dict(img_sizes=[16, 32], max_split_size=16, output_shape="bchw")
    plain = multiscale_forward(CNN, x, antialias=False, **args)
    torch.testing.assert_close(plain, reference_s2(CNN, x, **args), rtol=1e-5, atol=1e-6)
    aa = multiscale_forward(CNN, x, **args)  # antialias=True is the default
    assert not torch.allclose(aa[:, :6], plain[:, :6])  # the 16-px scale was shrunk: filtered
    torch.testing.assert_close(aa[:, 6:], plain[:, 6:])  # the 32-px scale is the frame itself


def test_antialias_removes_aliasing_of_fine_detail():
    # Stripes with a 3-px period are above the Nyquist limit of a 4x smaller image: they must fade to grey,
    # not fold into coarse false stripes (the reference's behaviour).
    col = 0.5 + 0.5 * torch.sin(2 * torch.pi * torch.arange(128) / 3.0)
    x = col.expand(1, 3, 128, 128).contiguous()
    small_aa = resize_image(x, (32, 32), antialias=True)
    small_plain = resize_image(x, (32, 32), antialias=False)
    assert small_aa.std() < 0.02 < 0.2 < small_plain.std()


def test_resize_filters_only_the_shrinking_axis():
    # Content varies along W only: shrinking H is a no-op, so growing W must use the reference's plain kernel.
    row = torch.rand(10)
    x = row.expand(1, 1, 12, 10).contiguous()
    got = resize_image(x, (6, 20), antialias=True)
    ref_w = F.interpolate(x, size=(12, 20), mode="bicubic", align_corners=False)[:, :, :6]
    torch.testing.assert_close(got, ref_w, rtol=1e-5, atol=1e-5)


def test_error_non_4d_input():
    with pytest.raises(ValueError, match=r"4-D \(B, C, H, W\) tensor, got shape \(3, 16, 16\)"):
        multiscale_forward(CNN, torch.rand(3, 16, 16), scales=[1], output_shape="bchw")


def test_error_scale_that_does_not_tile():
    with pytest.raises(ConfigError, match=r"scale 1.5 of a 16x16 frame is 24x24 pixels, which does not tile"):
        multiscale_forward(CNN, torch.rand(1, 3, 16, 16), scales=[1, 1.5], output_shape="bchw")


def test_error_wrong_prefix_count_names_the_fix():
    with pytest.raises(ConfigError, match=r"17 tokens per crop.*num_prefix_token=0.*with num_prefix_token=1"):
        multiscale_forward(VIT1, torch.rand(1, 3, 16, 16), scales=[1, 2])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(scales=[1], output_shape="bhwc"), "output_shape must be 'bnc'"),
        (dict(scales=[1], output_shape="bchw", num_prefix_token=1), "num_prefix_token must be 0 for 'bchw'"),
        (dict(scales=[1, 2], output_shape="bchw", resize_output_to_idx=2), "resize_output_to_idx=2 is out of range"),
        (dict(output_shape="bchw"), "either scales"),
        (dict(scales=[], output_shape="bchw"), "at least one scale"),
        (dict(scales=[1], output_shape="bchw", fit="pad"), "fit must be"),
    ],
)
def test_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        multiscale_forward(CNN, torch.rand(1, 3, 16, 16), **kwargs)
