"""A local datastore that refuses what it cannot read, plus the class-label records kept in image info (written by
:func:`update_info_entry`, read by :func:`lib.label_info.class_label`). Refusals are :mod:`lib.errors`' answers.

Image info schema written by this app (``datastore_v2.json``, ``objects.<id>.image.info``)::

    "class_labels": {"<task>": {"label": "T2", "source": "user", "user": "...", "ts": 1732400000}},
    "predictions":  {"<task>": {"label": "T1", "probabilities": {"T1": 0.9, ...}, "checkpoint": "...", "ts": ...}}
"""

import logging
import os
import re
import threading
import time
from typing import Any, Dict, Optional, Tuple

import numpy as np
import SimpleITK as sitk
import torch
from monai.transforms import LoadImage

from lib.errors import ImageNotFound, bad_input, refused
from lib.label_info import REVIEW_KEY, label_task, segment_names
from lib.request_checks import RequestError, check_depth
from lib.stock import StockLocalDatastore
from mri_label.core.atomic import atomic_copy, remove_partial_files

logger = logging.getLogger(__name__)

_loader = LoadImage(image_only=True, ensure_channel_first=True)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_info_lock = threading.Lock()


MAX_ID_LENGTH = 128
"""Longest image id or label tag (both become file or folder names, at most 255 bytes)."""


def check_image_id(image_id: str) -> None:
    """422 unless ``image_id`` is a plain id (letters, digits, '.', '_', '-'; not a path, not '..'; at most
    :data:`MAX_ID_LENGTH` characters)."""
    if not _ID.fullmatch(image_id) or ".." in image_id or len(image_id) > MAX_ID_LENGTH:
        raise bad_input(
            422,
            f"image id {image_id[:80]!r} may hold only letters, digits, '.', '_' and '-' "
            f"(no paths), at most {MAX_ID_LENGTH} characters",
        )


def check_info_depth(info: Any, what: str) -> None:
    """422 when ``info`` nests deeper than the datastore index can hold and load again
    (:data:`lib.request_checks.MAX_JSON_DEPTH`)."""
    try:
        check_depth(info, what)
    except RequestError as error:
        raise refused(error) from None


DEFAULT_MAX_VOXELS = 256 * 1024 * 1024
"""Largest image accepted, in voxels × channels (``--conf max_voxels``): 1 GiB as float32, far above any brain MRI."""


def read_header(path: str, what: str, max_voxels: Optional[int] = None) -> Tuple[Tuple[int, ...], int]:
    """Spatial size ``(W, H[, D])`` in voxels and channel count of an image file, from its header only.

    Raises:
        BadInput: 415 unreadable, 422 empty size, 413 more than ``max_voxels`` voxels × channels.
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise bad_input(415, f"{what} is not a readable image (NIfTI, NRRD, PNG, JPG or TIF expected)") from None
    size = tuple(int(s) for s in reader.GetSize())
    if not size or min(size) < 1:
        raise bad_input(422, f"{what} has an empty size {size}")
    channels = int(reader.GetNumberOfComponents())
    voxels = int(np.prod(size, dtype=np.float64)) * channels
    if max_voxels is not None and voxels > max_voxels:
        raise bad_input(
            413,
            f"{what} has size {size} ({voxels:,} voxels); this server accepts at most {max_voxels:,} "
            "(--conf max_voxels)",
        )
    return size, channels


def read_spacing(path: str) -> Tuple[float, ...]:
    """Voxel spacing (mm) of an image file, from its header (1.0 per axis where it cannot be read)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
        return tuple(float(s) for s in reader.GetSpacing())
    except RuntimeError:
        return (1.0, 1.0, 1.0)


def load_checked(path: str, what: str, max_voxels: Optional[int] = None) -> torch.Tensor:
    """Read the whole file with the reader training will use, after :func:`read_header`'s checks (catches
    truncated files and content that does not match its extension); refuse NaN/inf voxels (422).

    Returns:
        The image, channel first: ``(C, W, H[, D])``.
    """
    read_header(path, what, max_voxels)
    try:
        image = _loader(path)
    except Exception:  # the readers raise many types; all mean the same to the sender
        raise bad_input(
            415, f"{what} could not be read to the end (truncated, corrupt, or not what its extension says)"
        ) from None
    if image.ndim < 3 or image.numel() == 0:
        raise bad_input(422, f"{what} has an empty or one-dimensional size {tuple(image.shape[1:])}")
    if image.is_floating_point():
        bad = int((~torch.isfinite(image)).sum())
        if bad:
            raise bad_input(422, f"{what} has {bad} NaN or infinite voxel value(s)")
    return image


def check_image_file(path: str, what: str, max_voxels: Optional[int] = None) -> Tuple[int, ...]:
    """:func:`load_checked`; return the image's spatial size ``(W, H[, D])``."""
    return tuple(int(s) for s in load_checked(path, what, max_voxels).shape[1:])


def check_label_values(
    label: torch.Tensor, what: str, label_info: Dict[str, Any], task_labels: Dict[str, Dict[str, int]]
) -> None:
    """422 unless ``label`` holds whole numbers that are label values of the task its ``label_info`` names
    (by ``task`` or by segment names, see :func:`lib.label_info.label_task`), or of any segmentation task."""
    values = torch.unique(label)
    if label.is_floating_point() and not torch.equal(values, values.round()):
        raise bad_input(422, f"{what} holds fractional values; a label holds whole label numbers")
    names = segment_names(label_info or {})
    task = label_task(label_info or {}, task_labels)
    if task is None and names:
        known = {t: sorted(labels) for t, labels in task_labels.items()}
        raise bad_input(
            422, f"{what} names segment(s) {sorted(names)} that belong to no single task; labels per task: {known}"
        )
    tasks = [task] if task else list(task_labels)
    allowed = {0} | {int(v) for t in tasks for v in task_labels[t].values()}
    outside = sorted({int(v) for v in values.tolist()} - allowed)
    if outside:
        whose = task or "any segmentation task"
        raise bad_input(
            422, f"{what} holds value(s) {outside[:10]} that are not labels of {whose} (allowed: {sorted(allowed)})"
        )


def check_upload_size(path: str, what: str, max_bytes: int) -> None:
    """413 when the file at ``path`` is larger than ``max_bytes``."""
    size = os.path.getsize(path)
    if size > max_bytes:
        raise bad_input(
            413,
            f"{what} is {size / 2**20:.1f} MB; this server accepts at most {max_bytes / 2**20:.0f} MB "
            "(--conf max_upload_mb)",
        )


def check_label_tag(label_tag: str) -> None:
    """422 unless ``label_tag`` is a plain name (letters, digits, '.', '_', '-'; at most :data:`MAX_ID_LENGTH`)."""
    if not _ID.fullmatch(label_tag or "") or len(label_tag) > MAX_ID_LENGTH:
        raise bad_input(
            422,
            f"label tag {(label_tag or '')[:80]!r} may hold only letters, digits, '.', '_' and '-', "
            f"at most {MAX_ID_LENGTH} characters",
        )


def check_label_file(
    label_filename: str, image_id: str, image_path: str, max_voxels: Optional[int] = None
) -> torch.Tensor:
    """:func:`load_checked` the label, and 422 unless its spatial size is that of the image at ``image_path``.

    Returns:
        The label, channel first: ``(C, W, H[, D])``.
    """
    what = f"label for image {image_id!r}"
    label = load_checked(label_filename, what, max_voxels)
    label_size = spatial_size(tuple(int(s) for s in label.shape[1:]))
    image_size = spatial_size(read_header(image_path, f"image {image_id!r}")[0])
    if label_size != image_size:
        raise bad_input(422, f"{what} has size {label_size} but the image has size {image_size}")
    return label


def spatial_size(size: Tuple[int, ...]) -> Tuple[int, ...]:
    """Drop trailing singleton axes, so a 2D slice stored as ``(W, H, 1)`` compares equal to ``(W, H)``."""
    size = tuple(size)
    while len(size) > 2 and size[-1] == 1:
        size = size[:-1]
    return size


class MRIDatastore(StockLocalDatastore):
    """MONAI Label's local datastore (through :class:`lib.stock.StockLocalDatastore`) with input checks (nothing
    unreadable, oversized or mismatched is stored), crash-safe writes (images, labels and ``datastore_v2.json`` are
    written to a temporary file and renamed over the old one: a crash leaves the old or the whole new file;
    leftovers are removed at start), and log lines that name image ids only (never upload file names or
    client-supplied label info).

    Args:
        max_upload_mb: largest image or label file accepted (MB); larger ones get a 413.
        max_voxels: largest image or label accepted, in voxels × channels (413), checked from the header
            before the file is read.
        task_labels: segmentation task -> its label names and values; when given, a saved label may hold only
            0 and the values of the task its info names (or of any task), see :func:`check_label_values`.
        other arguments: as :class:`LocalDatastore`.
    """

    def __init__(
        self,
        *args,
        max_upload_mb: float = 2048.0,
        max_voxels: int = DEFAULT_MAX_VOXELS,
        task_labels: Optional[Dict[str, Dict[str, int]]] = None,
        **kwargs,
    ):
        if max_upload_mb <= 0:
            raise ValueError(f"max_upload_mb must be > 0, got {max_upload_mb}")
        if max_voxels < 1:
            raise ValueError(f"max_voxels must be >= 1, got {max_voxels}")
        self.max_upload_bytes = int(max_upload_mb * 1024 * 1024)
        self.max_voxels = int(max_voxels)
        self.task_labels = task_labels
        super().__init__(*args, **kwargs)
        removed = sum(remove_partial_files(folder) for folder in self.folders())
        if removed:
            logger.warning(f"removed {removed} partial file(s) left by an interrupted write")

    # Requests run on several threads (infer runs off the event loop): in-memory index changes and the index
    # writes that dump it hold this lock, so a dump never sees a half-made change.
    _memory_lock = threading.RLock()

    def update_image_info(self, image_id: str, info: Dict[str, Any]) -> None:
        check_info_depth(info, f"info of image {image_id!r}")
        with self._memory_lock:
            super().update_image_info(image_id, info)

    def update_label_info(self, label_id: str, label_tag: str, info: Dict[str, Any]) -> None:
        check_info_depth(info, f"info of label {label_tag!r} of image {label_id!r}")
        with self._memory_lock:
            super().update_label_info(label_id, label_tag, info)

    def remove_image(self, image_id: str) -> None:
        with self._memory_lock:
            super().remove_image(image_id)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        with self._memory_lock:
            super().remove_label(label_id, label_tag)

    def refresh(self):
        with self._memory_lock:
            super().refresh()

    def write_index(self, lock: bool = True) -> None:
        """Write ``datastore_v2.json`` atomically (:class:`lib.stock.StockLocalDatastore`), not while another
        thread changes the in-memory index."""
        with self._memory_lock:
            super().write_index(lock=lock)

    def _store(self, source: str, dest: str, register) -> None:
        """Copy ``source`` to ``dest`` atomically, then ``register()`` it in the index and write the index."""
        with self._memory_lock, self.index_lock():
            atomic_copy(source, dest)
            register()
            self.write_index(lock=False)

    def _check_size(self, path: str, what: str) -> None:
        check_upload_size(path, what, self.max_upload_bytes)

    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        self._check_size(image_filename, f"uploaded image {image_id!r}")
        check_info_depth(image_info, "image info")
        if image_id:
            check_image_id(image_id)
        check_image_file(
            image_filename, f"uploaded image {image_id or os.path.basename(image_filename)!r}", self.max_voxels
        )
        guessed_id, ext = self.split_name(os.path.basename(image_filename))
        image_id = image_id or guessed_id
        name = self.file_name(image_id, ext)
        info = dict(image_info or {}, ts=int(time.time()), name=name)
        self._store(
            image_filename, os.path.join(self.image_folder(), name), lambda: self.register_image(image_id, info, ext)
        )
        logger.info(f"image {image_id} stored")
        return image_id

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        image_path = self.get_image_uri(image_id)
        if not image_path:
            raise ImageNotFound(image_id)
        self._check_size(label_filename, f"label for image {image_id!r}")
        check_label_tag(label_tag)
        check_info_depth(label_info, "label info")
        label = check_label_file(label_filename, image_id, image_path, self.max_voxels)
        if self.task_labels is not None:
            check_label_values(label, f"label for image {image_id!r}", label_info, self.task_labels)
        _, ext = self.split_name(os.path.basename(label_filename))
        name = self.file_name(image_id, ext)
        label_path = self.label_folder(label_tag)
        os.makedirs(label_path, exist_ok=True)
        info = dict(without_review(label_info), ts=int(time.time()), name=name)

        def register():
            old = self.register_label(image_id, label_tag, info, ext)
            if old is not None and old != ext:  # a label of another format replaced: drop the old file
                stale = os.path.join(label_path, self.file_name(image_id, old))
                if os.path.exists(stale):
                    os.remove(stale)

        self._store(label_filename, os.path.join(label_path, name), register)
        logger.info(f"label {label_tag!r} of image {image_id} stored")
        return image_id


def without_review(label_info: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """A saved label's info without a review (:data:`lib.label_info.REVIEW_KEY`): a new label is pending review,
    whatever its sender's info says."""
    return {k: v for k, v in (label_info or {}).items() if k != REVIEW_KEY}


def update_info_entry(datastore, image_id: str, field: str, task: str, record: Optional[Dict[str, Any]]) -> None:
    """Set (or, with ``record=None``, remove) ``info[field][task]`` of one image; serialised within the process."""
    with _info_lock:
        info = datastore.get_image_info(image_id)
        if not info:
            raise ImageNotFound(image_id)
        entries = dict(info.get(field) or {})
        if record is None:
            entries.pop(task, None)
        else:
            entries[task] = dict(record, ts=int(time.time()))
        datastore.update_image_info(image_id, {field: entries})
