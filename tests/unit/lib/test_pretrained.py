"""Starting a classifier from a ResNet state dict on disk (``--conf <task>_pretrained``): lib.networks and the
classifier config/trainer. The state dicts are written by the tests (torchvision and MONAI, random weights)."""

import json
import pathlib

import pytest
import torch
import torchvision
from monai.networks.nets import ResNet

from lib.networks import build_network, load_pretrained, pretrained_classifier, slice_classifier

APP = pathlib.Path(__file__).resolve().parents[3] / "apps" / "mri_app"


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory):
    """(path, state dict) of a torchvision resnet18 (random weights, 1000 classes, RGB conv1)."""
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(state, path)
    return path, state


def _monai_resnet(tmp_path, channels: int, classes: int):
    torch.manual_seed(1)
    net = ResNet(
        block="basic",
        layers=[1, 1, 1, 1],
        block_inplanes=[8, 16, 32, 64],
        spatial_dims=2,
        n_input_channels=channels,
        num_classes=classes,
    )
    path = tmp_path / f"monai_{channels}_{classes}.pt"
    torch.save(net.state_dict(), path)
    return path, net.state_dict()


def test_torchvision_resnet18_layout_conv1_summed_and_fc_dropped(resnet18):
    path, state = resnet18
    spec = pretrained_classifier(4, path)
    args = spec["args"]
    assert args["block_inplanes"] == [64, 128, 256, 512] and args["layers"] == [2, 2, 2, 2]
    assert args["bias_downsample"] is False and args["n_input_channels"] == 1 and args["num_classes"] == 4
    assert json.loads(json.dumps(spec)) == spec
    network = build_network(spec)
    fresh_fc = network.fc.weight.detach().clone()
    report = load_pretrained(network, path)
    assert torch.equal(network.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    assert network.conv1.weight.shape == (64, 1, 7, 7)
    own = network.state_dict()
    for key in ("layer1.0.conv1.weight", "layer3.1.bn2.running_var", "layer4.0.downsample.0.weight", "bn1.bias"):
        assert torch.equal(own[key], state[key]), key
    assert torch.equal(network.fc.weight, fresh_fc)  # 1000-class head left out, ours kept
    assert [d.split()[0] for d in report["dropped"]] == ["fc.weight", "fc.bias"] and report["adapted"]
    assert network(torch.randn(2, 1, 64, 64)).shape == (2, 4)


def test_torchvision_resnet34_gives_its_block_counts(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    spec = pretrained_classifier(3, path)
    assert spec["args"]["layers"] == [3, 4, 6, 3]
    network = build_network(spec)
    load_pretrained(network, path)


def test_monai_state_dict_loads_with_its_shortcut_bias(tmp_path):
    path, state = _monai_resnet(tmp_path, channels=3, classes=7)
    spec = pretrained_classifier(4, path)
    assert spec["args"]["block_inplanes"] == [8, 16, 32, 64] and spec["args"]["layers"] == [1, 1, 1, 1]
    assert spec["args"]["bias_downsample"] is True
    network = build_network(spec)
    load_pretrained(network, path)
    assert torch.equal(network.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(network.state_dict()["layer2.0.downsample.0.bias"], state["layer2.0.downsample.0.bias"])
    # a one-channel, four-class MONAI checkpoint fits as it is: nothing adapted, the head kept
    same, same_state = _monai_resnet(tmp_path, channels=1, classes=4)
    network = build_network(pretrained_classifier(4, same))
    report = load_pretrained(network, same)
    assert report["adapted"] == [] and report["dropped"] == []
    assert torch.equal(network.fc.weight, same_state["fc.weight"]) and torch.equal(
        network.conv1.weight, same_state["conv1.weight"]
    )


def test_wrapped_state_dicts_are_accepted(tmp_path, resnet18):
    path, state = resnet18
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, wrapped)
    network = build_network(pretrained_classifier(2, wrapped))
    load_pretrained(network, wrapped)
    assert torch.equal(network.layer2[0].conv1.weight, state["layer2.0.conv1.weight"])


def test_files_that_do_not_fit_are_named(tmp_path, resnet18):
    path, _ = resnet18
    with pytest.raises(ValueError, match="does not fit") as error:
        load_pretrained(build_network(slice_classifier(4, (16, 32, 64, 128))), path)
    assert str(path) in str(error.value) and "layer1.0.conv1.weight" in str(error.value)
    deep = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), deep)
    with pytest.raises(ValueError, match="bottleneck"):
        pretrained_classifier(4, deep)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable") as error:
        pretrained_classifier(4, junk)
    assert str(junk) in str(error.value)
    with pytest.raises(ValueError, match="no such file"):
        pretrained_classifier(4, tmp_path / "absent.pt")


def _config(tmp_path, conf):
    from lib.configs.tumor_type import TumorTypeConfig

    config = TumorTypeConfig()
    config.init("tumor_type", str(tmp_path / "model"), conf, None)
    return config


def test_config_builds_the_pretrained_layout_and_its_trainer_starts_from_it(tmp_path, resnet18):
    path, state = resnet18
    config = _config(tmp_path, {"tumor_type_pretrained": str(path)})
    assert config.network_spec["args"]["block_inplanes"] == [64, 128, 256, 512]
    assert config.card()["pretrained"]["path"] == str(path)
    network = config.trainer().network(None)  # what MONAI Label's trainer builds before the first iteration
    assert torch.equal(network.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(network.state_dict()["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    scratch = _config(tmp_path, {})
    assert scratch.network_spec["args"]["block_inplanes"] == [16, 32, 64, 128] and "pretrained" not in scratch.card()
    assert scratch.trainer().network(None).conv1.weight.shape == (16, 1, 7, 7)


def test_config_refuses_a_missing_or_unfitting_file(tmp_path, resnet18):
    missing = tmp_path / "nowhere" / "resnet18.pth"
    with pytest.raises(ValueError, match="--conf tumor_type_pretrained") as error:
        _config(tmp_path, {"tumor_type_pretrained": str(missing)})
    assert str(missing) in str(error.value)
    deep = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), deep)
    with pytest.raises(ValueError, match="--conf tumor_type_pretrained .*bottleneck"):
        _config(tmp_path, {"tumor_type_pretrained": str(deep)})
    with pytest.raises(ValueError, match="tumor_type_widths"):
        _config(tmp_path, {"tumor_type_pretrained": str(resnet18[0]), "tumor_type_widths": "16,32,64,128"})


def test_one_epoch_at_zero_learning_rate_publishes_the_pretrained_weights(tmp_path, datastore_dir, resnet18):
    """Training really starts from the file: with learning rate 0 (AdamW's decay is lr-scaled) the published
    checkpoint still holds the pretrained convolutions after one epoch on the sample data."""
    from main import MRIApp

    path, state = resnet18
    models = tmp_path / "models"
    conf = {
        "models": "tumor_type",
        "model_dir": str(models),
        "tumor_type_pretrained": str(path),
        "tumor_type_image_size": "32",
    }
    app = MRIApp(str(APP), str(datastore_dir), conf)
    app.train(
        {"model": "tumor_type", "max_epochs": 1, "learning_rate": 0.0, "name": "pretrained", "train_batch_size": 8}
    )
    checkpoint = torch.load(models / "tumor_type" / "model.pt", map_location="cpu", weights_only=True)
    weights = checkpoint.get("model", checkpoint)
    assert torch.equal(weights["conv1.weight"], state["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(weights["layer3.0.conv1.weight"], state["layer3.0.conv1.weight"])
    card = json.loads((models / "tumor_type" / "model.json").read_text())
    assert card["pretrained"]["path"] == str(path) and card["network"]["args"]["block_inplanes"] == [64, 128, 256, 512]
