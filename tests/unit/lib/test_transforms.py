"""Tests of lib.transforms: axial axis, grayscale, slice selection, head slices, label volumes, chains."""

import math

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose
from PIL import Image

from lib.transforms import (
    LabelVolumesd,
    ToGrayscaled,
    axial_axis,
    brain_slices,
    infer_slices_pre,
    measure_label_file,
    nnunet_augment_3d,
    train_volume_pre,
)


def _affine(columns, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    """4x4 affine whose voxel axis j points along world direction ``columns[j]`` with ``spacing[j]`` mm."""
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(columns, dtype=float).T * np.asarray(spacing, dtype=float)
    affine[:3, 3] = origin
    return affine


def _rot_x(degrees, spacing=(1.0, 1.0, 1.0)):
    t = math.radians(degrees)
    return _affine([(1, 0, 0), (0, math.cos(t), math.sin(t)), (0, -math.sin(t), math.cos(t))], spacing)


# ---------------------------------------------------------------- axial_axis

AXIAL_CASES = [
    ("identity", np.eye(4), 2),
    ("diagonal spacing", np.diag([2.0, 2.0, 3.0, 1.0]), 2),
    ("all axes flipped", np.diag([-1.0, -1.0, -1.0, 1.0]), 2),
    ("S is voxel axis 0", _affine([(0, 0, 1), (0, 1, 0), (1, 0, 0)]), 0),
    ("S is voxel axis 0, negative spacing", _affine([(0, 0, 1), (0, 1, 0), (1, 0, 0)], (-3.0, 1.0, 1.0)), 0),
    ("S is voxel axis 1 (coronal stack)", _affine([(1, 0, 0), (0, 0, 1), (0, 1, 0)], (0.9, -4.0, 0.9)), 1),
    ("S is voxel axis 1, inferior-pointing", _affine([(-1, 0, 0), (0, 0, -1), (0, -1, 0)], (1.0, 5.0, 1.0)), 1),
    ("oblique 20 deg about x", _rot_x(20), 2),
    ("oblique 70 deg about x", _rot_x(70), 1),
    # spacing must not bias the choice: 5 mm along axis 2 would win if columns were not normalised
    ("oblique 50 deg, thick slices", _rot_x(50, (1.0, 1.0, 5.0)), 1),
    ("oblique 40 deg, thick slices", _rot_x(40, (1.0, 5.0, 1.0)), 2),
    ("3x3 matrix (2D)", np.eye(3), 2),
]


@pytest.mark.parametrize("name, affine, expected", AXIAL_CASES, ids=[c[0] for c in AXIAL_CASES])
def test_axial_axis(name, affine, expected):
    assert axial_axis(affine) == expected
    assert axial_axis(torch.as_tensor(affine)) == expected


# ---------------------------------------------------------------- ToGrayscaled


def test_grayscale_one_channel_unchanged():
    img = torch.arange(20.0).reshape(1, 4, 5)
    out = ToGrayscaled(keys="image")({"image": img, "other": 1})
    assert out["image"] is img
    assert out["other"] == 1


@pytest.mark.parametrize("channels", [3, 4])
def test_grayscale_equal_channels_keep_first(channels):
    gray = torch.rand(1, 4, 5)
    img = gray.repeat(channels, 1, 1)
    if channels == 4:
        img[3] = 255.0  # alpha differs from RGB: still a grayscale picture
    out = ToGrayscaled(keys="image")({"image": img})["image"]
    assert out.shape == (1, 4, 5)
    assert torch.equal(out, gray)


@pytest.mark.parametrize("channels", [3, 4])
def test_grayscale_colour_uses_bt601_luma(channels):
    img = torch.zeros(channels, 2, 3)
    img[0], img[1], img[2] = 100.0, 50.0, 200.0  # 0.299*100 + 0.587*50 + 0.114*200 = 82.05
    img[0, 1, 2], img[1, 1, 2], img[2, 1, 2] = 255.0, 0.0, 0.0  # pure red: 0.299*255 = 76.245
    if channels == 4:
        img[3] = 255.0
    out = ToGrayscaled(keys="image")({"image": img})["image"]
    expected = torch.full((1, 2, 3), 82.05)
    expected[0, 1, 2] = 76.245
    assert out.shape == (1, 2, 3)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-4)


def test_grayscale_two_channels_keep_first():
    img = torch.stack([torch.ones(3, 3), torch.zeros(3, 3)])
    out = ToGrayscaled(keys="image")({"image": img})["image"]
    assert torch.equal(out, torch.ones(1, 3, 3))


@pytest.mark.parametrize("equal", [True, False])
def test_grayscale_keeps_metatensor_meta(equal):
    affine = torch.tensor([[0.5, 0, 0, 10], [0, 0.7, 0, -3], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float64)
    data = torch.rand(3, 4, 5)
    if equal:
        data = data[:1].repeat(3, 1, 1)
    img = MetaTensor(data, affine=affine, meta={"filename_or_obj": "slice.png"})
    out = ToGrayscaled(keys="image")({"image": img})["image"]
    assert isinstance(out, MetaTensor)
    assert out.shape == (1, 4, 5)
    torch.testing.assert_close(out.affine, affine)
    assert out.meta["filename_or_obj"] == "slice.png"


# ---------------------------------------------------------------- brain_slices

# head area per slice along the slice axis (a centred square of side s): 0 outside slices 2..9
_SIDES = [0, 0, 2, 4, 8, 8, 8, 8, 6, 2, 0, 0]  # areas 4, 16, 64, 64, 64, 64, 36, 4


def _head_volume(axis):
    rng = np.random.default_rng(0)
    vol = np.zeros((12, 12, 12), np.float32)
    for k, side in enumerate(_SIDES):
        lo = 6 - side // 2
        vol[lo : lo + side, lo : lo + side, k] = 100.0 + rng.normal(0.0, 3.0, (side, side))
    # faint noise (air) in the empty slices: non-zero but far below the head threshold
    for k in (0, 1, 10, 11):
        vol[rng.integers(0, 12, 5), rng.integers(0, 12, 5), k] = rng.uniform(1.0, 3.0, 5)
    vol = np.moveaxis(vol, 2, axis)
    return torch.as_tensor(vol)[None]


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize(
    "fraction, expected",
    [
        (0.5, [4, 5, 6, 7, 8]),  # area >= 32
        (0.2, [3, 4, 5, 6, 7, 8]),  # area >= 12.8
        (0.0, list(range(12))),  # area >= 0: every slice
        (1.0, [4, 5, 6, 7]),  # the largest only
    ],
)
def test_brain_slices(axis, fraction, expected):
    assert brain_slices(_head_volume(axis), axis, fraction) == expected


def test_brain_slices_negative_values_zscored():
    """A z-scored volume (negative values inside the head) still gives the head slices."""
    vol = _head_volume(2)
    head = vol != 0
    vol[head] = (vol[head] - vol[head].mean()) / vol[head].std()
    assert brain_slices(vol, 2, 0.5) == [4, 5, 6, 7, 8]


@pytest.mark.parametrize("axis, depth", [(0, 3), (1, 4), (2, 5)])
def test_brain_slices_empty_volume_gives_all(axis, depth):
    assert brain_slices(torch.zeros(1, 3, 4, 5), axis, 0.5) == list(range(depth))


# ---------------------------------------------------------------- LabelVolumesd

LABELS = {"background": 0, "anterior": 1, "posterior": 2}


def _label_map():
    """(10, 8, 6) map: label 1 = 2x2x2 voxels at x index 7..8, label 2 = 3x2x1 voxels at x index 0..2."""
    label = np.zeros((10, 8, 6), np.uint8)
    label[7:9, 2:4, 1:3] = 1
    label[0:3, 5:7, 4] = 2
    return label


@pytest.mark.parametrize(
    "sx, origin, right, left",
    [
        (2.0, (-9.0, -7.0, -7.5), 96.0, 72.0),  # +x spacing: high x index is the patient's right
        (2.0, (100.0, 0.0, 0.0), 96.0, 72.0),  # origin does not matter (midline = centre of the field of view)
        (-2.0, (9.0, -7.0, -7.5), 72.0, 96.0),  # x flipped: high x index is the patient's left
    ],
)
@pytest.mark.parametrize("channel_first", [False, True])
def test_label_volumes_3d(sx, origin, right, left, channel_first):
    affine = np.diag([sx, 2.0, 3.0, 1.0])
    affine[:3, 3] = origin
    label = torch.as_tensor(_label_map())
    if channel_first:
        label = label[None]
    data = {"pred": label, "pred_meta_dict": {"affine": torch.as_tensor(affine)}, "result": {"keep": 1}}
    out = LabelVolumesd(keys="pred", labels=LABELS)(data)
    m = out["result"]["measurements"]
    assert out["result"]["keep"] == 1
    # voxel = 2 * 2 * 3 = 12 mm3; label 1: 8 voxels, label 2: 6 voxels
    assert m["voxel_mm3"] == 12.0
    assert m["mm3"] == {"background": 480 * 12.0 - 168.0, "anterior": 96.0, "posterior": 72.0}
    assert m["spacing_from_file"] is True
    assert m["right_mm3"] == right and m["left_mm3"] == left
    assert "mm2" not in m


def test_label_volumes_3d_only_foreground_labels():
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    data = {"pred": torch.as_tensor(_label_map()), "pred_meta_dict": {"affine": affine}}
    m = LabelVolumesd(keys="pred", labels={"anterior": 1, "posterior": 2})(data)["result"]["measurements"]
    assert m["mm3"] == {"anterior": 96.0, "posterior": 72.0}
    assert m["total_mm3"] == 168.0
    assert m["right_mm3"] + m["left_mm3"] == 168.0


@pytest.mark.parametrize("meta", [None, {}, {"affine": np.eye(3)}])
def test_label_volumes_2d(meta):
    label = np.zeros((6, 5), np.uint8)
    label[1:3, 1:4] = 1  # 6 pixels
    label[5, 0] = 2  # 1 pixel
    data = {"pred": torch.as_tensor(label)[None]}
    if meta is not None:
        data["pred_meta_dict"] = meta
    m = LabelVolumesd(keys="pred", labels={"tumor": 1, "edema": 2})(data)["result"]["measurements"]
    assert m["mm2"] == {"tumor": 6.0, "edema": 1.0}
    assert m["total_mm2"] == 7.0
    assert m["voxel_mm2"] == 1.0
    assert m["spacing_from_file"] is False
    assert "right_mm3" not in m and "mm3" not in m


def test_label_volumes_3d_without_affine_assumes_1mm():
    m = LabelVolumesd(keys="pred", labels={"a": 1, "p": 2})({"pred": torch.as_tensor(_label_map())})["result"][
        "measurements"
    ]
    assert m["mm3"] == {"a": 8.0, "p": 6.0}
    assert m["spacing_from_file"] is False
    assert "right_mm3" not in m


# ---------------------------------------------------------------- chains on real files


def _write_nifti(path, array, spacing=(2.0, 2.0, 3.0)):
    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), str(path))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("chains")
    rng = np.random.default_rng(1)
    vol = np.zeros((20, 10, 8), np.float32)
    vol[2:18, 2:8, 1:7] = 100.0 + rng.normal(0.0, 5.0, (16, 6, 6))
    mask = np.zeros((20, 10, 8), np.uint8)
    mask[8:12, 4:6, 3] = 2  # a multi-label value: binarised to 1
    gray = (rng.random((24, 30)) * 255).astype(np.uint8)
    colour = (rng.random((24, 30, 3)) * 255).astype(np.uint8)
    png_mask = np.zeros((24, 30), np.uint8)
    png_mask[5:15, 10:20] = 255
    Image.fromarray(gray, "L").save(d / "gray.png")
    Image.fromarray(colour, "RGB").save(d / "colour.png")
    Image.fromarray(png_mask, "L").save(d / "mask.png")
    return {
        "vol": _write_nifti(d / "vol.nii.gz", vol),
        "mask": _write_nifti(d / "mask.nii.gz", mask),
        "gray": str(d / "gray.png"),
        "colour": str(d / "colour.png"),
        "png_mask": str(d / "mask.png"),
    }


@pytest.mark.parametrize("image, shape", [("vol", (1, 20, 10, 8)), ("gray", (1, 30, 24)), ("colour", (1, 30, 24))])
def test_infer_slices_pre(files, image, shape):
    chain = Compose(infer_slices_pre())
    out = chain({"image": files[image]})
    img = out["image"]
    assert isinstance(img, MetaTensor)
    assert img.shape == shape and img.dtype == torch.float32
    # z-score over non-zero voxels
    nonzero = img[img != 0]
    assert float(nonzero.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(nonzero.std(unbiased=False)) == pytest.approx(1.0, abs=1e-3)
    assert torch.equal(img, chain({"image": files[image]})["image"])
    if image == "vol":
        torch.testing.assert_close(img.affine, torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0], dtype=torch.float64)))


@pytest.mark.parametrize(
    "spacing, roi, shape",
    [
        ((2.0, 2.0, 3.0), (16, 16, 16), (1, 24, 16, 16)),  # (20,10,8) -> pad to roi (20,16,16) -> multiple of 8
        ((4.0, 2.0, 3.0), (8, 8, 8), (1, 16, 16, 8)),  # (10,10,8) -> multiple of 8
    ],
)
def test_train_volume_pre_no_augment(files, spacing, roi, shape):
    chain = Compose(train_volume_pre(spacing, roi, augment=False))
    item = {"image": files["vol"], "label": files["mask"]}
    out = chain(dict(item))
    assert out["image"].shape == shape and out["label"].shape == shape
    assert out["image"].dtype == torch.float32 and out["label"].dtype == torch.float32
    assert set(out["label"].unique().tolist()) == {0.0, 2.0}  # nearest resampling keeps label values
    again = chain(dict(item))
    assert torch.equal(out["image"], again["image"]) and torch.equal(out["label"], again["label"])


@pytest.mark.parametrize("samples", [1, 3])
def test_train_volume_pre_augment_gives_patches(files, samples):
    chain = Compose(train_volume_pre((2.0, 2.0, 3.0), (8, 8, 8), augment=True, samples=samples))
    out = chain({"image": files["vol"], "label": files["mask"]})
    assert isinstance(out, list) and len(out) == samples
    for patch in out:
        assert patch["image"].shape == (1, 8, 8, 8) and patch["label"].shape == (1, 8, 8, 8)


class _BrightIsTumor(torch.nn.Module):
    """Stand-in segmentation network: foreground logit 10 (x - 0.5), bright voxels are tumor."""

    def forward(self, x):
        return torch.cat([torch.zeros_like(x), 10 * (x - 0.5)], dim=1)


def test_a_label_file_measures_as_the_infer_measured_its_answer(tmp_path):
    """The infer's answer, saved and measured again (as a final label is for its DICOM SR), gives the infer's JSON
    ``measurements`` exactly, on an oblique anisotropic grid with two lesions."""
    import os

    import SimpleITK as sitk

    from lib.infers.segmentation import SliceSegmentationInfer

    volume = np.full((40, 36, 10), 0.2, np.float32)
    volume[4:20, 6:14, 2:7] = 1.0
    volume[28:34, 24:30, 5:8] = 1.0
    turn = np.array([[math.cos(0.3), -math.sin(0.3), 0.0], [math.sin(0.3), math.cos(0.3), 0.0], [0.0, 0.0, 1.0]])
    image_path = tmp_path / "oblique.nii.gz"
    nib.save(nib.Nifti1Image(volume, _affine(turn.T, spacing=(0.9, 1.1, 3.0), origin=(-20, 5, 7))), image_path)
    infer = SliceSegmentationInfer(
        str(tmp_path / "absent.pt"), _BrightIsTumor(), {"tumor": 1}, "stand-in", size=32, lesions="tumor"
    )
    answer, result = infer({"image": str(image_path), "device": "cpu", "result_extension": ".nii.gz"})
    try:
        assert result["measurements"]["lesions"]["components"] == 2
        measured = measure_label_file(str(image_path), answer, {"tumor": 1}, lesions="tumor")
        assert measured == result["measurements"]
        edited = sitk.ReadImage(answer)
        array = sitk.GetArrayFromImage(edited)
        array[:, :, :] = 0  # a correction that removes everything
        corrected = sitk.GetImageFromArray(array)
        corrected.CopyInformation(edited)
        sitk.WriteImage(corrected, str(tmp_path / "corrected.nii.gz"))
        emptied = measure_label_file(str(image_path), str(tmp_path / "corrected.nii.gz"), {"tumor": 1}, "tumor")
        assert emptied["mm3"] == {"tumor": 0.0} and emptied["lesions"]["components"] == 0
    finally:
        os.remove(answer)


def test_measure_label_file_refuses_a_label_of_another_size_or_an_unknown_lesions_label(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), np.eye(4)), tmp_path / "image.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3), np.uint8), np.eye(4)), tmp_path / "label.nii.gz")
    with pytest.raises(ValueError, match="size"):
        measure_label_file(str(tmp_path / "image.nii.gz"), str(tmp_path / "label.nii.gz"), {"tumor": 1})
    with pytest.raises(ValueError, match="lesions must name one of the labels"):
        measure_label_file(str(tmp_path / "image.nii.gz"), str(tmp_path / "image.nii.gz"), {"tumor": 1}, "edema")


def _labelled_cube(size: int = 24):
    label = torch.zeros(1, size, size, size)
    label[0, 6:18, 8:16, 5:19] = 1
    label[0, 10:14, 10:14, 10:14] = 2
    return torch.randn(1, size, size, size) + 2 * label, label


@pytest.mark.parametrize("keys", [("image", "label"), ("image",)])
def test_nnunet_augment_3d_keeps_shape_and_label_values(keys):
    from monai.utils import set_determinism

    set_determinism(0)
    try:
        chain = Compose(nnunet_augment_3d(keys))
        image, label = _labelled_cube()
        changed = 0
        for _ in range(30):
            out = chain({"image": image.clone(), "label": label.clone()})
            assert out["image"].shape == image.shape and out["label"].shape == label.shape
            assert set(torch.as_tensor(out["label"]).unique().tolist()) <= {0.0, 1.0, 2.0}
            if "label" not in keys:
                assert torch.equal(torch.as_tensor(out["label"]), label)  # not named: left alone
            changed += not torch.equal(torch.as_tensor(out["image"]), image)
        assert changed >= 15  # about 80% of patches get at least one change at nnU-Net's probabilities
    finally:
        set_determinism(None)


def test_nnunet_augment_3d_moves_the_label_with_the_image():
    """Spatial changes move image and label together: the bright block stays under its label."""
    from monai.utils import set_determinism

    set_determinism(1)
    try:
        spatial = Compose(nnunet_augment_3d()[:2])  # rotation and scaling
        image, label = _labelled_cube()
        image = 10 * (label > 0).float()  # noise-free: the image is its label's foreground
        moved = 0
        for _ in range(40):
            out = spatial({"image": image.clone(), "label": label.clone()})
            fg = torch.as_tensor(out["label"]) > 0
            bright = torch.as_tensor(out["image"]) > 5
            moved += not torch.equal(fg, label > 0)
            assert (fg & bright).sum() >= 0.9 * fg.sum()
        assert moved > 0
    finally:
        set_determinism(None)


def test_nnunet_augment_3d_rejects_no_keys_naming_the_parameter():
    with pytest.raises(ValueError, match="keys"):
        nnunet_augment_3d(())


@pytest.mark.parametrize("nnunet, expected", [(False, "RandGaussianNoised"), (True, "RandSimulateLowResolutiond")])
def test_train_volume_pre_nnunet_augment_replaces_the_mild_default(files, nnunet, expected):
    chain = train_volume_pre((2.0, 2.0, 3.0), (8, 8, 8), augment=True, nnunet_augment=nnunet)
    names = [type(t).__name__ for t in chain]
    assert expected in names
    assert ("RandAdjustContrastd" in names) == nnunet
    out = Compose(chain)({"image": files["vol"], "label": files["mask"]})
    assert all(p["image"].shape == (1, 8, 8, 8) and p["label"].shape == (1, 8, 8, 8) for p in out)


@pytest.mark.parametrize(
    "conf, expected",
    [({}, None), ({"hippocampus_nnunet_augment": "true"}, True), ({"hippocampus_nnunet_augment": "false"}, False)],
)
def test_hippocampus_nnunet_augmentation_reaches_the_training_chain_and_the_card(tmp_path, conf, expected):
    from lib.configs.hippocampus import HippocampusConfig
    from lib.task_config import NNUNET_AUGMENTATION

    config = HippocampusConfig()
    config.init("hippocampus", str(tmp_path), {"shipped_models": "none", **conf})
    on = expected if expected is not None else HippocampusConfig.nnunet_augment
    names = {type(t).__name__ for t in config.trainer().train_pre_transforms(None)}
    assert ("RandSimulateLowResolutiond" in names) == on
    assert "RandFlipd" in names  # the task's mirrors either way
    assert config.card().get("training_augmentation") == (NNUNET_AUGMENTATION if on else None)
