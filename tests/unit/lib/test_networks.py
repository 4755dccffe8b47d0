"""Tests of lib.networks: JSON-able network specs and build_network."""

import json

import pytest
import torch

from lib.networks import build_network, residual_unet, slice_classifier


def _json_round_trip(spec):
    text = json.dumps(spec)
    again = json.loads(text)
    assert again == spec
    return again


@pytest.mark.parametrize("num_classes", [2, 4])
@pytest.mark.parametrize("widths, size", [((4, 8, 16, 32), 32), ((8, 8, 8, 8), 16)])
def test_slice_classifier_round_trip(num_classes, widths, size):
    spec = slice_classifier(num_classes, widths)
    assert spec["name"] == "ResNet"
    assert spec["args"]["block_inplanes"] == list(widths) and spec["args"]["num_classes"] == num_classes
    assert spec["args"]["spatial_dims"] == 2 and spec["args"]["n_input_channels"] == 1
    net = build_network(_json_round_trip(spec)).eval()
    with torch.no_grad():
        out = net(torch.randn(3, 1, size, size))
    assert out.shape == (3, num_classes)


@pytest.mark.parametrize(
    "spatial_dims, num_classes, widths, shape",
    [
        (2, 2, (4, 8, 16), (2, 1, 16, 16)),
        (2, 3, (4, 8, 16, 32), (1, 1, 24, 16)),
        (3, 2, (4, 8, 16), (1, 1, 16, 12, 8)),
        (3, 3, (2, 4, 8), (2, 1, 8, 8, 8)),
    ],
)
def test_residual_unet_round_trip(spatial_dims, num_classes, widths, shape):
    spec = residual_unet(spatial_dims, num_classes, widths, dropout=0.2)
    args = spec["args"]
    assert spec["name"] == "UNet"
    assert args["spatial_dims"] == spatial_dims and args["in_channels"] == 1 and args["out_channels"] == num_classes
    assert args["channels"] == list(widths) and args["strides"] == [2] * (len(widths) - 1)
    assert args["num_res_units"] == 2 and args["dropout"] == 0.2
    net = build_network(_json_round_trip(spec)).eval()
    with torch.no_grad():
        out = net(torch.randn(*shape))
    assert out.shape == (shape[0], num_classes, *shape[2:])


@pytest.mark.parametrize(
    "spec",
    [slice_classifier(3, (4, 8, 8, 8)), residual_unet(2, 2, (4, 8, 16)), residual_unet(3, 3, (2, 4, 8))],
)
def test_checkpoint_rebuilds_from_spec(spec):
    """A state dict saved from one build loads strictly into a second build of the JSON spec: same outputs."""
    torch.manual_seed(0)
    first = build_network(spec).eval()
    second = build_network(json.loads(json.dumps(spec)))
    second.load_state_dict(first.state_dict(), strict=True)
    second.eval()
    x = torch.randn(1, 1, *([16] * spec["args"].get("spatial_dims", 2)))
    with torch.no_grad():
        torch.testing.assert_close(first(x), second(x))


def test_specs_are_plain_json_types():
    for spec in (slice_classifier(2, (4, 8, 16, 32)), residual_unet(3, 2, (4, 8, 16), dropout=0.0)):
        text = json.dumps(spec, allow_nan=False)
        assert json.loads(text) == spec
        assert isinstance(spec["args"]["block_inplanes" if spec["name"] == "ResNet" else "channels"], list)


@pytest.mark.parametrize(
    "spec",
    [{"name": "DenseNet121"}, {"name": "resnet"}, {"name": "unet", "args": {}}, {"name": None}, {}, {"args": {}}],
)
def test_build_network_unknown_name(spec):
    with pytest.raises(ValueError, match="network name must be one of"):
        build_network(spec)


@pytest.mark.parametrize("num_classes", [1, 0, -2])
def test_slice_classifier_too_few_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        slice_classifier(num_classes, (4, 8, 16, 32))


@pytest.mark.parametrize("num_classes", [1, 0])
def test_residual_unet_too_few_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        residual_unet(2, num_classes, (4, 8, 16))


@pytest.mark.parametrize("spatial_dims", [1, 4, 0])
def test_residual_unet_bad_spatial_dims(spatial_dims):
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        residual_unet(spatial_dims, 2, (4, 8, 16))


@pytest.mark.parametrize("widths", [(), (8,), (8, 16)])
def test_residual_unet_too_few_widths(widths):
    with pytest.raises(ValueError, match="at least 3 levels"):
        residual_unet(3, 2, widths)


@pytest.mark.parametrize("widths", [(8, 16, 32), (8,)])
def test_slice_classifier_too_few_widths(widths):
    with pytest.raises(ValueError, match="widths"):
        build_network(slice_classifier(2, widths))


@pytest.mark.parametrize("stride, first_stage", [(1, 32), (2, 16)])
def test_slice_classifier_stem_stride(stride, first_stage):
    """The 7x7 stem's stride sets the first stage's size (after the max pool): S/2 at stride 1, S/4 at stride 2."""
    spec = slice_classifier(3, (4, 8, 8, 8), stem_stride=stride)
    assert spec["args"]["conv1_t_stride"] == stride
    network = build_network(spec)
    sizes = []
    network.layer1.register_forward_hook(lambda module, inputs, output: sizes.append(output.shape[-1]))
    assert network(torch.zeros(2, 1, 64, 64)).shape == (2, 3)
    assert sizes == [first_stage]


@pytest.mark.parametrize("stride", [0, 3, -1])
def test_slice_classifier_stem_stride_refused(stride):
    with pytest.raises(ValueError, match=f"stem_stride must be 1 or 2, got {stride}"):
        slice_classifier(3, (4, 8, 8, 8), stem_stride=stride)
