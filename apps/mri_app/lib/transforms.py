"""Transform chains shared by every task: written once here, used by the infer and train hooks.

Conventions: images are channel-first MetaTensors, ``(C, H, W)`` for a 2D slice (PNG/JPG/TIF) and
``(C, H, W, D)`` for a volume (NIfTI/NRRD), in the file's own voxel grid (no reorientation, so results
land back in the input grid). 2D models see one axial slice resized to ``(S, S)`` pixels.
"""

from typing import Any, Dict, Hashable, Mapping, Optional, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    DivisiblePadd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandomizableTransform,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
    RandShiftIntensityd,
    RandSimulateLowResolutiond,
    RandZoomd,
    Spacingd,
    SpatialPadd,
)

from lib.lesion_measures import lesion_measurements

# ITU-R BT.601 luma weights, for slices stored as RGB.
_LUMA = (0.299, 0.587, 0.114)


def axial_axis(affine) -> int:
    """Voxel axis (0, 1 or 2) whose direction is closest to the superior (S) world axis.

    Args:
        affine: 4x4 voxel-to-RAS matrix (mm).
    """
    matrix = np.asarray(affine, dtype=float)
    if matrix.shape[0] < 4:
        return 2
    direction = matrix[:3, :3] / np.maximum(np.linalg.norm(matrix[:3, :3], axis=0), 1e-12)
    return int(np.argmax(np.abs(direction[2])))


class ToGrayscaled(MapTransform):
    """Reduce a multi-channel image ``(C, *spatial)`` to one channel ``(1, *spatial)``.

    Grayscale pictures saved as RGB (all channels equal) keep their first channel; true colour
    pictures are mixed with BT.601 luma weights. One-channel images pass unchanged.
    """

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d: Dict[Hashable, Any] = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if img.shape[0] == 1:
                continue
            if img.shape[0] in (3, 4):
                rgb = img[:3]
                if torch.equal(rgb[0], rgb[1]) and torch.equal(rgb[1], rgb[2]):
                    d[key] = img[:1]
                else:
                    weights = torch.tensor(_LUMA, dtype=img.dtype, device=img.device).reshape(
                        3, *([1] * (img.ndim - 1))
                    )
                    d[key] = (rgb * weights).sum(0, keepdim=True)
            else:
                d[key] = img[:1]
        return d


def load(keys: Sequence[str]) -> list:
    """Read images/labels of any supported format as channel-first float MetaTensors, one channel each."""
    return [LoadImaged(keys=keys, ensure_channel_first=True, image_only=True), ToGrayscaled(keys=keys)]


def normalize(key: str = "image") -> list:
    """Per-image z-score over non-zero voxels (robust to background and scanner units)."""
    return [NormalizeIntensityd(keys=key, nonzero=True)]


def infer_slices_pre() -> list:
    """Pre-transforms of every slice-wise 2D task at inference: ``image`` -> normalised ``(1, H, W[, D])``."""
    return load(["image"]) + normalize() + [EnsureTyped(keys="image", dtype=torch.float32)]


MIRROR_AXIS_2D = 0
"""The spatial axis the 2D training augmentation mirrors along (the image's first axis: left-right for slices of a
RAS volume and for pictures as MONAI reads them); a classifier's ``test_time_mirroring`` averages over the same
mirror."""


def augment_2d(keys: Sequence[str], modes: Sequence[str]) -> list:
    return [
        RandFlipd(keys=keys, prob=0.5, spatial_axis=MIRROR_AXIS_2D),
        RandAffined(
            keys=keys,
            prob=0.5,
            rotate_range=0.15,
            scale_range=0.1,
            translate_range=(8, 8),
            mode=modes,
            padding_mode="zeros",
        ),
        RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
        RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
        RandGaussianNoised(keys="image", prob=0.2, std=0.05),
    ]


class RandQuantized(MapTransform, RandomizableTransform):
    """Round an image to ``levels`` grey levels between its own minimum and maximum (as an 8-bit JPEG or PNG export
    of a scan is), with probability ``prob``; ``(C, *spatial)`` in, same shape and scale out."""

    def __init__(self, keys: KeysCollection, levels: int = 256, prob: float = 0.3, allow_missing_keys: bool = False):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if levels < 2:
            raise ValueError(f"levels must be >= 2, got {levels}")
        self.levels = levels

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d: Dict[Hashable, Any] = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            img = torch.as_tensor(d[key])
            low, high = img.min(), img.max()
            if high > low:
                step = (high - low) / (self.levels - 1)
                d[key] = torch.round((img - low) / step) * step + low
        return d


def scanner_augment(key: str = "image", mask: Optional[str] = None) -> list:
    """Appearance changes between scanners, sources and file formats, for networks that must answer by contrast and
    anatomy rather than by source: bias field, gamma, blur (thick slices, resampling), 8-bit quantisation (JPEG/PNG
    exports) and zoom-in (part of the head in view, the skull ring cut off).

    Args:
        key: the image, ``(C, H, W)``.
        mask: a label map zoomed with the image (nearest neighbour on the same pixel centres) so that they stay
            aligned; the appearance changes leave it alone. None: an image-level label (classifiers).
    """
    zoom_keys = [key] if mask is None else [key, mask]
    # area: RandZoomd's default for an image alone. With a mask, bilinear and "nearest-exact" sample the same
    # pixel centres; torch's legacy "nearest" beside "area" shifts the mask by up to a pixel against its image.
    zoom_modes = ["area"] if mask is None else ["bilinear", "nearest-exact"]
    return [
        RandBiasFieldd(keys=key, prob=0.3, coeff_range=(0.0, 0.3)),
        RandAdjustContrastd(keys=key, prob=0.3, gamma=(0.7, 1.5)),
        RandGaussianSmoothd(keys=key, prob=0.2, sigma_x=(0.3, 1.2), sigma_y=(0.3, 1.2)),
        RandQuantized(keys=key, levels=256, prob=0.3),
        RandZoomd(keys=zoom_keys, prob=0.2, min_zoom=1.0, max_zoom=1.4, keep_size=True, mode=zoom_modes),
    ]


def nnunet_augment_3d(keys: Sequence[str] = ("image", "label")) -> list:
    """nnU-Net's default augmentation of 3D patches (Isensee et al., Nature Methods 2021; ``nnUNetTrainer``), in
    MONAI transforms: rotation up to ±30° about each axis and scaling 0.7-1.4 along each axis (each with probability
    0.2), Gaussian noise (std up to 0.3, p 0.1), blur (σ 0.5-1 voxel, p 0.2), brightness ×0.75-1.25 (p 0.15),
    contrast ×0.75-1.25 about the mean within the original range (p 0.15), low-resolution simulation (zoom 0.5-1,
    p 0.25) and gamma 0.7-1.5 on the inverted (p 0.1) and the plain image (p 0.3), both keeping mean and std.
    Mirroring is left to the task's ``flip_axes``.

    Args:
        keys: the image ``(C, H, W, D)`` first, then a label map moved with it (nearest neighbour); the intensity
            changes touch the image only.
    """
    if not keys:
        raise ValueError(f"keys must name the image first, got {list(keys)}")
    image = keys[0]
    # image and label through one resampling grid (RandAffined), so they stay aligned: torch's "nearest" resize,
    # which RandZoomd uses, shifts a label by up to a voxel against its linearly resized image
    modes = ["bilinear"] + ["nearest"] * (len(keys) - 1)
    blur = (0.5, 1.0)
    return [
        RandAffined(keys=keys, prob=0.2, rotate_range=(np.pi / 6,) * 3, mode=modes, padding_mode="zeros"),
        RandAffined(keys=keys, prob=0.2, scale_range=((-0.3, 0.4),) * 3, mode=modes, padding_mode="zeros"),
        RandGaussianNoised(keys=image, prob=0.1, std=0.3),
        RandGaussianSmoothd(keys=image, prob=0.2, sigma_x=blur, sigma_y=blur, sigma_z=blur),
        RandScaleIntensityd(keys=image, factors=0.25, prob=0.15),
        RandScaleIntensityFixedMeand(keys=image, factors=0.25, preserve_range=True, prob=0.15),
        RandSimulateLowResolutiond(keys=image, prob=0.25, zoom_range=(0.5, 1.0)),
        RandAdjustContrastd(keys=image, prob=0.1, gamma=(0.7, 1.5), invert_image=True, retain_stats=True),
        RandAdjustContrastd(keys=image, prob=0.3, gamma=(0.7, 1.5), retain_stats=True),
    ]


def infer_volume_pre(spacing: Sequence[float]) -> list:
    """Pre-transforms of 3D tasks: read, resample to ``spacing`` (mm), normalise."""
    return load(["image"]) + [Spacingd(keys="image", pixdim=spacing, mode="bilinear")] + normalize()


def train_volume_pre(
    spacing: Sequence[float],
    roi: Sequence[int],
    augment: bool,
    samples: int = 2,
    flip_axes: Sequence[int] = (),
    nnunet_augment: bool = False,
) -> list:
    """Training chain of 3D segmentation: resample, normalise, then random patches of ``roi`` voxels.

    Args:
        flip_axes: spatial axes (0..2) each mirrored with probability 0.5 when ``augment`` (the task's
            ``flip_axes``; its infer averages over the same mirrors).
        nnunet_augment: when ``augment``, :func:`nnunet_augment_3d` in place of the mild default (rotation
            ±5.7° and scaling ±10% with p 0.3, intensity ×0.9-1.1, noise).
    """
    keys = ["image", "label"]
    chain = load(keys) + [Spacingd(keys=keys, pixdim=spacing, mode=("bilinear", "nearest"))] + normalize()
    chain.append(SpatialPadd(keys=keys, spatial_size=roi))
    if augment:
        chain += [
            RandCropByPosNegLabeld(keys=keys, label_key="label", spatial_size=roi, pos=1, neg=1, num_samples=samples)
        ]
        chain += (
            nnunet_augment_3d(keys)
            if nnunet_augment
            else [
                RandAffined(keys=keys, prob=0.3, rotate_range=0.1, scale_range=0.1, mode=("bilinear", "nearest")),
                RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
                RandGaussianNoised(keys="image", prob=0.2, std=0.05),
            ]
        )
        chain += [RandFlipd(keys=keys, prob=0.5, spatial_axis=int(axis)) for axis in flip_axes]
    else:
        chain.append(DivisiblePadd(keys=keys, k=8))
    chain.append(EnsureTyped(keys=keys, dtype=torch.float32))
    return chain


def brain_slices(image: torch.Tensor, axis: int, min_fraction: float) -> list:
    """Indices of axial slices whose head area is at least ``min_fraction`` of the largest slice's.

    Head voxels are non-zero voxels above 10 % of the range between the lowest non-zero value and the
    99th percentile, which drops air and noise on raw or z-scored volumes alike.

    Args:
        image: ``(1, H, W, D)`` volume.
        axis: voxel axis of the slices (0, 1 or 2).
        min_fraction: 0..1.
    """
    volume = torch.as_tensor(image)[0].float()
    values = volume[volume != 0].flatten()
    if values.numel() == 0:
        return list(range(volume.shape[axis]))
    values = values[:: max(1, values.numel() // 200000)]
    low, high = values.min(), torch.quantile(values, 0.99)
    head = (volume != 0) & (volume > low + 0.1 * (high - low))
    area = head.sum(dim=[d for d in range(3) if d != axis]).float()
    if area.max() <= 0:
        return list(range(volume.shape[axis]))
    return [int(i) for i in torch.nonzero(area >= min_fraction * area.max()).flatten()]


def _label_and_affine(d: Mapping, key: Hashable) -> tuple:
    """``(label map, affine)`` of ``d[key]`` as numpy: the map squeezed to ``(H, W[, D])``, the affine from
    ``d[key + "_meta_dict"]["affine"]`` (voxel -> RAS mm) or None."""
    affine = (d.get(f"{key}_meta_dict") or {}).get("affine")
    affine = None if affine is None else np.asarray(torch.as_tensor(affine).cpu(), dtype=float)
    return np.asarray(torch.as_tensor(d[key]).cpu()).squeeze(), affine


class LesionMeasuresd(MapTransform):
    """Add ``measurements["lesions"]`` (:func:`lib.lesion_measures.lesion_measurements`: volume in mL, connected
    components, RANO-style axial diameters) for the voxels of ``label`` in ``data[key]``, in the same grid and with
    the same affine as :class:`LabelVolumesd` (after it in the chain)."""

    def __init__(self, keys: KeysCollection, label: int, result_key: str = "result"):
        super().__init__(keys)
        self.label, self.result_key = int(label), result_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d: Dict[Hashable, Any] = dict(data)
        for key in self.key_iterator(d):
            label, affine = _label_and_affine(d, key)
            mask = label == self.label
            axis = axial_axis(affine) if affine is not None and mask.ndim == 3 else 2
            result = dict(d.get(self.result_key) or {})
            result["measurements"] = dict(
                result.get("measurements") or {}, lesions=lesion_measurements(mask, affine, axis)
            )
            d[self.result_key] = result
        return d


class LabelVolumesd(MapTransform):
    """Measure a label map: volume (mm³, 3D) or area (mm², 2D) of each label, and left/right volumes.

    Reads ``data[key]`` (label map ``(H, W[, D])`` in the input grid) and its affine from
    ``data[key + "_meta_dict"]["affine"]`` (voxel -> RAS mm); writes ``data[result_key]["measurements"]``.
    Left/right split: voxels whose world x lies right (+x) or left of the x of the field of view's centre
    (assumes a roughly centred head; an atlas-based midline is the whole-head task's job).
    PNG/JPG/TIF slices carry no pixel spacing: their areas assume 1 mm pixels (``spacing_from_file`` False).
    ``sides=False`` leaves the left/right split out (an input showing one side only, e.g. a hippocampus crop).
    """

    def __init__(self, keys: KeysCollection, labels: Mapping[str, int], result_key: str = "result", sides: bool = True):
        super().__init__(keys)
        self.labels = dict(labels)
        self.result_key = result_key
        self.sides = sides

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d: Dict[Hashable, Any] = dict(data)
        for key in self.key_iterator(d):
            label, affine = _label_and_affine(d, key)
            dims = label.ndim
            unit = "mm3" if dims == 3 else "mm2"
            voxel = 1.0 if affine is None or affine.shape[0] < dims + 1 else abs(np.linalg.det(affine[:dims, :dims]))
            sizes = {name: float((label == idx).sum() * voxel) for name, idx in self.labels.items()}
            measured = {
                unit: {name: round(v, 2) for name, v in sizes.items()},
                f"total_{unit}": round(sum(sizes.values()), 2),
                f"voxel_{unit}": round(voxel, 4),
                "spacing_from_file": affine is not None and dims == 3,
            }
            if self.sides and dims == 3 and affine is not None and affine.shape[0] >= 4:
                idx = np.argwhere(np.isin(label, [v for v in self.labels.values() if v != 0]))
                x = idx @ affine[0, :3] + affine[0, 3]
                centre = (np.array(label.shape) - 1) / 2.0 @ affine[0, :3] + affine[0, 3]
                measured["right_mm3"] = round(float((x > centre).sum() * voxel), 2)
                measured["left_mm3"] = round(float((x <= centre).sum() * voxel), 2)
            result = dict(d.get(self.result_key) or {})
            result["measurements"] = measured
            d[self.result_key] = result
        return d


def measure_label_file(
    image_path: str, label_path: str, labels: Mapping[str, int], lesions: Optional[str] = None, sides: bool = True
) -> Dict:
    """``measurements`` of the label map in ``label_path`` on the image in ``image_path``, as a segmentation infer
    measures its own answer: :class:`LabelVolumesd` (``sides`` as there), then :class:`LesionMeasuresd` for the
    label named ``lesions``, with the image's affine as read (a final label, the model's answer or a person's
    correction, is measured as the result was).

    Raises:
        ValueError: ``lesions`` names no label, or the label map is not of the image's size.
    """
    if lesions is not None and lesions not in labels:
        raise ValueError(f"lesions must name one of the labels {list(labels)}, got {lesions!r}")
    image = load(["image"])[0]({"image": image_path})["image"]
    label = load(["label"])[0]({"label": label_path})["label"]
    if tuple(label.shape[1:]) != tuple(image.shape[1:]):
        raise ValueError(f"the label map's size {tuple(label.shape[1:])} is not the image's {tuple(image.shape[1:])}")
    data: Dict[Hashable, Any] = {"pred": label[0], "pred_meta_dict": {"affine": image.meta["original_affine"]}}
    data = LabelVolumesd(keys="pred", labels=labels, sides=sides)(data)
    if lesions is not None:
        data = LesionMeasuresd(keys="pred", label=labels[lesions])(data)
    return data["result"]["measurements"]
