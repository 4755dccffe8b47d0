"""Tests of lib.slicewise.SlicewiseInferer with tiny deterministic stand-in networks."""

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from lib.slicewise import SlicewiseInferer


class Recorder(nn.Module):
    """Wraps a network; records the shape of every batch it sees."""

    def __init__(self, net):
        super().__init__()
        self.net, self.shapes = net, []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return self.net(x)


def seg_net(in_channels=1):
    """1x1 conv, 2 classes: background logit = -sum(x), foreground logit = +sum(x) (sum over channels)."""
    conv = nn.Conv2d(in_channels, 2, kernel_size=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0] = -1.0
        conv.weight[1] = 1.0
    return Recorder(conv)


class Centre(nn.Module):
    """Not per-pixel: foreground logit = x - mean of its own slice; background the negative."""

    def forward(self, x):
        c = x - x.mean(dim=(2, 3), keepdim=True)
        return torch.cat([-c, c], 1)


def cls_net():
    """Global average pool + linear: logits (m, -m, 0.5) where m is the slice mean."""
    linear = nn.Linear(1, 3)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0], [-1.0], [0.0]]))
        linear.bias.copy_(torch.tensor([0.0, 0.0, 0.5]))
    return Recorder(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear))


def constant_slices(shape, axis, values):
    """(1, 1, *shape) volume whose slices along ``axis`` are constant: slice k holds ``values[k]``."""
    view = [1, 1, 1]
    view[axis] = -1
    return torch.as_tensor(values, dtype=torch.float32).reshape(view).expand(*shape).clone()[None, None]


def _slice_values(depth):
    return [float(k + 1) for k in range(depth)]  # 1, 2, ..., all positive (foreground wins)


SHAPES = {0: (5, 8, 8), 1: (8, 5, 8), 2: (8, 8, 5)}  # slice axis has 5 slices of 8x8 pixels


# ---------------------------------------------------------------- segmentation: shapes, layout, resizing


@pytest.mark.parametrize("shape", [(8, 8), (12, 10), (6, 9)])
@pytest.mark.parametrize("size", [8, 16])
def test_segmentation_2d_shape_and_values(shape, size):
    x = torch.full((1, 1, *shape), 3.0)
    net = seg_net()
    with torch.no_grad():
        out = SlicewiseInferer(size, segmentation=True)(x, net)
    assert out.shape == (1, 2, *shape)
    assert net.shapes == [(1, 1, size, size)]  # resized to (S, S) for the network
    torch.testing.assert_close(out[0, 0], torch.full(shape, -3.0))
    torch.testing.assert_close(out[0, 1], torch.full(shape, 3.0))


def test_segmentation_2d_same_size_is_exact():
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = SlicewiseInferer(8)(x, seg_net(in_channels=3))
    total = x[0].sum(0)
    torch.testing.assert_close(out[0, 1], total)
    torch.testing.assert_close(out[0, 0], -total)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("size", [8, 16])
def test_segmentation_3d_layout_constant_slices(axis, size):
    shape = SHAPES[axis]
    values = _slice_values(5)
    x = constant_slices(shape, axis, values)
    net = seg_net()
    with torch.no_grad():
        out = SlicewiseInferer(size, axis=axis)(x, net)
    assert out.shape == (1, 2, *shape)  # the input's own layout
    assert net.shapes == [(5, 1, size, size)]
    torch.testing.assert_close(out[0, 1], x[0, 0])
    torch.testing.assert_close(out[0, 0], -x[0, 0])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_segmentation_3d_layout_slice_dependent_network(axis):
    """A network that subtracts each slice's mean: right only if the slices are taken along ``axis``."""
    shape = SHAPES[axis]
    rng = np.random.default_rng(axis)
    volume = rng.normal(size=shape).astype(np.float32)
    others = tuple(d for d in range(3) if d != axis)
    expected = volume - volume.mean(axis=others, keepdims=True)
    with torch.no_grad():
        out = SlicewiseInferer(8, axis=axis)(torch.as_tensor(volume)[None, None], Centre())
    assert out.shape == (1, 2, *shape)
    torch.testing.assert_close(out[0, 1], torch.as_tensor(expected), atol=1e-5, rtol=1e-5)


def test_segmentation_non_square_slices_resized_back():
    shape = (12, 6, 4)  # axis 2: slices of 12 x 6 pixels
    x = constant_slices(shape, 2, [1.0, 2.0, 3.0, 4.0])
    net = seg_net()
    with torch.no_grad():
        out = SlicewiseInferer(16, axis=2, batch_size=3)(x, net)
    assert out.shape == (1, 2, 12, 6, 4)
    assert net.shapes == [(3, 1, 16, 16), (1, 1, 16, 16)]
    torch.testing.assert_close(out[0, 1], x[0, 0])


def test_segmentation_accepts_metatensor():
    x = MetaTensor(constant_slices((8, 8, 3), 2, [1.0, 2.0, 3.0]), affine=torch.eye(4))
    with torch.no_grad():
        out = SlicewiseInferer(8, axis=2)(x, seg_net())
    assert out.shape == (1, 2, 8, 8, 3)
    torch.testing.assert_close(torch.as_tensor(out[0, 1]), torch.as_tensor(x[0, 0]))


# ---------------------------------------------------------------- segmentation: slice subsets


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize(
    "slices, run",
    [
        ([1, 3], [1, 3]),
        ([3, 1, 3], [1, 3]),  # duplicates and order do not matter
        ([0, 5, 99, -1], [0]),  # out-of-range indices are ignored
        ([], []),
        ([-2, 7], []),
        (None, [0, 1, 2, 3, 4]),
    ],
)
def test_segmentation_slice_subset(axis, slices, run):
    shape = SHAPES[axis]
    x = constant_slices(shape, axis, _slice_values(5))
    net = seg_net()
    with torch.no_grad():
        out = SlicewiseInferer(8, axis=axis, slices=slices)(x, net)
    assert out.shape == (1, 2, *shape)
    labels = out[0].argmax(0)
    for k in range(5):
        index = [slice(None)] * 3
        index[axis] = k
        index = tuple(index)
        if k in run:
            assert bool((labels[index] == 1).all()), k
            torch.testing.assert_close(out[0, 1][index], x[0, 0][index])
        else:
            assert bool((labels[index] == 0).all()), k
            assert bool((out[0, 0][index] == 1.0).all()) and bool((out[0, 1][index] == 0.0).all())
    assert sum(s[0] for s in net.shapes) == len(run)  # only the chosen slices were run


@pytest.mark.parametrize("slices, foreground", [([0], True), ([1], False), ([], False), (None, True)])
def test_segmentation_2d_is_slice_0(slices, foreground):
    x = torch.full((1, 1, 10, 10), 2.0)
    with torch.no_grad():
        out = SlicewiseInferer(8, slices=slices)(x, seg_net())
    assert out.shape == (1, 2, 10, 10)
    assert bool((out[0].argmax(0) == int(foreground)).all())


# ---------------------------------------------------------------- batch size


@pytest.mark.parametrize("segmentation", [True, False])
@pytest.mark.parametrize("batch_size", [1, 2, 3, 7])
def test_batch_size_does_not_change_result(segmentation, batch_size):
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(1, 1, 9, 7, 7)).astype(np.float32))
    make = seg_net if segmentation else cls_net
    full_net, small_net = make(), make()
    with torch.no_grad():
        full = SlicewiseInferer(8, axis=0, segmentation=segmentation, batch_size=32)(x, full_net)
        small = SlicewiseInferer(8, axis=0, segmentation=segmentation, batch_size=batch_size)(x, small_net)
    torch.testing.assert_close(small, full, rtol=1e-6, atol=1e-6)
    assert len(full_net.shapes) == 1
    assert [s[0] for s in small_net.shapes] == [min(batch_size, 9 - i) for i in range(0, 9, batch_size)]
    assert len(small_net.shapes) == math.ceil(9 / batch_size)


# ---------------------------------------------------------------- classification


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("size", [8, 12])
def test_classification_3d_all_slices(axis, size):
    values = _slice_values(5)
    x = constant_slices(SHAPES[axis], axis, values)
    net = cls_net()
    with torch.no_grad():
        out = SlicewiseInferer(size, axis=axis, segmentation=False)(x, net)
    expected = torch.tensor([[v, -v, 0.5] for v in values])[None]
    assert out.shape == (1, 5, 3)
    torch.testing.assert_close(out, expected)
    assert net.shapes == [(5, 1, size, size)]


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize(
    "slices, run",
    [([4, 1], [1, 4]), ([2, 2, 0], [0, 2]), ([3, 5, 100, -1], [3]), ([], []), ([9], [])],
)
def test_classification_slice_subset(axis, slices, run):
    values = [10.0, 20.0, 30.0, 40.0, 50.0]
    x = constant_slices(SHAPES[axis], axis, values)
    with torch.no_grad():
        out = SlicewiseInferer(8, axis=axis, segmentation=False, slices=slices)(x, cls_net())
    assert out.shape[:2] == (1, len(run))
    if run:
        expected = torch.tensor([[values[k], -values[k], 0.5] for k in run])[None]
        torch.testing.assert_close(out, expected)
    else:
        assert out.numel() == 0


@pytest.mark.parametrize("shape", [(8, 8), (20, 14)])
def test_classification_2d(shape):
    x = torch.full((1, 1, *shape), 4.0)
    with torch.no_grad():
        out = SlicewiseInferer(8, segmentation=False)(x, cls_net())
    torch.testing.assert_close(out, torch.tensor([[[4.0, -4.0, 0.5]]]))


# ---------------------------------------------------------------- argument checks


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"size": 7}, "size"),
        ({"size": 0}, "size"),
        ({"size": -16}, "size"),
        ({"size": 16, "axis": 3}, "axis"),
        ({"size": 16, "axis": -1}, "axis"),
        ({"size": 16, "batch_size": 0}, "batch_size"),
        ({"size": 16, "batch_size": -4}, "batch_size"),
    ],
)
def test_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        SlicewiseInferer(**kwargs)


@pytest.mark.parametrize("shape", [(1, 8, 8), (8, 8), (1, 1, 8, 8, 8, 2), (2, 1, 8, 8), (2, 1, 8, 8, 4)])
def test_bad_input_shape(shape):
    with pytest.raises(ValueError, match="inputs must have shape"):
        SlicewiseInferer(8)(torch.zeros(shape), seg_net())


class Blob(nn.Module):
    """Segmentation logits (background, foreground): foreground wherever the input is above 0.5 (sharp)."""

    def forward(self, x):
        foreground = (x[:, :1] > 0.5).float() * 20 - 10
        return torch.cat([-foreground, foreground], dim=1)


def _blob_volume(areas, side=32, axis=2):
    """(1, 1, side, side, D) with a square of ``areas[k]`` pixels on slice k along ``axis``."""
    volume = torch.zeros(side, side, len(areas))
    for k, area in enumerate(areas):
        edge = int(math.isqrt(area))
        volume[:edge, :edge, k] = 1.0 if edge * edge == area else 0.0
    return volume.movedim(2, axis)[None, None]


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize(
    "fraction,fires",
    [
        (16 / 1024, [False, True, True, False]),
        (64 / 1024, [False, False, True, False]),
        (1 / 1024, [True, True, True, False]),
    ],
)
def test_slice_score_fires_on_slices_with_that_area_of_foreground(axis, fraction, fires):
    from lib.slicewise import SliceScoreInferer

    inputs = _blob_volume([4, 16, 64, 0], axis=axis)
    log_probabilities = SliceScoreInferer(32, fraction, axis=axis)(inputs, Blob())
    assert log_probabilities.shape == (1, 4, 2)
    probabilities = torch.softmax(log_probabilities[0], dim=-1)
    assert torch.allclose(probabilities.sum(-1), torch.ones(4))
    assert [bool(p > 0.5) for p in probabilities[:, 1]] == fires


def test_slice_score_of_chosen_slices_and_of_a_2d_image_keeps_the_map():
    from lib.slicewise import SliceScoreInferer

    inferer = SliceScoreInferer(32, 16 / 1024, slices=[1, 3, 9])
    scores = torch.softmax(inferer(_blob_volume([64, 64, 0, 64]), Blob())[0], dim=-1)[:, 1]
    assert scores.shape == (2,) and bool(scores[0] > 0.99) and bool(scores[1] > 0.99)  # slices 1 and 3 only
    assert inferer.foreground.shape == (32, 32, 4) and float(inferer.foreground[..., 0].max()) == 0.0  # not run
    flat = SliceScoreInferer(32, 16 / 1024)
    assert flat(_blob_volume([64])[..., 0], Blob()).shape == (1, 1, 2) and flat.foreground.shape == (32, 32)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_slice_score_refuses_an_area_fraction_outside_0_1(fraction):
    from lib.slicewise import SliceScoreInferer

    with pytest.raises(ValueError, match="area_fraction"):
        SliceScoreInferer(32, fraction)
