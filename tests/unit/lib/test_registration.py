"""Registration to the MNI152 template and the box geometry of the whole-head hippocampus path, on the template
itself and on a copy of it resampled, rotated and flipped (the true mapping is then known)."""

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from lib import registration
from mri_label.core.templates import template_path


def moved_template(rotation=(0.08, -0.05, 0.22), translation=(6.0, -9.0, 4.0)):
    """``(image, truth)``: the template resampled onto a flipped, anisotropic grid after a rigid motion;
    ``truth`` maps points of the new image to the template (LPS mm)."""
    template = sitk.ReadImage(template_path())
    truth = sitk.Euler3DTransform()
    truth.SetCenter((0.0, -18.0, 10.0))
    truth.SetRotation(*rotation)
    truth.SetTranslation(translation)
    grid = sitk.Image([160, 200, 130], sitk.sitkFloat32)
    grid.SetSpacing((1.2, 1.0, 1.5))
    grid.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, -1))  # voxel axes L, A, I: flipped against the template's R, A, S
    grid.SetOrigin((-96.0, 110.0, 90.0))
    return sitk.Resample(sitk.Cast(template, sitk.sitkFloat32), grid, truth, sitk.sitkLinear, 0.0), truth


@pytest.fixture(scope="module")
def template():
    return sitk.ReadImage(template_path())


def test_template_registers_to_itself(template):
    transform = registration.register_to_template(template)
    for box in registration.HIPPOCAMPUS_BOXES_MNI.values():
        centre = registration._lps(box["center"])
        assert np.linalg.norm(np.subtract(transform.TransformPoint(tuple(centre)), centre)) < 1.5


def test_moved_copy_maps_each_box_centre_to_its_true_place(template):
    image, truth = moved_template()
    transform = registration.register_to_template(image, template)
    inverse = truth.GetInverse()  # template point -> point of the moved image
    for side, box in registration.HIPPOCAMPUS_BOXES_MNI.items():
        centre = tuple(registration._lps(box["center"]))
        error = np.linalg.norm(np.subtract(transform.TransformPoint(centre), inverse.TransformPoint(centre)))
        assert error < 2.0, f"{side} box centre off by {error:.1f} mm"


def test_box_grid_is_in_ras_voxel_order():
    grid = registration.box_grid((10.0, 20.0, 30.0), (4.0, 6.0, 8.0), spacing_mm=1.0)
    assert grid.GetSize() == (4, 6, 8)
    first = np.array(grid.TransformIndexToPhysicalPoint((0, 0, 0))) * [-1, -1, 1]  # LPS -> RAS
    last = np.array(grid.TransformIndexToPhysicalPoint((3, 5, 7))) * [-1, -1, 1]
    np.testing.assert_allclose(first, [8.5, 17.5, 26.5])
    np.testing.assert_allclose(last, [11.5, 22.5, 33.5])


def test_crop_reads_the_image_and_paste_puts_it_back(template):
    nifti = nib.load(template_path())
    array = np.asarray(nifti.dataobj).astype(np.float32)
    centre = nifti.affine[:3, :3] @ np.array([100, 120, 60]) + nifti.affine[:3, 3]  # a voxel centre, RAS mm
    grid = registration.box_grid(centre, (9.0, 7.0, 5.0))
    crop = registration.crop(template, grid)
    np.testing.assert_allclose(crop, array[96:105, 117:124, 58:63])  # RAS template: same voxel order
    pasted = registration.paste(np.ones(crop.shape, np.uint8), grid, template)
    assert pasted.shape == array.shape and pasted.sum() == crop.size
    assert pasted[96:105, 117:124, 58:63].all()


@pytest.mark.parametrize(
    "size, spacing, expected",
    [
        ((35, 51, 35), (1.0, 1.0, 1.0), True),
        ((43, 58, 47), (1.0, 1.0, 1.0), True),
        ((182, 218, 182), (1.0, 1.0, 1.0), False),
        ((256, 256, 30), (1.0, 1.0, 5.0), False),
        ((64, 64, 64), (2.0, 2.0, 2.0), False),
    ],
)
def test_is_crop_by_field_of_view(size, spacing, expected):
    assert registration.is_crop(size, spacing) is expected


@pytest.mark.parametrize(
    "corners, message",
    [
        (([0, 0, 0], [1, 2]), "three finite"),
        (([0, 0, 0], [5, 40, 40]), "8..150"),
        (([0, 0, 0], [10, 200, 40]), "8..150"),
        (([0, 0, float("nan")], [30, 30, 30]), "finite"),
    ],
)
def test_box_from_corners_refuses_bad_boxes(corners, message):
    with pytest.raises(ValueError, match=message):
        registration.box_from_corners(*corners)


def test_box_from_corners_gives_centre_and_size():
    centre, size = registration.box_from_corners([-40, -40, -30], [-10, 10, 0])
    np.testing.assert_allclose(centre, [-25, -15, -15])
    np.testing.assert_allclose(size, [30, 50, 30])


def scaled_template(factor: float) -> sitk.Image:
    """The template with every length multiplied by ``factor`` (a head ``factor**3`` times the volume), on a grid
    of the same voxel count and spacing scaled alike."""
    template = sitk.Cast(sitk.ReadImage(template_path()), sitk.sitkFloat32)
    scaled = sitk.Image(template.GetSize(), sitk.sitkFloat32)
    scaled.SetSpacing(tuple(s * factor for s in template.GetSpacing()))
    scaled.SetDirection(template.GetDirection())
    scaled.SetOrigin(tuple(o * factor for o in template.GetOrigin()))
    shrink = sitk.ScaleTransform(3, (1.0 / factor,) * 3)  # scaled point -> template point
    return sitk.Resample(template, scaled, shrink, sitk.sitkLinear, 0.0)


def test_template_intracranial_volume_is_its_mask():
    template = sitk.ReadImage(template_path())
    expected = (sitk.GetArrayViewFromImage(template) > 0).sum() * np.prod(template.GetSpacing()) / 1000
    assert registration.template_intracranial_ml() == pytest.approx(expected) and 1700 < expected < 2100


@pytest.mark.parametrize("factor", [1.0, 0.9])
def test_etiv_of_the_template_and_of_a_scaled_copy(template, factor):
    image = template if factor == 1.0 else scaled_template(factor)
    etiv = registration.etiv_ml(registration.register_to_template(image))
    expected = registration.template_intracranial_ml() * factor**3
    assert etiv == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize(
    "matrix, scale",
    [
        ((1, 0, 0, 0, 1, 0, 0, 0, 1), 1.0),
        ((2, 0, 0, 0, 1, 0, 0, 0, 0.5), 1.0),
        ((0, -1.1, 0, 1.1, 0, 0, 0, 0, 1.1), 1.331),
    ],
)
def test_linear_scale_is_the_absolute_determinant(matrix, scale):
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(matrix)
    assert registration.linear_scale(affine) == pytest.approx(scale)


def test_two_registrations_of_one_image_are_identical(template):
    image, _ = moved_template()
    first, second = (registration.register_to_template(image) for _ in range(2))
    # ITK's threads sum in any order (up to ~1e-7 apart); with seed 0 (a new seed from the clock) ~1e-2 apart
    np.testing.assert_allclose(first.GetParameters(), second.GetParameters(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("seed", [0, -1, 1.5, True])
def test_a_seed_that_is_not_a_positive_integer_is_refused(template, seed):
    with pytest.raises(ValueError, match="seed must be a positive integer"):
        registration.register_to_template(template, template, seed=seed)
