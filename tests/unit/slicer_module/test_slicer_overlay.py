"""Overlay and volume arithmetic, checked against hand-computed values."""

import numpy as np
import pytest

from MRILabelLib.overlay import (
    blend,
    cam_display_values,
    check_aligned,
    heat_color_table,
    heat_colors,
    label_volumes,
    merge_segments,
    safe_image_id,
    volume_fingerprint,
    voxel_volume,
)


@pytest.mark.parametrize(
    "cam, threshold, expected",
    [
        ([0.0, 0.5, 1.0], 0.0, [0.0, 0.5, 1.0]),
        ([-0.2, 0.5, 1.7], 0.0, [0.0, 0.5, 1.0]),
        ([np.nan, np.inf, -np.inf], 0.0, [0.0, 1.0, 0.0]),
        ([0.1, 0.2, 0.3], 0.2, [0.0, 0.2, 0.3]),
        ([0.9, 0.99], 1.0, [0.0, 0.0]),
    ],
)
def test_cam_display_values(cam, threshold, expected):
    np.testing.assert_allclose(cam_display_values(np.array(cam), threshold), expected, atol=1e-7)


def test_cam_threshold_is_validated():
    with pytest.raises(ValueError, match="threshold"):
        cam_display_values(np.zeros(3), 1.5)


@pytest.mark.parametrize(
    "value, rgb",
    [
        (0.0, (0, 0, 1)),
        (0.35, (0, 1, 1)),
        (0.65, (1, 1, 0)),
        (1.0, (1, 0, 0)),
        (0.5, (0.5, 1, 0.5)),
        (0.175, (0, 0.5, 1)),
        (2.0, (1, 0, 0)),
    ],
)
def test_heat_colors(value, rgb):
    np.testing.assert_allclose(heat_colors(np.array(value)), rgb, atol=1e-9)


def test_heat_color_table():
    table = heat_color_table(5)
    assert len(table) == 5 and table[0] == (0.0, 0.0, 1.0, 0.0) and table[-1] == (1.0, 0.0, 0.0, 1.0)
    assert all(alpha == 1.0 for *_, alpha in table[1:])
    with pytest.raises(ValueError, match="steps"):
        heat_color_table(1)


def test_blend_hand_computed():
    grey = np.array([[0.0, 10.0], [20.0, 40.0]])  # normalised: 0, 0.25, 0.5, 1
    cam = np.array([[0.0, 1.0], [0.0, 0.5]])  # red at (0, 1), (0.5, 1, 0.5) at (1, 1)
    out = blend(grey, cam, opacity=0.4)
    np.testing.assert_allclose(out[0, 0], [0, 0, 0])
    np.testing.assert_allclose(out[0, 1], [0.6 * 0.25 + 0.4, 0.6 * 0.25, 0.6 * 0.25])
    np.testing.assert_allclose(out[1, 0], [0.5, 0.5, 0.5])
    np.testing.assert_allclose(out[1, 1], [0.6 + 0.2, 0.6 + 0.4, 0.6 + 0.2])


def test_blend_of_a_flat_image_and_bad_arguments():
    np.testing.assert_allclose(blend(np.full((2, 2), 7.0), np.zeros((2, 2))), np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="opacity"):
        blend(np.zeros((2, 2)), np.zeros((2, 2)), opacity=2)
    with pytest.raises(ValueError, match="overlay_shape"):
        blend(np.zeros((2, 2)), np.zeros((2, 3)))


def test_check_aligned():
    check_aligned((96, 96, 16), [96, 96, 16])
    with pytest.raises(ValueError, match=r"overlay_shape \(96, 96, 15\) differs from image_shape \(96, 96, 16\)"):
        check_aligned((96, 96, 15), (96, 96, 16))


@pytest.mark.parametrize(
    "spacing, volume", [((1, 1, 1), 1.0), ((2, 2, 6), 24.0), ((0.5, 0.5), 0.25), ((0.9, 0.9, 3.0), 2.43)]
)
def test_voxel_volume(spacing, volume):
    assert voxel_volume(spacing) == pytest.approx(volume)


@pytest.mark.parametrize("spacing", [(), (1.0, 0.0, 1.0), (1.0, -2.0)])
def test_voxel_volume_needs_positive_spacing(spacing):
    with pytest.raises(ValueError, match="spacing"):
        voxel_volume(spacing)


def test_label_volumes_hand_computed():
    label_map = np.zeros((4, 4, 2), np.uint8)
    label_map[0, :, 0] = 1  # 4 voxels
    label_map[1:3, 1:3, 1] = 2  # 4 voxels
    label_map[3, 3, 1] = 2  # +1
    assert label_volumes(label_map, (2.0, 2.0, 6.0), {"anterior": 1, "posterior": 2, "absent": 3}) == {
        "anterior": 96.0,
        "posterior": 120.0,
        "absent": 0.0,
    }
    with pytest.raises(ValueError, match="spacing has 2 values"):
        label_volumes(label_map, (1.0, 1.0), {"a": 1})


def test_merge_segments_later_segment_wins_on_overlap():
    first = np.array([[1, 1, 0], [0, 0, 0]], bool)
    second = np.array([[0, 1, 1], [0, 0, 1]], bool)
    merged = merge_segments({"anterior": first, "posterior": second}, {"anterior": 1, "posterior": 2})
    np.testing.assert_array_equal(merged, [[1, 2, 2], [0, 0, 2]])
    assert merged.dtype == np.uint8


@pytest.mark.parametrize(
    "masks, labels, message",
    [
        ({}, {}, "at least one"),
        ({"a": np.zeros(2), "b": np.zeros(3)}, {"a": 1, "b": 2}, "one shape"),
        ({"a": np.zeros(2)}, {}, "segment 'a'"),
        ({"a": np.zeros(2)}, {"a": 0}, "1..255"),
    ],
)
def test_merge_segments_refuses_bad_input(masks, labels, message):
    with pytest.raises(ValueError, match=message):
        merge_segments(masks, labels)


def test_volume_fingerprint_follows_content_and_spacing():
    volume = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    same = volume_fingerprint(volume.copy(), (1, 1, 1))
    assert volume_fingerprint(volume, (1, 1, 1)) == same and len(same) == 10
    assert volume_fingerprint(volume, (1, 1, 2)) != same
    assert volume_fingerprint(volume + 1, (1, 1, 1)) != same
    assert volume_fingerprint(volume.reshape(4, 3, 2), (1, 1, 1)) != same


@pytest.mark.parametrize(
    "name, fingerprint, image_id",
    [
        ("synth01_flair", "", "synth01_flair"),
        ("My volume (1)", "ab12", "My_volume_1_ab12"),
        ("../etc/passwd", "", "etc_passwd"),
        ("  ", "ff", "volume_ff"),
        ("T1.nii", "", "T1.nii"),
    ],
)
def test_safe_image_id(name, fingerprint, image_id):
    assert safe_image_id(name, fingerprint) == image_id
