"""Voxel-grid geometry with numpy: where a volume's voxels are in space, and the conversions the panel needs.

A grid is its voxel array's shape (numpy order: slices, rows, columns, i.e. K, J, I) and its IJK->RAS 4 x 4
matrix, whose columns are the axis directions times the spacing and whose last column is the origin. Slicer gives
that matrix for every volume node; a server result's file carries it too.
"""

from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

#: Two grids line up when origins differ by at most this many millimetres ...
ORIGIN_TOLERANCE_MM = 0.01
#: ... spacings by at most this fraction ...
SPACING_TOLERANCE = 1e-3
#: ... and each axis direction (a unit vector) by at most this much.
DIRECTION_TOLERANCE = 1e-3

#: Rec. 601 luma weights (red, green, blue) used to turn an RGB picture into one grey value per pixel.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


class Geometry(NamedTuple):
    """A voxel grid: ``shape`` (K, J, I) and the ``ijk_to_ras`` 4 x 4 matrix."""

    shape: Tuple[int, ...]
    ijk_to_ras: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along I, J, K in millimetres."""
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def origin(self) -> np.ndarray:
        """RAS position of the first voxel's centre."""
        return self.ijk_to_ras[:3, 3].copy()

    @property
    def directions(self) -> np.ndarray:
        """Unit axis directions (columns: I, J, K) in RAS."""
        return self.ijk_to_ras[:3, :3] / self.spacing


def geometry(shape: Sequence[int], ijk_to_ras) -> Geometry:
    """A :class:`Geometry` from a voxel array shape (components, if any, left out) and an IJK->RAS matrix.

    Raises:
        ValueError: the matrix is not 4 x 4 or has a zero-length axis.
    """
    matrix = np.array(ijk_to_ras, dtype=float)
    if matrix.shape != (4, 4):
        raise ValueError(f"ijk_to_ras must be a 4 × 4 matrix, got shape {matrix.shape}")
    if np.any(np.linalg.norm(matrix[:3, :3], axis=0) == 0):
        raise ValueError(f"ijk_to_ras must have non-zero axes, got {matrix.tolist()}")
    return Geometry(tuple(int(n) for n in shape), matrix)


def _numbers(values, separator: str) -> str:
    return separator.join(f"{float(v):.4g}" for v in values)


def differences(overlay: Geometry, image: Geometry) -> List[str]:
    """What differs between two grids, each as a clause for a sentence ("its voxel size is ... but ..."); empty
    when they line up within the tolerances above."""
    found = []
    if tuple(overlay.shape) != tuple(image.shape):
        found.append(
            f"its voxel grid is {_numbers(overlay.shape, ' × ')} but the image's is {_numbers(image.shape, ' × ')}"
        )
        return found  # spacing and origin of grids of different size say little more
    if np.any(np.abs(overlay.spacing - image.spacing) > SPACING_TOLERANCE * np.maximum(image.spacing, 1e-9)):
        found.append(
            f"its voxel size is {_numbers(overlay.spacing, ' × ')} mm but the image's is "
            f"{_numbers(image.spacing, ' × ')} mm"
        )
    if np.any(np.abs(overlay.origin - image.origin) > ORIGIN_TOLERANCE_MM):
        here, there = _numbers(overlay.origin, ", "), _numbers(image.origin, ", ")
        found.append(f"its origin is ({here}) mm but the image's is ({there}) mm")
    if np.any(np.abs(overlay.directions - image.directions) > DIRECTION_TOLERANCE):
        found.append("its axis directions differ from the image's")
    return found


def world_to_local(ijk_to_world, parent_to_world) -> np.ndarray:
    """The IJK->RAS a node needs under a parent transform so that it lands at ``ijk_to_world`` (a result computed
    on a world-coordinate upload); ``parent_to_world`` None means no parent transform."""
    matrix = np.array(ijk_to_world, dtype=float)
    if parent_to_world is None:
        return matrix
    return np.linalg.solve(np.array(parent_to_world, dtype=float), matrix)


def _slice_axis(ijk_to_ras, axis) -> Tuple[np.ndarray, int]:
    matrix = np.array(ijk_to_ras, dtype=float)
    if matrix.shape != (4, 4):
        raise ValueError(f"ijk_to_ras must be a 4 × 4 matrix, got shape {matrix.shape}")
    if isinstance(axis, bool) or axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2 (the voxel axis I, J or K), got {axis!r}")
    return matrix, int(axis)


def slice_center(ijk_to_ras, shape: Sequence[int], axis: int, index: int) -> np.ndarray:
    """RAS position of the centre of one voxel slice: voxel index ``index`` along voxel ``axis`` (0 = I, 1 = J,
    2 = K: how the server's uncertainty summary counts, the NIfTI file's own voxel order), half-way across the other
    two axes.

    Args:
        ijk_to_ras: the grid's IJK->RAS 4 x 4 matrix (with a parent transform folded in, this is the world position).
        shape: the voxel array's shape in numpy order (K, J, I), as :class:`Geometry` has it.
        axis: the voxel axis the slices are counted along.
        index: the slice.

    Raises:
        ValueError: ``axis`` is not 0, 1 or 2, or ``index`` is not a slice of the grid.
    """
    matrix, axis = _slice_axis(ijk_to_ras, axis)
    if len(shape) != 3:
        raise ValueError(f"shape must be a 3D voxel array shape (K, J, I), got {tuple(shape)}")
    sizes = [int(n) for n in reversed(tuple(shape))]  # I, J, K
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < sizes[axis]:
        raise ValueError(
            f"slice {index!r} is not in the volume: along voxel axis {'IJK'[axis]} it has slices 0 to {sizes[axis] - 1}"
        )
    ijk = [(n - 1) / 2.0 for n in sizes]
    ijk[axis] = float(index)
    return (matrix @ np.array([*ijk, 1.0]))[:3]


def slice_normal(ijk_to_ras, axis: int) -> np.ndarray:
    """Unit normal (RAS) of the voxel slices counted along ``axis``: perpendicular to the other two voxel axes,
    pointing the way slice indices grow (for a sheared grid this is not the axis's own direction)."""
    matrix, axis = _slice_axis(ijk_to_ras, axis)
    first, second = (matrix[:3, a] for a in range(3) if a != axis)
    normal = np.cross(first, second)
    length = np.linalg.norm(normal)
    if length == 0:
        raise ValueError(f"ijk_to_ras must have independent axes, got {matrix.tolist()}")
    normal = normal / length
    return -normal if float(normal @ matrix[:3, axis]) < 0 else normal


def closest_view(normals: Sequence[Tuple[str, Sequence[float]]], direction) -> Optional[str]:
    """The view whose slice plane is most nearly parallel to slices with normal ``direction``: the name, of
    ``(name, view normal)`` pairs, with the largest ``|cos|`` between the normals (the first one on a tie); None when
    there is none."""
    direction = np.asarray(direction, dtype=float)
    direction = direction / np.linalg.norm(direction)
    best, best_cos = None, -1.0
    for name, normal in normals:
        vector = np.asarray(normal, dtype=float)
        length = float(np.linalg.norm(vector))
        cos = abs(float(vector @ direction)) / length if length else 0.0
        if cos > best_cos + 1e-9:
            best, best_cos = name, cos
    return best


def is_single_slice(shape: Sequence[int]) -> bool:
    """Whether a volume is one slice (a 2D picture: PNG, JPG, one-slice NIfTI): three axes, the first of size 1."""
    return len(shape) == 3 and int(shape[0]) == 1


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Grey values (float32) of an RGB array (last axis: red, green, blue), by the Rec. 601 weights."""
    rgb = np.asarray(rgb, dtype=np.float32)
    return rgb[..., 0] * LUMA_WEIGHTS[0] + rgb[..., 1] * LUMA_WEIGHTS[1] + rgb[..., 2] * LUMA_WEIGHTS[2]


def scalar_for_upload(array: np.ndarray, vector: bool) -> np.ndarray:
    """What is sent for a volume's voxels: a scalar volume as it is; a vector volume (last axis: components) with
    one component as that component, RGB or RGBA as its luminance (alpha ignored).

    Raises:
        ValueError: a vector volume with another number of components (a displacement field, a DTI volume ...).
    """
    if not vector:
        return array
    components = int(np.asarray(array).shape[-1])
    if components == 1:
        return np.asarray(array)[..., 0]
    if components in (3, 4):
        return luminance(np.asarray(array)[..., :3])
    raise ValueError(
        f"This volume has {components} values per voxel (a vector volume, not a picture or a scan); convert it to a "
        "scalar volume (Vector to Scalar Volume module) before sending it"
    )


def matrix_token(matrix: Optional[np.ndarray], decimals: int = 6) -> Optional[list]:
    """A 4 x 4 matrix rounded for hashing (None for None; the identity counts as None: no transform)."""
    if matrix is None:
        return None
    array = np.round(np.array(matrix, dtype=float), decimals) + 0.0  # + 0.0: -0.0 becomes 0.0
    return None if np.array_equal(array, np.eye(4)) else array.tolist()
