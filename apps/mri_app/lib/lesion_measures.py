"""Lesion measurements of a mask in physical space, in the form response criteria use (issue 20, item 3): volume in
mL, per connected component the largest axial diameter and the diameter perpendicular to it (their product is
RANO's bidimensional measure), the axial slices each component spans.

Diameters are measured between voxel centres in the plane of an axial slice (the voxel axis closest to world S),
with the grid's spacing and direction (anisotropic and oblique grids alike): the largest is the longest distance
between two points of the component on that slice (over its convex hull), the perpendicular one the component's
extent along the in-plane direction at right angles to it. Each component is reported on the slice where the
product of the two is largest. RANO calls a lesion measurable when both diameters are at least 10 mm.
"""

from typing import Dict, List, Optional

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

MEASURABLE_MM = 10.0
"""Both diameters at least this (mm): measurable in RANO's sense."""

MAX_COMPONENTS = 10
"""Components listed (largest first); ``components`` counts them all."""


def _plane_basis(affine: np.ndarray, in_plane: List[int]) -> np.ndarray:
    """``(3, 2)`` orthonormal world basis of the plane spanned by the two in-plane voxel axes."""
    first = affine[:3, in_plane[0]] / np.linalg.norm(affine[:3, in_plane[0]])
    second = affine[:3, in_plane[1]] - (affine[:3, in_plane[1]] @ first) * first
    return np.stack([first, second / np.linalg.norm(second)], axis=1)


def slice_diameters(points_mm: np.ndarray) -> tuple:
    """``(largest, perpendicular)`` diameters (mm) of 2D points ``(N, 2)`` in mm; ``(0, 0)`` for one point.

    Raises:
        ValueError: ``points_mm`` is not ``(N, 2)`` with N >= 1.
    """
    points = np.asarray(points_mm, dtype=float)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 1:
        raise ValueError(f"points_mm must have shape (N, 2) with N >= 1, got {points.shape}")
    if len(points) == 1:
        return 0.0, 0.0
    try:
        hull = points[ConvexHull(points).vertices]
    except (QhullError, ValueError):  # collinear or too few points: the points themselves
        hull = points
    distances = np.linalg.norm(hull[:, None, :] - hull[None, :, :], axis=-1)
    i, j = np.unravel_index(int(np.argmax(distances)), distances.shape)
    largest = float(distances[i, j])
    direction = (hull[j] - hull[i]) / largest
    across = points @ np.array([-direction[1], direction[0]])
    return largest, float(across.max() - across.min())


def lesion_measurements(mask: np.ndarray, affine: Optional[np.ndarray], axis: int = 2) -> Dict:
    """Volume, components and their diameters of a binary ``mask``.

    Args:
        mask: ``(H, W)`` or ``(H, W, D)``, non-zero = lesion.
        affine: 4x4 voxel -> world (mm); None: 1 mm voxels along the world axes (2D pictures carry no spacing).
        axis: the voxel axis of the axial slices (3D only).

    Returns:
        ``{"volume_ml", "components", "lesions": [{"volume_ml", "slices": [first, last], "slice",
        "largest_diameter_mm", "perpendicular_diameter_mm", "product_mm2", "measurable"}, ...],
        "sum_of_products_mm2"}`` (the sum over measurable lesions); lesions largest first, at most
        :data:`MAX_COMPONENTS`.
    """
    mask = np.asarray(mask) != 0
    if mask.ndim not in (2, 3):
        raise ValueError(f"mask must be 2D or 3D, got shape {mask.shape}")
    if mask.ndim == 3 and axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    volume = mask[..., None] if mask.ndim == 2 else mask
    axis = 2 if mask.ndim == 2 else axis
    full = np.eye(4)
    if affine is not None and mask.ndim == 3:
        full = np.asarray(affine, dtype=float)
    elif affine is not None:  # a 2D picture's own in-plane grid
        full[:2, :2] = np.asarray(affine, dtype=float)[:2, :2]
    voxel_mm3 = abs(float(np.linalg.det(full[:3, :3])))
    in_plane = [d for d in range(3) if d != axis]
    basis = _plane_basis(full, in_plane)
    labelled, count = ndimage.label(volume, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = ndimage.sum_labels(volume, labelled, index=np.arange(1, count + 1)) if count else np.array([])
    lesions = []
    for index in np.argsort(-sizes)[:MAX_COMPONENTS]:
        component = labelled == index + 1
        spanned = np.nonzero(component.any(axis=tuple(in_plane)))[0]
        measured = []
        for k in spanned:
            pixels = np.argwhere(np.take(component, k, axis=axis))  # (N, 2) in the in-plane axes' order
            largest, across = slice_diameters(pixels @ full[:3, in_plane].T @ basis)
            measured.append((largest * across, largest, across, int(k)))
        _, *best = max(measured)
        lesions.append(
            {
                "volume_ml": round(float(sizes[index]) * voxel_mm3 / 1000.0, 4),
                "slices": [int(spanned[0]), int(spanned[-1])],
                "slice": best[2],
                "largest_diameter_mm": round(best[0], 1),
                "perpendicular_diameter_mm": round(best[1], 1),
                "product_mm2": round(best[0] * best[1], 1),
                "measurable": bool(best[0] >= MEASURABLE_MM and best[1] >= MEASURABLE_MM),
            }
        )
    return {
        "volume_ml": round(float(volume.sum()) * voxel_mm3 / 1000.0, 4),
        "components": int(count),
        "lesions": lesions,
        "sum_of_products_mm2": round(sum(x["product_mm2"] for x in lesions if x["measurable"]), 1),
        "method": "diameters between voxel centres on the axial slice with the largest product; perpendicular: "
        "extent at right angles to the largest (RANO-style)",
    }
