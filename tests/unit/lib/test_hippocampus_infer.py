"""The hippocampus task on whole-head T1s with the shipped checkpoint: the MNI152 template itself and a copy of
it resampled, rotated and flipped (its true mapping to the template is known), user boxes, crops, and the
volume sanity check."""

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from fastapi import HTTPException
from test_registration import moved_template

from lib import registration
from mri_label.core.templates import template_path
from tests.helpers.app import SHIPPED_DIR


@pytest.fixture(scope="module")
def infer(tmp_path_factory):
    from main import discover_configs

    config = discover_configs()["hippocampus"]()
    config.init("hippocampus", str(tmp_path_factory.mktemp("model")), {"shipped_models": str(SHIPPED_DIR)}, None)
    assert config.shipped_path, "the shipped hippocampus checkpoint is missing"
    return config.infer()


def run(infer, path, **request):
    file, result = infer({"image": str(path), "device": "cpu", **request})
    label = sitk.ReadImage(file)
    os.remove(file)
    return label, result


def ras_x_of_labelled(label: sitk.Image, to_template=None) -> np.ndarray:
    """RAS x (mm) of every labelled voxel, in template space when ``to_template`` (image -> template) is given."""
    array = sitk.GetArrayFromImage(label).transpose(2, 1, 0)
    index = np.argwhere(array > 0).astype(float)
    direction = np.asarray(label.GetDirection()).reshape(3, 3)
    points = index * label.GetSpacing() @ direction.T + label.GetOrigin()  # LPS mm
    if to_template is not None:
        points = np.array([to_template.TransformPoint(tuple(p)) for p in points])
    return -points[:, 0]


@pytest.fixture(scope="module")
def template_result(infer):
    return run(infer, template_path())


def test_template_gives_both_hippocampi_in_its_own_grid(template_result):
    label, result = template_result
    template = sitk.ReadImage(template_path())
    assert label.GetSize() == template.GetSize()
    np.testing.assert_allclose(label.GetOrigin(), template.GetOrigin())
    np.testing.assert_allclose(label.GetDirection(), template.GetDirection())
    assert result["input"].startswith("whole head: affine registration")
    measured = result["measurements"]
    for side in ("left", "right"):
        assert 2000 < measured[side]["total_mm3"] < 6000, measured
        assert measured[side]["anterior_mm3"] > 300 and measured[side]["posterior_mm3"] > 300, measured
    assert measured["volume_check"]["status"] in ("ok", "check the segmentation")


def test_whole_head_reports_etiv_and_volumes_per_mille_of_it(template_result):
    measured = template_result[1]["measurements"]
    head = measured["head_size"]
    assert head["etiv_ml"] == pytest.approx(registration.template_intracranial_ml(), rel=0.02)  # the template itself
    assert head["template_icv_ml"] == pytest.approx(registration.template_intracranial_ml(), abs=0.1)
    for name, volume in (("total", measured["total_mm3"]), ("left", measured["left"]["total_mm3"])):
        assert head["per_mille_of_etiv"][name] == pytest.approx(volume / (head["etiv_ml"] * 1000) * 1000, rel=1e-3)


def test_left_is_left(template_result):
    label, result = template_result
    x = ras_x_of_labelled(label)
    voxel = float(np.prod(label.GetSpacing()))
    assert (x < 0).sum() * voxel == pytest.approx(result["measurements"]["left_mm3"], rel=0.02)
    assert (x > 0).sum() * voxel == pytest.approx(result["measurements"]["right_mm3"], rel=0.02)


def test_a_final_label_measures_as_its_whole_head_answer(infer, template_result, tmp_path):
    """The answer saved as a final label and measured again (its DICOM SR's numbers) gives the answer's measurements
    exactly: the same registration (remembered from the infer) splits the sides and gives the head size; a
    correction is measured as it is."""
    label, result = template_result
    sitk.WriteImage(label, str(tmp_path / "final.nii.gz"))
    assert infer.measure_label(template_path(), str(tmp_path / "final.nii.gz")) == result["measurements"]

    array = sitk.GetArrayFromImage(label).transpose(2, 1, 0)
    x = ras_x_of_labelled(label)
    left = np.argwhere(array > 0)[x < 0]
    array[tuple(left.T)] = 0  # the left hippocampus corrected away
    corrected = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    corrected.CopyInformation(label)
    sitk.WriteImage(corrected, str(tmp_path / "corrected.nii.gz"))
    measured = infer.measure_label(template_path(), str(tmp_path / "corrected.nii.gz"))
    assert measured["left"]["total_mm3"] == 0 and measured["head_size"]["per_mille_of_etiv"]["left"] == 0
    assert measured["right"] == result["measurements"]["right"]
    assert measured["total_mm3"] == result["measurements"]["right"]["total_mm3"]
    assert measured["head_size"]["etiv_ml"] == result["measurements"]["head_size"]["etiv_ml"]


def test_a_final_label_without_a_remembered_registration_is_measured_with_a_new_one(infer, template_result, tmp_path):
    label, result = template_result
    sitk.WriteImage(label, str(tmp_path / "final.nii.gz"))
    infer._registrations.clear()
    measured = infer.measure_label(template_path(), str(tmp_path / "final.nii.gz"))
    expected = result["measurements"]
    assert measured["mm3"] == expected["mm3"]  # per label: the label alone
    assert measured["head_size"]["etiv_ml"] == pytest.approx(expected["head_size"]["etiv_ml"], rel=0.01)
    for side in ("left", "right"):
        assert measured[side]["total_mm3"] == pytest.approx(expected[side]["total_mm3"], rel=0.02)


def test_a_final_label_on_a_crop_measures_as_its_answer(infer, tmp_path):
    template = sitk.ReadImage(template_path())
    box = registration.HIPPOCAMPUS_BOXES_MNI["left"]
    grid = registration.box_grid(box["center"], (36.0, 50.0, 36.0))
    crop = sitk.Resample(template, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    sitk.WriteImage(crop, str(tmp_path / "crop.nii.gz"))
    label, result = run(infer, tmp_path / "crop.nii.gz")
    sitk.WriteImage(label, str(tmp_path / "final.nii.gz"))
    measured = infer.measure_label(str(tmp_path / "crop.nii.gz"), str(tmp_path / "final.nii.gz"))
    assert measured == result["measurements"] and "left" not in measured


def test_mask_lies_in_grey_matter(template_result):
    """Independent of the boxes: the hippocampus is grey matter in the template's own tissue map."""
    gm = sitk.GetArrayFromImage(sitk.ReadImage(template_path().replace("_t1_", "_gm_"))).astype(float)
    gm /= gm.max()
    label = sitk.GetArrayFromImage(template_result[0])
    assert gm.shape == label.shape
    inside, brain = gm[label > 0].mean(), gm[gm > 0].mean()
    assert inside > 0.4 and inside > brain, (inside, brain)


def test_rotated_resampled_flipped_copy(infer, template_result, tmp_path):
    image, truth = moved_template()
    path = tmp_path / "moved_t1.nii.gz"
    sitk.WriteImage(image, str(path))
    label, result = run(infer, path)
    assert label.GetSize() == image.GetSize()
    np.testing.assert_allclose(label.GetDirection(), image.GetDirection())
    np.testing.assert_allclose(label.GetSpacing(), image.GetSpacing())
    measured = result["measurements"]
    x = ras_x_of_labelled(label, to_template=truth)
    voxel = float(np.prod(image.GetSpacing()))
    assert (x < 0).sum() * voxel == pytest.approx(measured["left_mm3"], rel=0.05)  # left is still left
    for side in ("left", "right"):
        assert measured[side]["total_mm3"] == pytest.approx(
            template_result[1]["measurements"][side]["total_mm3"], rel=0.2
        )


def test_user_boxes_skip_registration(infer, template_result):
    boxes = {}
    for side, box in registration.HIPPOCAMPUS_BOXES_MNI.items():
        centre, size = np.asarray(box["center"]), np.asarray(box["size"])
        boxes[side] = [(centre - size / 2).tolist(), (centre + size / 2).tolist()]
    _, result = run(infer, template_path(), boxes=boxes)
    assert result["input"] == "whole head: hippocampus boxes given in the request"
    assert result["measurements"]["head_size"]["etiv_ml"] is None  # no registration ran: not guessed
    for side in ("left", "right"):
        expected = template_result[1]["measurements"][side]["total_mm3"]
        assert result["measurements"][side]["total_mm3"] == pytest.approx(expected, rel=0.1)


@pytest.mark.parametrize(
    "boxes, message",
    [
        ({"middle": [[0, 0, 0], [30, 30, 30]]}, "boxes must map"),
        ({"left": [[0, 0, 0], [3, 30, 30]]}, "boxes.left: box size"),
        ({"left": "here"}, "boxes.left"),
    ],
)
def test_bad_boxes_are_422(infer, boxes, message):
    with pytest.raises(HTTPException) as raised:
        infer({"image": template_path(), "device": "cpu", "boxes": boxes})
    assert raised.value.status_code == 422 and message in raised.value.detail


def test_crop_goes_straight_to_the_model(infer, tmp_path):
    template = sitk.ReadImage(template_path())
    box = registration.HIPPOCAMPUS_BOXES_MNI["right"]
    grid = registration.box_grid(box["center"], (36.0, 50.0, 36.0))
    crop = sitk.Resample(template, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    sitk.WriteImage(crop, str(tmp_path / "crop.nii.gz"))
    label, result = run(infer, tmp_path / "crop.nii.gz")
    assert label.GetSize() == crop.GetSize()
    assert result["input"].startswith("hippocampus crop")
    measured = result["measurements"]
    assert "left_mm3" not in measured and "right_mm3" not in measured  # one side, not known from a crop
    assert 1500 < measured["total_mm3"] < 6000
    assert measured["volume_check"]["status"] in ("ok", "check the segmentation")


def test_volume_outside_the_training_range_is_flagged(infer):
    check = infer.volume_check({"left": 900.0, "right": 3300.0})
    assert check["status"] == "check the segmentation"
    assert "left hippocampus 900.0 mm³ is outside" in check["reason"] and "right" not in check["reason"]
    low, high = check["range_mm3"]
    assert infer.volume_check({"left": (low + high) / 2})["status"] == "ok"


def test_no_reference_range_says_not_checked(tmp_path):
    from main import discover_configs

    config = discover_configs()["hippocampus"]()
    config.init("hippocampus", str(tmp_path), {"shipped_models": "none"}, None)
    Path(config.path).parent.mkdir(parents=True)
    Path(config.path).write_bytes(b"")
    assert config.infer().volume_check({"left": 3000.0})["status"] == "not checked"


def write_dicom_series(image: sitk.Image, folder: Path) -> None:
    """``image`` as an MR DICOM series (one file per slice, geometry in the standard tags)."""
    folder.mkdir(parents=True)
    image = sitk.Cast(sitk.RescaleIntensity(image, 0, 4000), sitk.sitkInt16)
    direction = image.GetDirection()
    series = "1.2.826.0.1.3680043.2.1125.1.4242"
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()  # else every file gets its own series UID
    for k in range(image.GetDepth()):
        piece = image[:, :, k]
        tags = {
            "0008|0060": "MR",
            "0020|000e": series,
            "0020|000d": series + ".1",
            "0020|0013": str(k + 1),
            "0008|0018": f"{series}.2.{k + 1}",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.4",
            "0020|0037": "\\".join(
                f"{v:.6f}" for v in (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7])
            ),
            "0020|0032": "\\".join(f"{v:.4f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0028|0030": f"{image.GetSpacing()[1]:.4f}\\{image.GetSpacing()[0]:.4f}",
            "0018|0050": f"{image.GetSpacing()[2]:.4f}",
        }
        for tag, value in tags.items():
            piece.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:04d}.dcm"))
        writer.Execute(piece)


@pytest.mark.parametrize("kind", ["nrrd", "dicom"])
def test_nrrd_and_dicom_series_inputs(infer, template_result, tmp_path, kind):
    image, _ = moved_template()
    if kind == "nrrd":
        path = tmp_path / "moved.nrrd"
        sitk.WriteImage(image, str(path))
    else:
        path = tmp_path / "series"
        write_dicom_series(image, path)
        image = registration.read_image(str(path))  # the series as read: slices sorted along their normal
    label, result = run(infer, path)
    assert label.GetSize() == image.GetSize()
    np.testing.assert_allclose(label.GetDirection(), image.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(label.GetOrigin(), image.GetOrigin(), atol=1e-3)
    for side in ("left", "right"):
        expected = template_result[1]["measurements"][side]["total_mm3"]
        assert result["measurements"][side]["total_mm3"] == pytest.approx(expected, rel=0.2)


def test_folder_without_a_series_is_415(infer, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(HTTPException) as raised:
        infer({"image": str(tmp_path / "empty"), "device": "cpu"})
    assert raised.value.status_code == 415 and "no DICOM series" in raised.value.detail
