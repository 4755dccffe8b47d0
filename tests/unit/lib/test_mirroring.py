"""Test-time mirroring (lib.mirroring) and the mirrors in the 3D training chain (lib.transforms.train_volume_pre)."""

import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import SimpleInferer
from monai.transforms import Compose, RandFlipd

from lib.mirroring import MirrorAveragingInferer, mirror_sets, volume_inferer
from lib.transforms import MIRROR_AXIS_2D, augment_2d, train_volume_pre


@pytest.mark.parametrize(
    "axes, expected",
    [
        ((), [()]),
        ((0,), [(), (0,)]),
        ((0, 2), [(), (0,), (2,), (0, 2)]),
        ((2, 1, 0), [(), (2,), (1,), (0,), (2, 1), (2, 0), (1, 0), (2, 1, 0)]),
    ],
)
def test_mirror_sets_every_combination_identity_first(axes, expected):
    assert mirror_sets(axes) == expected


@pytest.mark.parametrize("axes", [(3,), (-1,), (0, 0), (1, 2, 1)])
def test_mirror_sets_rejects_bad_axes_naming_the_parameter(axes):
    with pytest.raises(ValueError, match="flip_axes"):
        mirror_sets(axes)


def _asymmetric_network():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(1, 3, 3, padding=1), torch.nn.Conv3d(3, 3, 3, padding=1)).eval()


def test_no_axes_is_the_inner_inferer_unchanged():
    network, x = _asymmetric_network(), torch.randn(1, 1, 6, 7, 8)
    with torch.no_grad():
        assert torch.equal(MirrorAveragingInferer(SimpleInferer(), ())(x, network), network(x))


@pytest.mark.parametrize("axes", [(0,), (1, 2), (0, 1, 2)])
def test_answer_is_log_of_the_mean_softmax_over_mirrors_mapped_back(axes):
    network, x = _asymmetric_network(), torch.randn(2, 1, 6, 7, 8)
    with torch.no_grad():
        out = MirrorAveragingInferer(SimpleInferer(), axes)(x, network)
        expected = torch.zeros_like(out)
        for combo in mirror_sets(axes):
            dims = [2 + a for a in combo]
            p = torch.softmax(network(torch.flip(x, dims) if dims else x), 1)
            expected += torch.flip(p, dims) if dims else p
        expected /= len(mirror_sets(axes))
    assert torch.allclose(torch.softmax(out, 1), expected, atol=1e-5)
    assert torch.allclose(out.exp().sum(1), torch.ones(2, 6, 7, 8), atol=1e-5)


@pytest.mark.parametrize("axes", [(0,), (0, 2)])
def test_averaged_answer_is_mirror_equivariant(axes):
    """Averaging over the group of mirrors makes mirroring the input mirror the answer; without mapping each
    mirrored prediction back this fails for an asymmetric network."""
    network, x = _asymmetric_network(), torch.randn(1, 1, 6, 7, 8)
    inferer = MirrorAveragingInferer(SimpleInferer(), axes)
    dims = [2 + a for a in axes]
    with torch.no_grad():
        assert torch.allclose(inferer(torch.flip(x, dims), network), torch.flip(inferer(x, network), dims), atol=1e-5)
        plain = network(x)
        assert not torch.allclose(network(torch.flip(x, dims)), torch.flip(plain, dims), atol=1e-3)


def test_volume_inferer_slides_over_a_larger_volume():
    network = _asymmetric_network()
    with torch.no_grad():
        out = volume_inferer((8, 8, 8), (0,))(torch.randn(1, 1, 20, 12, 9), network)
    assert out.shape == (1, 3, 20, 12, 9)


def test_training_chain_mirrors_image_and_label_together(tmp_path):
    import nibabel as nib
    import numpy as np

    image = np.ones((16, 16, 16), np.float32)
    image[2:6, 4:12, 4:12] = 5.0  # one bright block, off-centre along axis 0
    for name, array in (("image", image), ("label", (image > 1).astype(np.uint8))):
        nib.save(nib.Nifti1Image(array, np.eye(4)), str(tmp_path / f"{name}.nii.gz"))
    chain = train_volume_pre((1.0, 1.0, 1.0), (16, 16, 16), augment=True, samples=1, flip_axes=(0,))
    flips = [t for t in chain if isinstance(t, RandFlipd)]
    assert [t.flipper.spatial_axis for t in flips] == [0] and set(flips[0].keys) == {"image", "label"}
    sides = set()
    for seed in range(16):
        item = {"image": str(tmp_path / "image.nii.gz"), "label": str(tmp_path / "label.nii.gz")}
        out = Compose(chain).set_random_state(seed)(item)[0]
        label_side = float(torch.nonzero(out["label"][0] > 0)[:, 0].float().mean()) > 7.5
        bright = out["image"][0] > out["image"][0].mean()
        assert (float(torch.nonzero(bright)[:, 0].float().mean()) > 7.5) == label_side  # the label follows the image
        sides.add(label_side)
    assert sides == {False, True}  # the block's own side and its mirror both appear


def test_hippocampus_declares_its_mirrors_for_training_serving_and_the_card(tmp_path):
    from lib.configs.hippocampus import HippocampusConfig

    config = HippocampusConfig()
    config.init("hippocampus", str(tmp_path), {"shipped_models": "none"})
    assert config.flip_axes == (0,) and config.card()["input"]["mirrored_axes"] == [0]
    for inferer in (config.infer().inferer(), config.trainer().val_inferer(None)):
        # by name: tests that load the app through MONAI Label may have imported lib.mirroring a second time
        assert type(inferer).__name__ == "MirrorAveragingInferer" and inferer.mirrors == [(), (0,)]
    assert any(type(t).__name__ == "RandFlipd" for t in config.trainer().train_pre_transforms(None))


class RowMeanClassifier(torch.nn.Module):
    """Class logits of a (N, 1, H, W) batch from the mean of its first rows along axis 0 versus its last ones: a
    left-right mirror swaps them."""

    def forward(self, x):
        half = x.shape[2] // 2
        return torch.stack([x[:, 0, :half].mean((1, 2)), x[:, 0, half:].mean((1, 2))], dim=-1)[None]


def test_class_probabilities_are_averaged_over_the_image_and_its_mirror_without_mapping_back():
    image = torch.zeros(1, 1, 8, 8)
    image[0, 0, :4] = 2.0  # left half bright: class 0 without the mirror, class 1 on the mirror
    network = RowMeanClassifier()
    plain = torch.softmax(network(image), -1)
    mirrored = torch.softmax(network(torch.flip(image, [2])), -1)
    answer = MirrorAveragingInferer(lambda x, net: net(x), (0,), segmentation=False)(image, network)
    assert answer.shape == plain.shape == (1, 1, 2)
    torch.testing.assert_close(torch.softmax(answer, -1), (plain + mirrored) / 2)
    torch.testing.assert_close(torch.softmax(answer, -1), torch.full((1, 1, 2), 0.5))  # symmetric by construction


@pytest.mark.parametrize(
    "task, declared",
    [("dementia_stage", True), ("tumor_type", False), ("sequence", True), ("tumor_gate", False)],
)
def test_a_classifier_mirrors_at_inference_only_where_its_config_declares_it(tmp_path, task, declared):
    from main import discover_configs

    for override, expected in ((None, declared), ("false", False), ("true", True)):
        config = discover_configs()[task]()
        conf = {"shipped_models": "none"} | ({f"{task}_test_time_mirroring": override} if override else {})
        config.init(task, str(tmp_path), conf)
        infer = config.infer()
        data = {"image": MetaTensor(torch.zeros(1, 16, 16))}
        inferer = infer.inferer(data)
        assert (type(inferer).__name__ == "MirrorAveragingInferer") is expected
        if expected:  # the mirror of the training augmentation (lib.transforms.augment_2d)
            assert inferer.mirrors == [(), (MIRROR_AXIS_2D,)]
            flips = [t for t in augment_2d(["image"], ["bilinear"]) if type(t).__name__ == "RandFlipd"]
            assert [f.flipper.spatial_axis for f in flips] == [MIRROR_AXIS_2D]
        assert ("test_time_mirroring" in config.card()) is expected
