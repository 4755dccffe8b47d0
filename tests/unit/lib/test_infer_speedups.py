"""Speed changes of the infer path that must not change results: channels-last 2D networks on the CPU in
lib.slicewise, and one shared read/pre-processing of the image for the stages of tumor_pipeline."""

import copy
import pathlib

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImaged, NormalizeIntensityd
from torch import nn

from lib.networks import build_network, slice_classifier
from lib.slicewise import SlicewiseInferer, channels_last_on_cpu


def test_channels_last_on_cpu_converts_4d_weights_once():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
    assert channels_last_on_cpu(net) is True
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in net.parameters() if p.dim() == 4)
    weights = [p.data_ptr() for p in net.parameters()]
    assert channels_last_on_cpu(net) is True and [p.data_ptr() for p in net.parameters()] == weights  # no second copy


@pytest.mark.parametrize("network", [lambda x: x, nn.Linear(3, 2), nn.Sequential(nn.Flatten())])
def test_channels_last_on_cpu_leaves_other_networks_alone(network):
    assert channels_last_on_cpu(network) is False


@pytest.mark.parametrize("segmentation", [False, True])
def test_slicewise_results_agree_with_the_default_layout(segmentation):
    torch.manual_seed(0)
    if segmentation:
        from lib.networks import residual_unet

        network = build_network(residual_unet(2, 2, (8, 16, 32))).eval()
    else:
        network = build_network(slice_classifier(3, (8, 16, 32, 64))).eval()
    plain = copy.deepcopy(network)
    volume = MetaTensor(torch.rand(1, 1, 40, 36, 5), affine=torch.eye(4))
    with torch.no_grad():
        fast = SlicewiseInferer(32, segmentation=segmentation)(volume, network)
        # the default layout, slice by slice, by hand
        stack = volume[0].as_subclass(torch.Tensor).movedim(-1, 0)
        batch = torch.nn.functional.interpolate(stack, size=(32, 32), mode="bilinear")
        expected = plain(batch)
        if segmentation:
            expected = torch.nn.functional.interpolate(expected, size=(40, 36), mode="bilinear").movedim(0, -1)[None]
        else:
            expected = expected[None]
    assert any(
        p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in network.parameters()
    )
    assert fast.shape == expected.shape
    assert torch.allclose(fast.as_subclass(torch.Tensor), expected, atol=1e-5)


def test_chain_fingerprint_tells_settings_apart():
    from lib.infers.tumor_pipeline import chain_fingerprint
    from lib.transforms import infer_slices_pre

    assert chain_fingerprint(infer_slices_pre()) == chain_fingerprint(infer_slices_pre())
    assert chain_fingerprint([NormalizeIntensityd(keys="image", nonzero=True)]) != chain_fingerprint(
        [NormalizeIntensityd(keys="image", nonzero=False)]
    )
    assert chain_fingerprint(infer_slices_pre()) != chain_fingerprint(infer_slices_pre()[:-1])


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from main import discover_configs, discover_pipelines

    model_dir = tmp_path_factory.mktemp("model")
    conf = {"tumor_seg_image_size": "64", "tumor_gate_image_size": "32", "tumor_type_image_size": "32"}
    declared = discover_pipelines()["tumor_pipeline"]  # built as the server builds it, from its declaration
    stages = {}
    for name in declared.stages():
        config = discover_configs()[name]()
        config.init(name, str(model_dir), conf, None)
        pathlib.Path(config.path).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": config.network.state_dict()}, config.path)
        stages[name] = config.infer()
    return declared.infer_in("tumor_pipeline", stages)


def _read_label(path):
    if path.endswith(".png"):
        from PIL import Image

        return np.asarray(Image.open(path))
    return np.asarray(nib.load(path).dataobj)


@pytest.mark.parametrize("image", ["synth01_flair.nii.gz", "synth_slice01.png"])
@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_pipeline_reads_once_and_answers_as_stage_by_stage(pipeline, sample_template, monkeypatch, image, threshold):
    import lib.infers.tumor_pipeline as module

    reads = []
    original = LoadImaged.__call__

    def counting(self, data, *args, **kwargs):
        reads.append(data.get("image") if isinstance(data.get("image"), str) else "?")
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(LoadImaged, "__call__", counting)
    request = {
        "model": "tumor_pipeline",
        "image": str(sample_template / image),
        "device": "cpu",
        "threshold": threshold,
    }
    shared_file, shared = pipeline(dict(request))
    shared_reads = len(reads)
    distinct = iter(range(10**6))
    monkeypatch.setattr(module, "chain_fingerprint", lambda chain: next(distinct))  # chains "differ": no sharing
    reads.clear()
    own_file, own = pipeline(dict(request))
    stages = 2 + bool(own["fired_slices"])
    assert shared_reads == 1 and len(reads) == stages
    assert np.array_equal(_read_label(shared_file), _read_label(own_file))
    drop = lambda r: {k: v for k, v in r.items() if k not in ("latencies", "gate")}  # noqa: E731
    assert drop(shared) == drop(own)
    assert {k: v for k, v in shared["gate"].items() if k != "latencies"} == {
        k: v for k, v in own["gate"].items() if k != "latencies"
    }
    latencies = shared["latencies"]
    assert {"gate", "segmentation", "pre", "infer", "post", "write", "total"} <= set(latencies)
    assert "LoadImaged" in latencies["transform"]["pre"] and ("type" in latencies) == bool(shared["fired_slices"])
