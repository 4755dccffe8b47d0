"""A persistent cache of training slices at training resolution: each volume is read and normalised once.

Slice-wise 2D training used to load and normalise a whole volume for every slice item (0.1-0.2 s per item, minutes
before the first epoch). :func:`cache_items` instead reads each image (and its mask) once, with the same transforms
inference uses (:func:`lib.transforms.infer_slices_pre`: z-score over the non-zero voxels of the whole image),
resizes every axial slice to ``(S, S)`` as :class:`lib.slicewise.SlicewiseInferer` does (bilinear; masks nearest),
and stores the stack as ``.npy`` files that later runs reuse:

* ``<key>.image.npy``: ``(D, S, S)`` float16, the normalised slices in axial order (``D = 1`` for a 2D picture);
* ``<key>.mask.npy``: ``(D, S, S)`` uint8 0/1, where the item has a mask.

``key`` hashes the files' paths, sizes and modification times, ``S`` and :data:`VERSION`: an image replaced in the
datastore (a new upload) gets a new entry. Items then point at the cache files (``image``/``label`` paths ending in
``.npy``, ``slice`` the index in the stack), and :class:`LoadCachedSliced` reads one slice by memory map.
"""

import hashlib
import logging
import os
import tempfile
from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import Compose, EnsureTyped, MapTransform

from lib.transforms import augment_2d, axial_axis, infer_slices_pre, load, scanner_augment

logger = logging.getLogger(__name__)

VERSION = 1
"""Bumped whenever what a cache entry holds changes (normalisation, resize): old entries are then not reused."""

CACHE_FOLDER = os.path.join(".mri-label-cache", "slices")
"""Where :func:`cache_folder` puts the cache under a datastore (or model) folder."""


def cache_folder(datastore_path: Optional[str], fallback: str) -> str:
    """The cache folder: under the datastore's folder when it has one (reused by every task and run on it), else under
    ``fallback`` (e.g. the task's model folder, for a DICOMweb datastore)."""
    return os.path.join(datastore_path or fallback, CACHE_FOLDER)


def _stamp(path: Optional[str]) -> str:
    if path is None:
        return "-"
    stat = os.stat(path)
    return f"{os.path.realpath(path)}|{stat.st_size}|{stat.st_mtime_ns}"


def entry_key(image: str, mask: Optional[str], size: int) -> str:
    """Cache key of an image (and mask) at side ``size`` (pixels)."""
    return hashlib.sha1(f"v{VERSION}|{size}|{_stamp(image)}|{_stamp(mask)}".encode()).hexdigest()


def _resize_stack(volume: torch.Tensor, axis: Optional[int], size: int, mode: str) -> np.ndarray:
    """``(1, H, W[, D])`` -> ``(D, S, S)`` slices along voxel ``axis`` resized to ``size`` (bilinear as at
    inference)."""
    stack = volume[0].as_subclass(torch.Tensor).float()
    stack = stack[..., None] if axis is None else stack.movedim(axis, -1)
    stack = stack.movedim(-1, 0)[:, None]  # (D, 1, H, W)
    if tuple(stack.shape[-2:]) != (size, size):
        stack = F.interpolate(stack, size=(size, size), mode=mode)
    return stack[:, 0].numpy()


def _atomic_save(path: str, array: np.ndarray) -> None:
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".partial.npy")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.save(stream, array)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def build_entry(folder: str, image: str, mask: Optional[str], size: int) -> Dict[str, Any]:
    """Read ``image`` (and ``mask``) once and write its slices into ``folder``, unless already there.

    Returns:
        ``{"image": path of the (D, S, S) float16 stack, "mask": path of the uint8 mask stack or None, "depth": D}``.
    """
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels, got {size}")
    key = entry_key(image, mask, size)
    image_path = os.path.join(folder, f"{key}.image.npy")
    mask_path = os.path.join(folder, f"{key}.mask.npy") if mask else None
    if os.path.exists(image_path) and (mask_path is None or os.path.exists(mask_path)):
        depth = np.load(image_path, mmap_mode="r").shape[0]
        return {"image": image_path, "mask": mask_path, "depth": depth}
    os.makedirs(folder, exist_ok=True)
    volume = Compose(infer_slices_pre())({"image": image})["image"]
    axis = axial_axis(volume.affine) if volume.ndim == 4 else None
    stack = _resize_stack(volume, axis, size, "bilinear").astype(np.float16)
    if mask_path:
        labels = Compose(load(["label"]))({"label": mask})["label"]
        if tuple(labels.shape[1:]) != tuple(volume.shape[1:]):
            raise ValueError(
                f"mask {mask} has size {tuple(labels.shape[1:])}, its image {image} {tuple(volume.shape[1:])}"
            )
        _atomic_save(mask_path, (_resize_stack((labels > 0).float(), axis, size, "nearest") > 0.5).astype(np.uint8))
    _atomic_save(image_path, stack)
    return {"image": image_path, "mask": mask_path, "depth": stack.shape[0]}


def cache_items(
    items: Sequence[Dict], folder: str, size: int, with_mask: bool, progress: Optional[Callable[[str], None]] = None
) -> List[Dict]:
    """Slice items pointing into the cache, built where missing (each image read once, however many items use it).

    Args:
        items: ``{"image": path, "slice": k (-1: a 2D picture, or the whole stack), "label": class index or mask
            path, ...}`` as :mod:`lib.datalists` makes them.
        folder: the cache folder (see :func:`cache_folder`).
        size: side ``S`` of the training slices (pixels).
        with_mask: ``label`` is a mask path (segmentation, per-slice gate labels come as class indices).
        progress: called with a line every 10 images and at the end.

    Returns:
        Copies of ``items`` with ``image`` (and ``label`` when ``with_mask``) replaced by cache paths, ``slice`` 0 for a
        2D picture, and ``source_image`` the original image path.
    """
    say = progress or logger.info
    sources = sorted({(i["image"], i["label"] if with_mask else None) for i in items})
    entries = {}
    for n, (image, mask) in enumerate(sources, 1):
        entries[(image, mask)] = build_entry(folder, image, mask, size)
        if n % 10 == 0 or n == len(sources):
            say(f"slice cache: {n}/{len(sources)} images ready in {folder}")
    out = []
    for item in items:
        entry = entries[(item["image"], item["label"] if with_mask else None)]
        k = int(item.get("slice", -1))
        cached = dict(
            item, image=entry["image"], source_image=item["image"], slice=0 if entry["depth"] == 1 and k < 0 else k
        )
        if with_mask:
            cached["label"] = entry["mask"]
        out.append(cached)
    return out


def volume_items(items: Sequence[Dict]) -> List[Dict]:
    """One item per image (its whole stack: ``slice`` -1) from cached slice items, in first-seen order; for
    validation on whole volumes, where the empty slices count too."""
    seen, out = set(), []
    for item in items:
        if item["image"] not in seen:
            seen.add(item["image"])
            out.append(dict(item, slice=-1))
    return out


class LoadCachedSliced(MapTransform):
    """Read cached slices: ``data[key]`` a cache stack path -> ``(1, S, S)`` float32 tensor of slice ``data["slice"]``,
    or the whole stack ``(1, S, S, D)`` where ``slice`` is -1 (a 2D picture's stack has ``D = 1``)."""

    def __init__(self, keys: KeysCollection, slice_key: str = "slice", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.slice_key = slice_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        index = int(d.get(self.slice_key, -1))
        for key in self.key_iterator(d):
            stack = np.load(d[key], mmap_mode="r")
            if index >= 0:
                d[key] = torch.from_numpy(np.array(stack[index], dtype=np.float32))[None]
            else:
                d[key] = torch.from_numpy(np.array(stack, dtype=np.float32)).movedim(0, -1)[None]
        return d


def train_cached_pre(with_mask: bool, augment: bool, scanner: bool = False) -> list:
    """Training chain for items of the slice cache (:mod:`lib.slice_cache`): slices already normalised and resized.

    Args:
        with_mask: ``label`` is a cached mask stack rather than a class index.
        augment: random flips, small affine, intensity scale/shift and noise (:func:`lib.transforms.augment_2d`).
        scanner: also :func:`lib.transforms.scanner_augment` (bias field, gamma, blur, 8-bit, zoom; a mask is zoomed
            with its image).
    """
    keys = ["image", "label"] if with_mask else ["image"]
    modes = ["bilinear", "nearest"] if with_mask else ["bilinear"]
    chain: List[MapTransform] = [LoadCachedSliced(keys=keys)]
    if augment:
        chain += augment_2d(keys, modes) + (scanner_augment(mask="label" if with_mask else None) if scanner else [])
    chain.append(EnsureTyped(keys=keys, dtype=torch.float32, track_meta=False))
    if not with_mask:
        chain.append(EnsureTyped(keys="label", dtype=torch.long, data_type="tensor", track_meta=False))
    return chain
