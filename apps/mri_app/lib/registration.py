"""Finding the hippocampi in a whole-head T1: affine registration to the MNI152 template (SimpleITK) and
fixed boxes around each hippocampus in template space, mapped into the input.

Coordinates: SimpleITK works in LPS millimetres, MNI coordinates (and the boxes below) are RAS millimetres;
``_lps`` converts. Crops are laid out in RAS voxel order at 1 mm (like the Decathlon's Task04 crops the
hippocampus model is trained on), so the network sees a whole-head crop the way it saw its training data.
"""

import functools
import os
from typing import Dict, Optional, Sequence, Tuple, Union, cast

import numpy as np
import SimpleITK as sitk

from mri_label.core.templates import template_path

HIPPOCAMPUS_BOXES_MNI: Dict[str, Dict[str, Tuple[float, float, float]]] = {
    # centre (RAS mm) and size (mm) of a box holding each hippocampus (head and body) of the MNI152 template;
    # a little larger than the Decathlon crops (31-43 x 40-58 x 24-47 mm) to absorb registration error.
    "left": {"center": (-28.0, -18.0, -16.0), "size": (40.0, 56.0, 42.0)},
    "right": {"center": (28.0, -18.0, -16.0), "size": (40.0, 56.0, 42.0)},
}

CROP_MAX_EXTENT_MM = 90.0
"""An input whose field of view is under this on every axis is taken as a hippocampus crop (the Decathlon's
are at most 58 mm); a head or brain spans 140 mm or more."""


def read_image(path: str) -> sitk.Image:
    """A NIfTI/NRRD file or a DICOM series folder as a SimpleITK image (physical geometry kept)."""
    if os.path.isdir(path):
        reader = sitk.ImageSeriesReader()
        files = reader.GetGDCMSeriesFileNames(path)
        if not files:
            raise ValueError(f"no DICOM series in folder {path}")
        reader.SetFileNames(files)
        return reader.Execute()
    return sitk.ReadImage(path)


def is_crop(size: Sequence[int], spacing: Sequence[float]) -> bool:
    """True for a hippocampus crop: its field of view (``size`` voxels x ``spacing`` mm) is under
    :data:`CROP_MAX_EXTENT_MM` along every axis; False for a head or brain."""
    return bool(np.all(np.asarray(size, dtype=float) * np.asarray(spacing, dtype=float) < CROP_MAX_EXTENT_MM))


def _lps(ras: Sequence[float]) -> np.ndarray:
    return np.asarray(ras, dtype=float) * np.array([-1.0, -1.0, 1.0])


def register_to_template(image: sitk.Image, template: Optional[sitk.Image] = None, seed: int = 1) -> sitk.Transform:
    """Affine transform mapping template points (LPS mm) to the matching points of ``image``.

    Rigid then affine, Mattes mutual information, multi-resolution (8, 4, 2 mm), started from the images'
    centres of mass, so any orientation and voxel size of the input works. Deterministic for a given ``seed``
    (the metric's random sample; SimpleITK reads 0 as "a new seed from the clock each run", so it is refused).

    Raises:
        ValueError: ``seed`` is not a positive integer.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 1:
        raise ValueError(f"seed must be a positive integer (0 would draw a new one from the clock), got {seed!r}")
    fixed = _downsampled(template) if template is not None else _template_2mm()
    moving = _downsampled(image)
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.VersorRigid3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    # SimpleITK hands back the derived transform (a VersorRigid3DTransform here); its stubs say Transform
    rigid = cast(sitk.VersorRigid3DTransform, _register(fixed, moving, initial, seed, shrink=(4, 2), sigmas=(4.0, 2.0)))
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    affine.SetCenter(rigid.GetCenter())
    return _register(fixed, moving, affine, seed, shrink=(2, 1), sigmas=(2.0, 0.0))


def linear_scale(transform: sitk.Transform) -> float:
    """Volume scale factor |det A| of the linear part of a template-to-image affine ``transform``: how much larger a
    region of the image is than the template region it matches (1 for a rigid transform)."""
    affine = transform if isinstance(transform, sitk.AffineTransform) else sitk.AffineTransform(transform)
    return float(abs(np.linalg.det(np.asarray(affine.GetMatrix(), dtype=float).reshape(3, 3))))


@functools.lru_cache(maxsize=1)
def template_intracranial_ml() -> float:
    """Intracranial volume (mL) of the MNI152 template: its non-zero voxels (the template is brain-extracted, so they
    are the intracranial region as the ICBM 2009a mask draws it; about 1,887 mL)."""
    template = sitk.ReadImage(template_path())
    return float((sitk.GetArrayViewFromImage(template) > 0).sum() * np.prod(template.GetSpacing()) / 1000.0)


def etiv_ml(transform: sitk.Transform) -> float:
    """Estimated total intracranial volume (mL) of an image from its affine registration to the MNI152 template
    (template points -> image points, :func:`register_to_template`): the template's intracranial volume times the
    transform's volume scale, as FreeSurfer's eTIV takes head size from the atlas registration's determinant
    (Buckner et al. 2004, NeuroImage 23:724)."""
    return template_intracranial_ml() * linear_scale(transform)


REGISTRATION_SPACING_MM = 2.0
"""Both images are registered at this voxel size (smoothed, then resampled once): the finest level."""


def _downsampled(image: sitk.Image) -> sitk.Image:
    """``image`` smoothed and resampled to :data:`REGISTRATION_SPACING_MM` voxels on its own axes (float32)."""
    image = sitk.Cast(image, sitk.sitkFloat32)
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    size = [max(1, int(round(n))) for n in np.asarray(image.GetSize()) * spacing / REGISTRATION_SPACING_MM]
    sigma = [max(0.0, (REGISTRATION_SPACING_MM - s) / 2.0) for s in spacing]
    smoothed = sitk.SmoothingRecursiveGaussian(image, sigma) if max(sigma) > 0 else image
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing([REGISTRATION_SPACING_MM] * 3)
    grid.SetDirection(image.GetDirection())
    grid.SetOrigin(image.GetOrigin())
    return sitk.Resample(smoothed, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


@functools.lru_cache(maxsize=1)
def _template_2mm() -> sitk.Image:
    return _downsampled(sitk.ReadImage(template_path()))


def _register(fixed, moving, initial, seed, shrink, sigmas) -> sitk.Transform:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.03, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=100, gradientMagnitudeTolerance=1e-6
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(shrink))
    method.SetSmoothingSigmasPerLevel(list(sigmas))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    result = method.Execute(fixed, moving)
    return result.GetNthTransform(0) if isinstance(result, sitk.CompositeTransform) else result


def box_grid(
    center_ras: Union[Sequence[float], np.ndarray], size_mm: Union[Sequence[float], np.ndarray], spacing_mm: float = 1.0
) -> sitk.Image:
    """An empty image whose voxel grid covers the box in RAS voxel order (i -> R, j -> A, k -> S).

    Args:
        center_ras: box centre, RAS mm (template space or the input's own space).
        size_mm: box size along R, A, S (mm).
        spacing_mm: voxel size of the grid (mm).
    """
    if spacing_mm <= 0:
        raise ValueError(f"spacing_mm must be > 0, got {spacing_mm}")
    if len(center_ras) != 3 or len(size_mm) != 3 or min(size_mm) <= 0:
        raise ValueError(f"center_ras and size_mm must be three numbers, sizes > 0; got {center_ras}, {size_mm}")
    voxels = [max(1, int(round(s / spacing_mm))) for s in size_mm]
    corner_ras = np.asarray(center_ras, dtype=float) - (np.asarray(voxels) - 1) * spacing_mm / 2.0
    grid = sitk.Image(voxels, sitk.sitkUInt8)
    grid.SetSpacing([spacing_mm] * 3)
    grid.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))  # RAS voxel axes in LPS
    grid.SetOrigin(tuple(_lps(corner_ras)))
    return grid


def box_from_corners(corner_a_ras: Sequence[float], corner_b_ras: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """Centre and size (RAS mm) of the box spanned by two opposite corners given by a user."""
    a, b = np.asarray(corner_a_ras, dtype=float), np.asarray(corner_b_ras, dtype=float)
    if a.shape != (3,) or b.shape != (3,) or not np.all(np.isfinite(np.r_[a, b])):
        raise ValueError(f"a box needs two corners of three finite RAS coordinates (mm), got {list(a)} and {list(b)}")
    size = np.abs(b - a)
    if np.any(size < 8.0) or np.any(size > 150.0):
        raise ValueError(f"box size must lie in 8..150 mm along each axis, got {size.round(1).tolist()}")
    return (a + b) / 2.0, size


def crop(image: sitk.Image, grid: sitk.Image, transform: Optional[sitk.Transform] = None) -> np.ndarray:
    """Intensities of ``image`` on ``grid`` (linear), as a float32 array in the grid's (i, j, k) order.
    ``transform`` maps grid points to image points (identity when the grid lies in the image's own space)."""
    resampled = sitk.Resample(
        sitk.Cast(image, sitk.sitkFloat32), grid, transform or sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32
    )
    return sitk.GetArrayFromImage(resampled).transpose(2, 1, 0)


def paste(
    labels: np.ndarray, grid: sitk.Image, image: sitk.Image, transform: Optional[sitk.Transform] = None
) -> np.ndarray:
    """A label array on ``grid`` (i, j, k order) resampled (nearest) onto the voxels of ``image``.
    ``transform`` is the one given to :func:`crop`; its inverse maps image points back onto the grid.
    Returns a uint8 array in the image's (i, j, k) order."""
    return _resample_back(labels.astype(np.uint8), grid, image, transform, sitk.sitkNearestNeighbor, sitk.sitkUInt8)


def paste_values(
    values: np.ndarray, grid: sitk.Image, image: sitk.Image, transform: Optional[sitk.Transform] = None
) -> np.ndarray:
    """Like :func:`paste` for a float map (linear interpolation, 0 outside the grid): float32, (i, j, k) order."""
    return _resample_back(values.astype(np.float32), grid, image, transform, sitk.sitkLinear, sitk.sitkFloat32)


def _resample_back(array, grid, image, transform, interpolator, pixel) -> np.ndarray:
    source = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    source.CopyInformation(grid)
    inverse = transform.GetInverse() if transform is not None else sitk.Transform()
    reference = sitk.Image(image.GetSize(), pixel)
    reference.CopyInformation(image)
    pasted = sitk.Resample(source, reference, inverse, interpolator, 0, pixel)
    return sitk.GetArrayFromImage(pasted).transpose(2, 1, 0)
