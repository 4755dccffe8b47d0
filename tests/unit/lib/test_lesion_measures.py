"""lib.lesion_measures: volumes, components and RANO-style diameters in physical space."""

import numpy as np
import pytest

from lib.lesion_measures import MEASURABLE_MM, lesion_measurements, slice_diameters


def _ellipsoid(shape, centre, semi_axes_vox):
    grid = np.indices(shape).astype(float)
    return sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, semi_axes_vox)) <= 1.0


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.5, 0.8, 3.0)])
@pytest.mark.parametrize("rotate", [False, True])
def test_an_ellipsoid_has_its_axes_as_diameters_in_any_grid(spacing, rotate):
    semi_mm = (20.0, 12.0, 9.0)  # x, y, z semi-axes: axial diameters 40 and 24 mm
    shape = tuple(int(2 * s / sp) + 9 for s, sp in zip(semi_mm, spacing))
    mask = _ellipsoid(shape, [(n - 1) / 2 for n in shape], [s / sp for s, sp in zip(semi_mm, spacing)])
    affine = np.diag(list(spacing) + [1.0])
    if rotate:  # an oblique grid: rotated 30 degrees about z (the axial plane keeps its shape)
        c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
        affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ affine[:3, :3]
    measured = lesion_measurements(mask, affine, axis=2)
    (lesion,) = measured["lesions"]
    assert measured["components"] == 1
    assert lesion["largest_diameter_mm"] == pytest.approx(40.0, abs=2 * max(spacing[:2]))
    assert lesion["perpendicular_diameter_mm"] == pytest.approx(24.0, abs=2 * max(spacing[:2]))
    assert lesion["slice"] == pytest.approx((shape[2] - 1) / 2, abs=1)
    assert measured["volume_ml"] == pytest.approx(4 / 3 * np.pi * np.prod(semi_mm) / 1000, rel=0.08)
    assert lesion["measurable"] and measured["sum_of_products_mm2"] == lesion["product_mm2"]


def test_components_are_listed_largest_first_with_their_slices():
    mask = np.zeros((60, 60, 20), dtype=np.uint8)
    mask[5:35, 5:25, 2:8] = 1  # 30 x 20 mm over slices 2..7
    mask[45:50, 45:50, 12:14] = 1  # 5 x 5 mm: not measurable
    measured = lesion_measurements(mask, np.eye(4), axis=2)
    big, small = measured["lesions"]
    assert measured["components"] == 2 and big["slices"] == [2, 7] and small["slices"] == [12, 13]
    assert big["volume_ml"] == pytest.approx(30 * 20 * 6 / 1000)
    assert big["largest_diameter_mm"] == pytest.approx(np.hypot(29, 19), abs=0.1)  # the box's diagonal
    assert not small["measurable"] and small["largest_diameter_mm"] < MEASURABLE_MM
    assert measured["sum_of_products_mm2"] == big["product_mm2"]


@pytest.mark.parametrize("axis", [0, 1])
def test_the_axial_axis_is_the_one_given(axis):
    mask = np.zeros((30, 30, 30), dtype=bool)
    mask[10:20, 5:25, 12:14] = True  # 10 x 20 x 2 voxels
    lesion = lesion_measurements(mask, np.eye(4), axis=axis)["lesions"][0]
    assert lesion["slices"] == ([10, 19] if axis == 0 else [5, 24])


def test_an_empty_mask_and_a_2d_picture():
    assert lesion_measurements(np.zeros((8, 8, 4)), np.eye(4)) == {
        **lesion_measurements(np.zeros((8, 8, 4)), np.eye(4)),
        "volume_ml": 0.0,
        "components": 0,
        "lesions": [],
    }
    flat = np.zeros((40, 40), dtype=bool)
    flat[10:30, 15:25] = True
    lesion = lesion_measurements(flat, None)["lesions"][0]
    assert lesion["slices"] == [0, 0] and lesion["largest_diameter_mm"] == pytest.approx(np.hypot(19, 9), abs=0.1)


@pytest.mark.parametrize("points", [np.zeros((0, 2)), np.zeros((3, 3)), np.zeros(4)])
def test_slice_diameters_refuses_what_is_not_2d_points(points):
    with pytest.raises(ValueError, match="points_mm"):
        slice_diameters(points)


def test_collinear_points_and_one_point():
    assert slice_diameters(np.array([[0.0, 0.0], [3.0, 0.0], [5.0, 0.0]])) == (5.0, 0.0)
    assert slice_diameters(np.array([[1.0, 2.0]])) == (0.0, 0.0)
