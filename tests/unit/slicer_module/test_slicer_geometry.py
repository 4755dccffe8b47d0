"""Voxel-grid geometry without Slicer (issue 18 rows 5-7 and 12): alignment checks that name what differs,
world <-> local placement, luminance for RGB pictures, fingerprints that follow the geometry, direct connections."""

import numpy as np
import pytest

from MRILabelLib import plain_sentence
from MRILabelLib.client import direct_connection
from MRILabelLib.geometry import (
    Geometry,
    closest_view,
    geometry,
    is_single_slice,
    luminance,
    scalar_for_upload,
    slice_center,
    slice_normal,
    world_to_local,
)
from MRILabelLib.overlay import check_aligned, volume_fingerprint


def _grid(shape=(16, 96, 96), spacing=(1.0, 1.0, 3.0), origin=(0.0, 0.0, 0.0), directions=None):
    matrix = np.eye(4)
    matrix[:3, :3] = (np.eye(3) if directions is None else np.asarray(directions)) @ np.diag(spacing)
    matrix[:3, 3] = origin
    return geometry(shape, matrix)


def test_geometry_reads_spacing_origin_and_directions():
    grid = _grid(spacing=(0.5, 0.5, 3.0), origin=(1, 2, 3), directions=np.diag([-1, -1, 1]))
    assert isinstance(grid, Geometry) and grid.shape == (16, 96, 96)
    np.testing.assert_allclose(grid.spacing, (0.5, 0.5, 3.0))
    np.testing.assert_allclose(grid.origin, (1, 2, 3))
    np.testing.assert_allclose(grid.directions, np.diag([-1, -1, 1]))
    with pytest.raises(ValueError, match="4 × 4"):
        geometry((1, 2, 3), np.eye(3))


def test_aligned_grids_pass_within_tolerance():
    check_aligned(_grid(), _grid(origin=(0.0, 0.0, 1e-4), spacing=(1.0, 1.0, 3.00001)))


@pytest.mark.parametrize(
    "other, words",
    [
        (_grid(shape=(15, 96, 96)), "its voxel grid is 15 × 96 × 96 but the image's is 16 × 96 × 96"),
        (_grid(spacing=(1.0, 1.0, 2.0)), "its voxel size is 1 × 1 × 2 mm but the image's is 1 × 1 × 3 mm"),
        (_grid(origin=(0.0, 5.0, 0.0)), "its origin is (0, 5, 0) mm but the image's is (0, 0, 0) mm"),
        (_grid(directions=np.diag([-1, -1, 1])), "its axis directions differ from the image's"),
    ],
)
def test_misaligned_grids_get_a_sentence_naming_what_differs(other, words):
    with pytest.raises(ValueError) as caught:
        check_aligned(other, _grid(), what="The class-activation map")
    sentence = plain_sentence(caught.value)
    assert sentence.startswith("The class-activation map does not line up with the image: ") and words in sentence


def test_world_to_local_undoes_the_parent_transform():
    local = np.diag([1.0, 1.0, 2.0, 1.0])
    to_world = np.eye(4)
    to_world[:3, 3] = (10, -4, 2)
    to_world[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    np.testing.assert_allclose(world_to_local(to_world @ local, to_world), local, atol=1e-12)
    np.testing.assert_allclose(world_to_local(local, None), local)


def test_single_slices_are_2d_inputs():
    assert is_single_slice((1, 240, 320)) and not is_single_slice((16, 96, 96)) and not is_single_slice((240, 320))


def test_luminance_weights_and_vector_volumes():
    rgb = np.array([[[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]]], np.uint8)
    np.testing.assert_allclose(luminance(rgb), [[[76.245, 149.685, 29.07, 255.0]]], rtol=1e-5)
    rgba = np.concatenate([rgb, np.zeros(rgb.shape[:-1] + (1,), np.uint8)], axis=-1)
    np.testing.assert_allclose(scalar_for_upload(rgba, vector=True), luminance(rgb))
    grey = np.arange(6.0).reshape(1, 2, 3)
    assert scalar_for_upload(grey, vector=False) is grey
    np.testing.assert_allclose(scalar_for_upload(grey[..., None], vector=True), grey)
    with pytest.raises(ValueError) as caught:
        scalar_for_upload(np.zeros((2, 2, 2, 6)), vector=True)
    assert "6 values per voxel" in plain_sentence(caught.value)


def test_fingerprint_follows_origin_directions_and_the_transform():
    volume = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    base = np.diag([1.0, 1.0, 2.0, 1.0])
    moved = base.copy()
    moved[:3, 3] = (0, 0, 5)
    flipped = np.diag([-1.0, 1.0, 2.0, 1.0])
    prints = {
        volume_fingerprint(volume, (1, 1, 2), base),
        volume_fingerprint(volume, (1, 1, 2), moved),
        volume_fingerprint(volume, (1, 1, 2), flipped),
        volume_fingerprint(volume, (1, 1, 2), base, np.diag([1.0, 1.0, 1.0, 1.0]) + np.eye(4) * 0),
        volume_fingerprint(volume, (1, 1, 2), base, moved),
        volume_fingerprint(volume, (1, 1, 2), base, "non-linear:vtkMRMLGridTransformNode1:42"),
    }
    assert len(prints) == 5  # an identity parent transform is the same place as none
    assert volume_fingerprint(volume, (1, 1, 2), base) == volume_fingerprint(volume.copy(), (1, 1, 2), base.copy())
    assert volume_fingerprint(volume, (1, 1, 2), base + 1e-9) == volume_fingerprint(volume, (1, 1, 2), base)


@pytest.mark.parametrize(
    "url, direct",
    [
        ("http://127.0.0.1:8000", True),
        ("http://localhost:8000", True),
        ("http://[::1]:8000", True),
        ("http://10.1.2.3:8000", True),
        ("http://192.168.0.20", True),
        ("http://172.16.5.4", True),
        ("http://169.254.1.1", True),
        ("https://monai.hospital.example.org", False),
        ("http://8.8.8.8", False),
    ],
)
def test_direct_connection_for_loopback_and_private_addresses(url, direct):
    assert direct_connection(url, environ={}) is direct


def test_direct_connection_everywhere_when_the_flag_says_so():
    assert direct_connection("https://monai.hospital.example.org", environ={"MRILABEL_NO_PROXY": "1"})
    assert not direct_connection("https://monai.hospital.example.org", environ={"MRILABEL_NO_PROXY": "0"})


# --- issue 18 item 4: where a slice of the uncertainty summary is, for the slice view ------------------------------


def _rotation(degrees_z, degrees_x):
    z, x = np.radians(degrees_z), np.radians(degrees_x)
    about_z = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    return about_z @ about_x


def _ijk_to_ras(directions, spacing, origin):
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(directions, dtype=float) @ np.diag(spacing)
    matrix[:3, 3] = origin
    return matrix


OBLIQUE = _ijk_to_ras(_rotation(30, -20), (0.5, 0.9, 3.0), (-40.0, 12.0, 7.5))  # rotated, anisotropic
SHAPE = (6, 10, 12)  # numpy order (K, J, I): 12 columns (I), 10 rows (J), 6 slices (K)


@pytest.mark.parametrize("matrix", [np.diag([1.0, 1.0, 1.0, 1.0]), OBLIQUE], ids=["identity", "oblique"])
@pytest.mark.parametrize("axis, index", [(0, 0), (0, 11), (1, 4), (2, 0), (2, 5)])
def test_slice_center_is_the_middle_of_that_voxel_slice(matrix, axis, index):
    point = slice_center(matrix, SHAPE, axis, index)
    sizes = (12, 10, 6)  # I, J, K
    ijk = np.array([(n - 1) / 2 for n in sizes])
    ijk[axis] = index
    np.testing.assert_allclose(point, matrix[:3, :3] @ ijk + matrix[:3, 3], atol=1e-9)
    # every voxel centre of that slice lies in the plane through the point with the slice normal ...
    normal = slice_normal(matrix, axis)
    grids = np.meshgrid(*[np.arange(n) for n in sizes], indexing="ij")
    voxels = np.stack([g.ravel() for g in grids], axis=1).astype(float)
    on_slice = voxels[voxels[:, axis] == index]
    ras = on_slice @ matrix[:3, :3].T + matrix[:3, 3]
    np.testing.assert_allclose((ras - point) @ normal, 0.0, atol=1e-9)
    # ... and the neighbouring slice lies one slice spacing further along it
    if index + 1 < sizes[axis]:
        step = (slice_center(matrix, SHAPE, axis, index + 1) - point) @ normal
        assert step == pytest.approx(np.linalg.norm(matrix[:3, axis]))


def test_slice_normal_of_a_sheared_grid_is_perpendicular_to_the_slice():
    sheared = np.eye(4)
    sheared[:3, :3] = [[1.0, 0.0, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0]]  # K leans towards I (a gantry tilt)
    normal = slice_normal(sheared, 2)
    np.testing.assert_allclose(normal, (0, 0, 1), atol=1e-12)  # not K's own direction (0.24, 0, 0.97)
    np.testing.assert_allclose(slice_normal(np.diag([-1.0, -1.0, 2.0, 1.0]), 2), (0, 0, 1))  # a PNG's grid
    np.testing.assert_allclose(slice_normal(np.diag([1.0, -1.0, 1.0, 1.0]), 1), (0, -1, 0))  # the way J grows


@pytest.mark.parametrize(
    "axis, index, words",
    [
        (2, 6, "slice 6 is not in the volume: along voxel axis K it has slices 0 to 5"),
        (0, -1, "slice -1 is not in the volume: along voxel axis I it has slices 0 to 11"),
        (1, 2.0, "slice 2.0 is not in the volume"),
        (3, 0, "axis must be 0, 1 or 2 (the voxel axis I, J or K), got 3"),
        (True, 0, "axis must be 0, 1 or 2"),
    ],
)
def test_slices_outside_the_volume_are_refused_with_a_sentence(axis, index, words):
    with pytest.raises(ValueError) as caught:
        slice_center(OBLIQUE, SHAPE, axis, index)
    assert words in plain_sentence(caught.value)


def test_a_single_slice_picture_has_slice_zero_along_k():
    png = np.diag([-1.0, -1.0, 1.0, 1.0])  # how Slicer loads a PNG: (1, rows, columns)
    np.testing.assert_allclose(slice_center(png, (1, 4, 5), 2, 0), (-2.0, -1.5, 0.0))


AXIAL, CORONAL, SAGITTAL = (0, 0, 1), (0, 1, 0), (1, 0, 0)  # the normals of Slicer's default Red, Green, Yellow
VIEWS = [("Red", AXIAL), ("Yellow", SAGITTAL), ("Green", CORONAL)]


@pytest.mark.parametrize(
    "direction, view",
    [
        ((0, 0, 1), "Red"),
        ((0, 0, -1), "Red"),  # slices counted downwards: the same plane
        ((0.2, 0.1, 0.97), "Red"),  # an oblique axial acquisition
        ((0.9, 0.3, 0.1), "Yellow"),
        ((0, -1, 0), "Green"),
        ((1, 1, 1), "Red"),  # a tie: the first view
    ],
)
def test_closest_view_is_the_one_most_parallel_to_the_slices(direction, view):
    assert closest_view(VIEWS, direction) == view


def test_closest_view_without_views_is_none():
    assert closest_view([], (0, 0, 1)) is None
