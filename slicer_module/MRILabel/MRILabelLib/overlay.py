"""Overlay and volume arithmetic with numpy: class-activation map display values and colours,
label volumes, and merging edited segments into one label map."""

import hashlib
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .geometry import Geometry, differences, matrix_token

#: Colour stops of the heat colour map (value, red, green, blue): transparent-blue, cyan, yellow, red.
HEAT_STOPS = ((0.0, 0.0, 0.0, 1.0), (0.35, 0.0, 1.0, 1.0), (0.65, 1.0, 1.0, 0.0), (1.0, 1.0, 0.0, 0.0))

_ID_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")


def cam_display_values(cam: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Class-activation map ready to overlay: NaN -> 0, clipped to [0, 1], values below ``threshold`` -> 0.

    Args:
        cam: activation map (any shape), nominally in [0, 1].
        threshold: values below it are hidden (set to 0); in [0, 1].
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    values = np.clip(np.nan_to_num(np.asarray(cam, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    values[values < threshold] = 0.0
    return values


def check_aligned(
    overlay: Union[Geometry, Sequence[int]], image: Union[Geometry, Sequence[int]], what: str = "The overlay"
) -> None:
    """Raise ValueError unless an overlay lies on its image's voxel grid.

    Args:
        overlay: the overlay's :class:`~MRILabelLib.geometry.Geometry` (shape, spacing, origin and axis directions
            are compared, with the tolerances of :mod:`MRILabelLib.geometry`), or only its array shape.
        image: the image's, of the same kind.
        what: the overlay as the sentence names it, e.g. ``The class-activation map``.

    Raises:
        ValueError: one plain sentence naming what differs, e.g. "The class-activation map does not line up with
            the image: its voxel size is 1 × 1 × 2 mm but the image's is 1 × 1 × 3 mm." (shapes only: the
            technical ``overlay_shape ... differs from image_shape ...``).
    """
    if isinstance(overlay, Geometry) and isinstance(image, Geometry):
        found = differences(overlay, image)
        if found:
            raise ValueError(f"{what} does not line up with the image: {'; '.join(found)}")
        return
    if tuple(overlay) != tuple(image):
        raise ValueError(f"overlay_shape {tuple(overlay)} differs from image_shape {tuple(image)}")


def heat_colors(values: np.ndarray) -> np.ndarray:
    """RGB colours (``values.shape + (3,)``, floats in [0, 1]) of values in [0, 1] on the heat colour map."""
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    stops = np.asarray(HEAT_STOPS)
    return np.stack([np.interp(values, stops[:, 0], stops[:, c]) for c in (1, 2, 3)], axis=-1)


def heat_color_table(steps: int = 256) -> List[Tuple[float, float, float, float]]:
    """RGBA rows of a colour table for the overlay; entry 0 is fully transparent so zeros do not show.

    Args:
        steps: number of entries (at least 2); entry ``i`` shows the value ``i / (steps - 1)``.
    """
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be a whole number >= 2, got {steps!r}")
    colours = heat_colors(np.linspace(0.0, 1.0, steps))
    return [(float(r), float(g), float(b), 0.0 if i == 0 else 1.0) for i, (r, g, b) in enumerate(colours)]


def blend(grey: np.ndarray, cam: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """RGB preview: the grey image (normalised to [0, 1]) with the CAM's heat colours blended in where it is > 0.

    Args:
        grey: image intensities (any range).
        cam: activation map in [0, 1], same shape as ``grey``.
        opacity: weight of the overlay colour where the CAM is > 0, in [0, 1].
    """
    if not 0.0 <= float(opacity) <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity!r}")
    grey, cam = np.asarray(grey, dtype=np.float64), cam_display_values(cam)
    check_aligned(cam.shape, grey.shape)
    span = grey.max() - grey.min() if grey.size else 0.0
    base = (grey - grey.min()) / span if span > 0 else np.zeros_like(grey)
    weight = np.where(cam > 0, float(opacity), 0.0)[..., None]
    return (1.0 - weight) * base[..., None] + weight * heat_colors(cam)


def voxel_volume(spacing: Sequence[float]) -> float:
    """Volume of one voxel in mm³ (area in mm² for 2 spacings)."""
    spacing = [float(s) for s in spacing]
    if not spacing or any(s <= 0 for s in spacing):
        raise ValueError(f"spacing must be positive millimetres per axis, got {spacing!r}")
    return float(np.prod(spacing))


def label_volumes(label_map: np.ndarray, spacing: Sequence[float], labels: Mapping[str, int]) -> Dict[str, float]:
    """Volume (mm³) of each label of a label map.

    Args:
        label_map: integer label map.
        spacing: voxel size in mm per axis (as many as the map has axes).
        labels: label name -> value.
    """
    label_map = np.asarray(label_map)
    if len(spacing) != label_map.ndim:
        raise ValueError(f"spacing has {len(spacing)} values but label_map has {label_map.ndim} axes")
    voxel = voxel_volume(spacing)
    return {name: float(np.count_nonzero(label_map == value)) * voxel for name, value in labels.items()}


def merge_segments(masks: Mapping[str, np.ndarray], labels: Mapping[str, int]) -> np.ndarray:
    """One uint8 label map from per-segment masks; where segments overlap, the later one in ``masks`` wins.

    Args:
        masks: segment name -> boolean (or 0/1) mask, all of one shape.
        labels: segment name -> label value (1..255).
    """
    if not masks:
        raise ValueError("masks must hold at least one segment")
    shapes = {np.asarray(m).shape for m in masks.values()}
    if len(shapes) != 1:
        raise ValueError(f"masks must all have one shape, got {sorted(shapes)}")
    merged = np.zeros(shapes.pop(), dtype=np.uint8)
    for name, mask in masks.items():
        value = labels.get(name)
        if value is None or not 1 <= int(value) <= 255:
            raise ValueError(f"labels must give segment {name!r} a value in 1..255, got {value!r}")
        merged[np.asarray(mask) > 0] = int(value)
    return merged


def volume_fingerprint(
    array: np.ndarray,
    spacing: Sequence[float],
    ijk_to_ras: Optional[np.ndarray] = None,
    parent_to_world: Union[np.ndarray, str, None] = None,
) -> str:
    """Ten hex digits identifying a volume's voxels and where they are (same content and place -> same fingerprint).

    Args:
        array: the voxels.
        spacing: voxel size in mm.
        ijk_to_ras: the volume's IJK->RAS matrix (origin and axis directions; rounded to 6 decimals).
        parent_to_world: the parent transform's matrix to world (identity = none), or a text standing for a
            non-linear transform; None when the volume has no parent transform.
    """
    array = np.ascontiguousarray(array)
    header: Tuple = (array.shape, str(array.dtype), [round(float(s), 6) for s in spacing])
    place = matrix_token(ijk_to_ras)
    world = parent_to_world if isinstance(parent_to_world, str) else matrix_token(parent_to_world)
    if place is not None or world is not None:
        header += (place, world)
    digest = hashlib.sha256(str(header).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()[:10]


def safe_image_id(name: str, fingerprint: str = "") -> str:
    """A datastore image id from a volume's name: letters, digits, '.', '_' and '-' only, plus a fingerprint.

    Args:
        name: the volume's name (e.g. a Slicer node name).
        fingerprint: appended after ``_`` so that different volumes with one name get different ids.
    """
    base = _ID_CHARACTERS.sub("_", str(name or "")).strip("._-") or "volume"
    return f"{base}_{fingerprint}" if fingerprint else base
