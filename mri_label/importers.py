"""Import public brain-MRI data sets, in the layout in which they are published, into a MONAI Label datastore.

    summary = import_dataset("lgg", "data/lgg_kaggle_3m/kaggle_3m", "stores/lgg", progress=print)

Formats (``fmt``); every image gets ``info["subject"]`` (the unit of the train/val/test split), ``sequence``,
``series``, ``source`` (= ``fmt``) and ``class_labels[task] = {"label": ..., "source": fmt}``:

* ``lgg`` (kaggle_3m, one folder per patient of ``<folder>_<N>.tif`` 256x256x3 slices, channels T1 pre-contrast,
  FLAIR, T1 post-contrast, and ``<folder>_<N>_mask.tif`` 0/255). **One volume per patient**, not one image per
  slice, so a patient is one subject and 2D trainers still see every slice: ``<patient>_flair`` (channel 1, slices
  stacked along axis 2 in slice-NUMBER order) with the mask volume (uint8 0/1) as ``final`` label, class labels
  ``sequence=FLAIR`` and ``tumor_gate`` (tumor if any mask voxel); ``<patient>_t1`` (channel 0) and
  ``<patient>_t1ce`` (channel 2) with ``sequence=T1``, except where the channel equals FLAIR exactly (the
  published set replaced missing sequences by a FLAIR copy): those are skipped and reported. Volumes are uint8
  NIfTI of shape (256, 256, N); voxel slice ``[:, :, k]`` is the TIF channel transposed (x = column, y = row), i.e.
  exactly what MONAI's ``LoadImage`` gives for the TIF, with affine ``diag(-1, -1, 1)`` (axis codes L, P, S like
  BraTS; centred on 0). The TIFs carry no spacing: 1 mm is ASSUMED in all three axes (``info["spacing_known"]`` is
  False), so mm and mm^3 figures for these volumes are in voxel units.
* ``classfolders`` (``src/<class folder>/*.jpg|png|tif``, needs ``task``): images copied in their own format; a
  folder is a class by its class name or the ``folder_classes`` of the task's config (case-insensitive).
  These sets carry no patient ids, so near-duplicates are grouped: a 256-bit difference hash (:func:`dhash`)
  per image, and images whose hashes differ in at most ``hash_threshold`` bits (default 4) are joined by
  union-find; ``info["group"]`` = ``info["subject"]`` = the smallest image id of the group. On the real sets 4
  joins exact and near copies and some neighbouring slices without chaining (Alzheimer set: groups of at most
  5 images; from 8 bits up the whole set chains into giant groups). Grouping does NOT recover patients: figures
  from these sets stay optimistic.
* ``decathlon`` (Task04_Hippocampus: ``dataset.json``, ``imagesTr/``, ``labelsTr/``): T1 images copied as they
  are, labels (1 and 2: the hippocampus config's) re-written as uint8 ``final`` labels; subject = case id.
* ``brats`` (``<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz``): the four sequences copied as they are; the FLAIR
  gets the whole-tumor mask ``seg > 0`` (uint8) as ``final`` label and ``tumor_gate``; subject = case.

Atomicity: everything is built in a sibling folder ``.<dest>.import-<random>`` (a copy of ``dest`` when ``dest``
already holds a datastore: the import is then ADDED to it; an image id already present is an error), which then
replaces ``dest`` by rename(s) on the same file system. A malformed source raises :class:`DatasetError` naming the
file before anything is moved, and the build folder is removed: ``dest`` is left absent or unchanged. Do not import
into a datastore that a running server is serving (it would keep its stale view and may write over the new one).
"""

import copy
import json
import re
import shutil
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Union, cast

import nibabel as nib
import numpy as np
from nibabel.spatialimages import SpatialImage
from PIL import Image

from mri_label import tasks
from mri_label.app_path import app_on_path
from mri_label.sample_data import EXTENSIONS

FORMATS = ("lgg", "classfolders", "decathlon", "brats")
#: The task whose ``final`` labels the tumor masks of ``lgg`` and ``brats`` are (and whose class the gate derives
#: from them), and the task of the ``decathlon`` (Task04) labels; their label names and values, the gate's classes
#: and the sequence classes of the series are the configs' (:mod:`mri_label.tasks`).
TUMOR_TASK, GATE_TASK, HIPPOCAMPUS_TASK = "tumor_seg", "tumor_gate", "hippocampus"
HASH_SIZE = 16  # dhash thumbnail rows; the hash has HASH_SIZE**2 = 256 bits
HASH_THRESHOLD = 4  # max Hamming distance (bits of 256) between near-duplicates
_DEAD_ZONE = 1  # grey levels; a neighbour must be brighter by more than this to set a bit (noise on flat black)
_IMAGE_SUFFIXES = {".jpg": ".jpg", ".jpeg": ".jpg", ".png": ".png", ".tif": ".tif", ".tiff": ".tif"}
_LGG_NAME = re.compile(r"^(?P<patient>.+)_(?P<n>\d+)(?P<mask>_mask)?\.tiff?$", re.IGNORECASE)
#: Series ids (the keys of the sequence config's ``series_classes``) of the sources: BraTS file suffixes and the one
#: its whole-tumor mask goes with; LGG TIF channels and the one its masks are drawn on; the Decathlon Task04 images
_BRATS_SERIES, _BRATS_MASKED = ("flair", "t1", "t1ce", "t2"), "flair"
_LGG_CHANNELS, _LGG_MASKED = {0: "t1", 1: "flair", 2: "t1ce"}, 1
_DECATHLON_SERIES = "t1"
#: ``info["series"]`` of a series id where it is not its sequence class's name, per format
_SERIES_NAMES = {
    "lgg": {"t1": "T1 pre-contrast", "t1ce": "T1 post-contrast"},
    "brats": {"t1ce": "T1 post-contrast"},
}


class DatasetError(ValueError):
    """The source data set is malformed; the message names the file or folder at fault."""


def import_dataset(
    fmt: str,
    src,
    dest,
    progress: Optional[Callable[[str], None]] = None,
    *,
    task: Optional[str] = None,
    class_map: Optional[Dict[str, str]] = None,
    hash_threshold: int = HASH_THRESHOLD,
) -> dict:
    """Import the data set at ``src`` (layout ``fmt``) into the datastore folder ``dest``, all or nothing.

    Args:
        fmt: one of :data:`FORMATS`.
        src: folder of the data set as published (for ``lgg`` the ``kaggle_3m`` folder or its parent).
        dest: datastore folder; created, or (if it exists) added to via a copy that replaces it at the end.
        progress: optional ``callable(str)`` called per patient / case / image with ``"<fmt>: i/n <name>"``.
        task: ``classfolders`` only: a classification task (``sequence``, ``dementia_stage``, ``tumor_type``, ...).
        class_map: ``classfolders`` only: extra ``{folder name: class}`` entries over the class names and the
            ``folder_classes`` the task's config declares.
        hash_threshold: ``classfolders`` only: max differing bits (of 256) between near-duplicate images.

    Returns:
        ``{"format", "source", "path", "images", "labels", "subjects", "class_counts": {task: {class: n}},
        "skipped": [{"item", "reason"}], "seconds"}`` (counts of what this import added), plus for
        ``classfolders`` ``"task"`` and ``"groups": {"count", "with_several_images", "largest", "hash_threshold",
        "mixed_class"}`` (ids of groups whose images carry different classes).

    Raises:
        DatasetError: malformed source (missing/orphan mask or label, unreadable file, unknown class folder,
            missing ``dataset.json``, an image id already in ``dest``); ``dest`` is left as it was.
        ValueError: unknown ``fmt``, ``task`` or class in ``class_map``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise DatasetError(f"{src}: source folder not found")
    if dest.exists() and not dest.is_dir():
        raise FileExistsError(f"{dest} exists and is not a folder")
    mapping = _class_mapping(task, class_map) if fmt == "classfolders" else None
    start = time.perf_counter()
    dest.parent.mkdir(parents=True, exist_ok=True)
    build = dest.parent / f".{dest.name}.import-{uuid.uuid4().hex[:8]}"
    try:
        if dest.exists():
            shutil.copytree(dest, build, symlinks=True)
        with tempfile.TemporaryDirectory(prefix="mri_label_import_") as stage:
            writer = _Writer(build, Path(stage), fmt, progress)
            if fmt == "lgg":
                _lgg(src, writer)
            elif fmt == "brats":
                _brats(src, writer)
            elif fmt == "decathlon":
                _decathlon(src, writer)
            else:
                # task and mapping are set for classfolders (checked by _class_mapping above)
                groups = _classfolders(src, writer, cast(str, task), cast(Dict[str, str], mapping), hash_threshold)
                writer.extra = {"task": task, "groups": groups}
            writer.ds.flush()
        _replace(build, dest)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return writer.summary(src, dest, time.perf_counter() - start)


class _Writer:
    """Adds images and ``final`` labels to the datastore being built; keeps the counts for the summary."""

    subjects: Set[str]
    counts: Dict[str, Dict[str, int]]
    skipped: List[Dict[str, str]]
    extra: Dict[str, Any]

    def __init__(self, root: Path, stage: Path, fmt: str, progress):
        app_on_path()
        from lib.stock import StockLocalDatastore  # noqa: E402  (the app's adapter to MONAI Label's datastore)

        class BatchedDatastore(StockLocalDatastore):
            """Writes datastore_v2.json once (atomically), on ``flush()``, not after every image (linear, not
            quadratic, time: nobody reads the build folder before the import ends)."""

            def write_index(self, lock=True):
                self.dirty = True

            def flush(self):
                if getattr(self, "dirty", False):
                    super().write_index()

        self.ds = BatchedDatastore(str(root), extensions=EXTENSIONS, auto_reload=False)
        self.existing = set(self.ds.list_images())
        self.stage, self.fmt, self.progress = stage, fmt, progress
        self.images = self.labels = 0
        self.subjects, self.counts, self.skipped, self.extra = set(), {}, [], {}

    def say(self, i: int, n: int, name: str) -> None:
        if self.progress is not None:
            self.progress(f"{self.fmt}: {i}/{n} {name}")

    def skip(self, item, reason: str) -> None:
        self.skipped.append({"item": str(item), "reason": reason})

    def series(self, series_id: str) -> Tuple[str, str]:
        """``(sequence class, info["series"])`` of a series id of this format."""
        sequence = tasks.series_class(series_id)
        return sequence, _SERIES_NAMES.get(self.fmt, {}).get(series_id, sequence)

    def info(self, subject: str, series: Optional[str] = None, **class_labels: str) -> dict:
        """Image info: subject, ``sequence`` (when its class label is given), series, source and class labels."""
        info: Dict[str, Any] = {"subject": subject, "source": self.fmt}
        if tasks.SEQUENCE in class_labels:
            info["sequence"] = class_labels[tasks.SEQUENCE]
        if series:
            info["series"] = series
        info["class_labels"] = {t: {"label": c, "source": self.fmt} for t, c in class_labels.items()}
        return info

    def _staged(self, source: Union[Path, Tuple[np.ndarray, np.ndarray]], name: str) -> str:
        """A path to hand to the datastore: a content copy of a file (sources may be read-only), or a new NIfTI
        written from ``(array, affine)``."""
        if isinstance(source, Path):
            path = self.stage / (name + _suffix(source))
            shutil.copyfile(source, path)
        else:
            path = self.stage / (name + ".nii.gz")
            _save_nifti(*source, path)
        return str(path)

    def add(self, image_id: str, source, info: dict, label=None, label_info: Optional[dict] = None) -> None:
        """Add one image (a file ``Path`` or ``(array, affine)``) with its info and optional ``final`` label."""
        if image_id in self.existing:
            raise DatasetError(f"image id {image_id!r} is already in the datastore (imported before?)")
        self.existing.add(image_id)
        path = self._staged(source, "image")
        self.ds.add_image(image_id, path, info)
        Path(path).unlink()
        self.images += 1
        self.subjects.add(info["subject"])
        for task, record in info["class_labels"].items():
            task_counts = self.counts.setdefault(task, {})
            task_counts[record["label"]] = task_counts.get(record["label"], 0) + 1
        if label is not None:
            path = self._staged(label, "label")
            label_info = cast(dict, label_info)  # given with every label
            self.ds.save_label(image_id, path, "final", dict(copy.deepcopy(label_info), source=self.fmt))
            Path(path).unlink()
            self.labels += 1

    def summary(self, src: Path, dest: Path, seconds: float) -> dict:
        return {
            "format": self.fmt,
            "source": str(src),
            "path": str(dest),
            "images": self.images,
            "labels": self.labels,
            "subjects": len(self.subjects),
            "class_counts": self.counts,
            "skipped": self.skipped,
            "seconds": round(seconds, 1),
            **self.extra,
        }


def _replace(build: Path, dest: Path) -> None:
    """Move the finished ``build`` folder to ``dest``; an existing ``dest`` is renamed aside first and removed."""
    if not dest.exists():
        build.rename(dest)
        return
    old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
    dest.rename(old)
    try:
        build.rename(dest)
    except BaseException:
        old.rename(dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else _IMAGE_SUFFIXES.get(path.suffix.lower(), path.suffix.lower())


def _subdirs(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_picture(path: Path) -> np.ndarray:
    """Pixels of a 2D picture file, ``(H, W)`` or ``(H, W, C)``; DatasetError naming the file if unreadable."""
    try:
        with Image.open(path) as image:
            return np.asarray(image)
    except Exception as error:  # PIL raises many types for truncated or foreign files
        raise DatasetError(f"{path}: unreadable image ({error})") from None


def _read_nifti(path: Path):
    """``(nibabel image, voxel array)`` read to the end; DatasetError naming the file if unreadable."""
    try:
        image = cast(SpatialImage, nib.load(str(path)))
        return image, np.asarray(image.dataobj)
    except Exception as error:  # truncated gzip, bad header, ...
        raise DatasetError(f"{path}: unreadable NIfTI ({error})") from None


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(np.ascontiguousarray(array), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    nib.save(image, str(path))


def _lps_affine(shape) -> np.ndarray:
    """Affine diag(-1, -1, 1) (1 mm, axis codes L, P, S) centred on (0, 0, 0) mm for a volume of ``shape``."""
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[:3, 3] = [(shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0, -(shape[2] - 1) / 2.0]
    return affine


def _lgg_slices(folder: Path, writer: _Writer) -> List[Tuple[int, Path, Path]]:
    """``(slice number, image, mask)`` of a patient folder in slice-number order; orphans raise DatasetError."""
    images: Dict[int, Path] = {}
    masks: Dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in (".tif", ".tiff"):
            if not path.name.startswith("."):
                writer.skip(path, "not a .tif slice")
            continue
        match = _LGG_NAME.match(path.name)
        if not match or match["patient"] != folder.name:
            raise DatasetError(f"{path}: not named {folder.name}_<slice>.tif or {folder.name}_<slice>_mask.tif")
        (masks if match["mask"] else images)[int(match["n"])] = path
    unmasked, orphans = sorted(set(images) - set(masks)), sorted(set(masks) - set(images))
    if unmasked:
        raise DatasetError(f"{images[unmasked[0]]}: slice without its mask {folder.name}_{unmasked[0]}_mask.tif")
    if orphans:
        raise DatasetError(f"{masks[orphans[0]]}: mask without its slice image {folder.name}_{orphans[0]}.tif")
    if not images:
        raise DatasetError(f"{folder}: patient folder holds no slices")
    return [(n, images[n], masks[n]) for n in sorted(images)]


def _lgg(src: Path, w: _Writer) -> None:
    if not any(p.name.startswith("TCGA_") for p in _subdirs(src)) and (src / "kaggle_3m").is_dir():
        src = src / "kaggle_3m"
    patients = [(p, _lgg_slices(p, w)) for p in _subdirs(src)]  # structure first: fail before reading pixels
    if not patients:
        raise DatasetError(f"{src}: no patient folders")
    for i, (folder, slices) in enumerate(patients, 1):
        w.say(i, len(patients), folder.name)
        volume: Any  # the slices, then their stacked array
        mask: Any
        pid, volume, mask = folder.name, [], []
        for _, image_path, mask_path in slices:
            image, m = _read_picture(image_path), _read_picture(mask_path)
            if image.ndim != 3 or image.shape[2] != 3 or (volume and image.shape[:2] != volume[0].shape[1::-1]):
                raise DatasetError(f"{image_path}: expected an H x W x 3 slice like the others, got {image.shape}")
            m = m[..., 0] if m.ndim == 3 else m
            if m.shape != image.shape[:2]:
                raise DatasetError(f"{mask_path}: mask size {m.shape} differs from its slice's {image.shape[:2]}")
            volume.append(image.transpose(1, 0, 2))  # (W, H, 3): x = column, y = row
            mask.append((m > 0).T)
        volume, mask = np.stack(volume, axis=2), np.stack(mask, axis=2).astype(np.uint8)  # (W, H, N, 3), (W, H, N)
        affine, flair = _lps_affine(mask.shape), volume[..., _LGG_MASKED]
        flair_class, flair_series = w.series(_LGG_CHANNELS[_LGG_MASKED])
        labels = {tasks.SEQUENCE: flair_class, GATE_TASK: tasks.finding_class(GATE_TASK, bool(mask.any()))}
        info = dict(w.info(pid, flair_series, **labels), spacing_known=False)
        label_info = tasks.label_info(TUMOR_TASK)
        w.add(f"{pid}_{_LGG_CHANNELS[_LGG_MASKED]}", (flair, affine), info, (mask, affine), label_info)
        for channel, suffix in _LGG_CHANNELS.items():
            if channel == _LGG_MASKED:
                continue
            sequence, series = w.series(suffix)
            if np.array_equal(volume[..., channel], flair):
                reason = f"equals the {flair_class} channel: missing sequence replaced by {flair_class}"
                w.skip(f"{pid} {series} (channel {channel})", reason)
                continue
            info = dict(w.info(pid, series, **{tasks.SEQUENCE: sequence}), spacing_known=False)
            w.add(f"{pid}_{suffix}", (volume[..., channel], affine), info)


def _nifti_file(folder: Path, stem: str) -> Path:
    for suffix in (".nii.gz", ".nii"):
        if (folder / (stem + suffix)).is_file():
            return folder / (stem + suffix)
    raise DatasetError(f"{folder / (stem + '.nii.gz')}: missing (each case needs flair, t1, t1ce, t2 and seg)")


def _brats(src: Path, w: _Writer) -> None:
    cases = [(c, {s: _nifti_file(c, f"{c.name}_{s}") for s in (*_BRATS_SERIES, "seg")}) for c in _subdirs(src)]
    if not cases:
        raise DatasetError(f"{src}: no case folders")
    for i, (folder, files) in enumerate(cases, 1):
        w.say(i, len(cases), folder.name)
        seg_image, seg = _read_nifti(files["seg"])
        for series in _BRATS_SERIES:
            shape = _read_nifti(files[series])[1].shape
            if shape != seg.shape:
                raise DatasetError(f"{files[series]}: size {shape} differs from the segmentation's {seg.shape}")
        mask = (seg > 0).astype(np.uint8)
        for series in _BRATS_SERIES:
            sequence, name = w.series(series)
            masked = series == _BRATS_MASKED
            labels = {tasks.SEQUENCE: sequence}
            if masked:
                labels[GATE_TASK] = tasks.finding_class(GATE_TASK, bool(mask.any()))
            info = w.info(folder.name, name, **labels)
            label = (mask, seg_image.affine) if masked else None
            w.add(f"{folder.name}_{series}", files[series], info, label, tasks.label_info(TUMOR_TASK))


def _decathlon(src: Path, w: _Writer) -> None:
    meta_path = src / "dataset.json"
    if not meta_path.is_file():
        raise DatasetError(f"{meta_path}: missing (the Decathlon layout has it beside imagesTr/ and labelsTr/)")
    try:
        training = json.loads(meta_path.read_text())["training"]
        listed = [(src / e["image"], src / e["label"]) for e in training]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DatasetError(f"{meta_path}: not a Decathlon dataset.json with a 'training' list ({error})") from None
    folders: Dict[str, Dict[str, Path]] = {"imagesTr": {}, "labelsTr": {}}
    for name, files in folders.items():
        for path in sorted((src / name).iterdir()) if (src / name).is_dir() else []:
            if path.name.startswith("."):
                w.skip(path, "hidden file (e.g. a macOS '._' resource fork)")
            elif path.is_file():
                files[path.name] = path
    images, labels = folders["imagesTr"], folders["labelsTr"]
    unlabelled, orphans = sorted(set(images) - set(labels)), sorted(set(labels) - set(images))
    if unlabelled:
        raise DatasetError(f"{images[unlabelled[0]]}: image without its label labelsTr/{unlabelled[0]}")
    if orphans:
        raise DatasetError(f"{labels[orphans[0]]}: label without its image imagesTr/{orphans[0]}")
    for image, label in listed:
        for path in (image, label):
            if not path.is_file():
                raise DatasetError(f"{path}: listed in dataset.json but missing")
    for name in sorted(set(images) - {i.name for i, _ in listed}):
        w.skip(images[name], "not listed in dataset.json")
    label_info, values = tasks.label_info(HIPPOCAMPUS_TASK), set(tasks.labels(HIPPOCAMPUS_TASK).values())
    sequence = tasks.series_class(_DECATHLON_SERIES)
    for i, (image_path, label_path) in enumerate(listed, 1):
        case = image_path.name.split(".")[0]
        w.say(i, len(listed), case)
        shape = _read_nifti(image_path)[1].shape
        label_image, label = _read_nifti(label_path)
        if label.shape != shape:
            raise DatasetError(f"{label_path}: size {label.shape} differs from its image's {shape}")
        if not set(np.unique(label).tolist()) <= {0, *values}:
            allowed = ", ".join(str(v) for v in sorted(values))
            raise DatasetError(f"{label_path}: values {np.unique(label).tolist()} outside 0 (background), {allowed}")
        label = (label.astype(np.uint8), label_image.affine)
        w.add(case, image_path, w.info(case, sequence, **{tasks.SEQUENCE: sequence}), label, label_info)


def dhash(image: Image.Image, size: int = HASH_SIZE) -> np.ndarray:
    """Difference hash of a picture: (size * size,) bool, one bit per horizontally neighbouring thumbnail pair.

    The picture is reduced to grey and box-averaged to ``size`` rows x ``size + 1`` columns; a bit is set where
    the right neighbour is brighter by more than 1 grey level (the dead zone keeps noise on flat black background
    from flipping bits). Independent of the picture's size, robust to re-encoding, noise and slight scaling.
    """
    thumb = np.asarray(image.convert("L").resize((size + 1, size), Image.Resampling.BOX), dtype=np.int16)
    return (thumb[:, 1:] - thumb[:, :-1] > _DEAD_ZONE).ravel()


def near_duplicate_groups(hashes: np.ndarray, threshold: int = HASH_THRESHOLD) -> np.ndarray:
    """Group index (0..g-1, in order of first appearance) per hash: union-find over pairs whose Hamming
    distance is at most ``threshold`` bits. ``hashes``: (n, bits) bool. Returns (n,) int."""
    bits = np.asarray(hashes, dtype=np.float32)
    parent = list(range(len(bits)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for start in range(0, len(bits), 1024):  # (1024, n) distance blocks keep memory small
        block = bits[start : start + 1024]
        distance = block @ (1 - bits).T + (1 - block) @ bits.T
        for i, j in zip(*np.nonzero(distance <= threshold)):
            if start + i < j:
                parent[find(start + i)] = find(j)
    roots = [find(i) for i in range(len(bits))]
    order = {r: k for k, r in enumerate(dict.fromkeys(roots))}
    return np.array([order[r] for r in roots], dtype=int)


def _class_mapping(task: Optional[str], class_map: Optional[Dict[str, str]]) -> Dict[str, str]:
    """Lower-cased folder name -> class for ``task``: its class names, the folder names its config declares
    (``folder_classes``), then ``class_map``."""
    classifiers = tasks.tasks_of_kind("classification")
    if task not in classifiers:
        raise ValueError(f"classfolders needs task= one of {', '.join(classifiers)}; got {task!r}")
    classes = tasks.classes(task)
    mapping = tasks.folder_classes(task)
    mapping.update(class_map or {})
    for folder, name in mapping.items():
        if name not in classes:
            known = ", ".join(classes)
            raise ValueError(f"class {name!r} (folder {folder!r}) is not a {task} class: {known}")
    return {folder.lower(): name for folder, name in mapping.items()}


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_-") or "image"


def _classfolders(src: Path, w: _Writer, task: str, mapping: Dict[str, str], threshold: int) -> dict:
    folders = _subdirs(src)
    if not folders:
        raise DatasetError(f"{src}: no class folders")
    for folder in folders:
        if folder.name.lower() not in mapping:
            known = ", ".join(sorted(mapping))
            raise DatasetError(f"{folder}: unknown class folder {folder.name!r} for {task}; known: {known}")
    files = []
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in _IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file():
                files.append((folder.name, path))
            else:
                w.skip(path, "not a .jpg/.png/.tif picture")
    if not files:
        raise DatasetError(f"{src}: the class folders hold no pictures")
    hashes = []
    for i, (_, path) in enumerate(files, 1):
        if i % 100 == 0 or i == len(files):
            w.say(i, len(files), f"hashed {path.name}")
        hashes.append(dhash(Image.fromarray(_read_picture(path))))
    groups = near_duplicate_groups(np.array(hashes), threshold)
    stems = [_safe_id(path.name.rsplit(".", 1)[0]) for _, path in files]
    clashes = {s for s, n in Counter(stems).items() if n > 1}
    ids = [_safe_id(f"{f}_{s}") if s in clashes else s for s, (f, _) in zip(stems, files)]
    seen: Counter[str] = Counter()
    for k, image_id in enumerate(ids):  # still equal after prefixing (e.g. "a b.jpg" and "a_b.jpg"): number them
        seen[image_id] += 1
        ids[k] = image_id if seen[image_id] == 1 else f"{image_id}_{seen[image_id]}"
    group_ids: Dict[int, str] = {}
    for g, image_id in zip(groups, ids):
        group_ids[g] = min(group_ids.get(g, image_id), image_id)
    classes: Dict[int, Set[str]] = {}
    for i, ((folder_name, path), image_id, g) in enumerate(zip(files, ids, groups), 1):
        if i % 100 == 0 or i == len(files):
            w.say(i, len(files), f"copied {path.name}")
        name = mapping[folder_name.lower()]
        classes.setdefault(g, set()).add(name)
        info = dict(w.info(group_ids[g], **{task: name}), group=group_ids[g], original=f"{folder_name}/{path.name}")
        w.add(image_id, path, info)
    sizes = np.bincount(groups)
    return {
        "count": len(sizes),
        "with_several_images": int((sizes > 1).sum()),
        "largest": int(sizes.max()),
        "hash_threshold": threshold,
        "mixed_class": sorted(group_ids[g] for g, c in classes.items() if len(c) > 1),
    }
