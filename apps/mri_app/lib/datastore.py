"""A local datastore that refuses what it cannot read, plus the class-label records kept in image info.

Image info schema written by this app (``datastore_v2.json``, ``objects.<id>.image.info``)::

    "class_labels": {"<task>": {"label": "T2", "source": "user", "user": "...", "ts": 1732400000}},
    "predictions":  {"<task>": {"label": "T1", "probabilities": {"T1": 0.9, ...}, "checkpoint": "...", "ts": ...}}
"""

import os
import re
import threading
import time
from typing import Any, Dict, Optional, Tuple

import SimpleITK as sitk
from fastapi import HTTPException
from monai.transforms import LoadImage
from monailabel.datastore.local import LocalDatastore

_loader = LoadImage(image_only=True, ensure_channel_first=True)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_info_lock = threading.Lock()


def bad_input(status: int, message: str) -> HTTPException:
    """An HTTP error with a message meant for the person who sent the request."""
    return HTTPException(status_code=status, detail=message)


def read_header(path: str, what: str) -> Tuple[Tuple[int, ...], int]:
    """Spatial size ``(W, H[, D])`` in voxels and channel count of an image file, or a 415 naming it."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise bad_input(415, f"{what} is not a readable image (NIfTI, NRRD, PNG, JPG or TIF expected)") from None
    size = tuple(int(s) for s in reader.GetSize())
    if not size or min(size) < 1:
        raise bad_input(422, f"{what} has an empty size {size}")
    return size, int(reader.GetNumberOfComponents())


def check_image_file(path: str, what: str) -> Tuple[int, ...]:
    """Read the whole file with the reader training will use (catches truncated files and content that does
    not match its extension); return its spatial size ``(W, H[, D])``."""
    read_header(path, what)
    try:
        image = _loader(path)
    except Exception:  # the readers raise many types; all mean the same to the sender
        raise bad_input(415, f"{what} could not be read to the end (truncated, corrupt, or not what its extension says)") from None
    return tuple(int(s) for s in image.shape[1:])


def spatial_size(size: Tuple[int, ...]) -> Tuple[int, ...]:
    """Drop trailing singleton axes, so a 2D slice stored as ``(W, H, 1)`` compares equal to ``(W, H)``."""
    size = tuple(size)
    while len(size) > 2 and size[-1] == 1:
        size = size[:-1]
    return size


class MRIDatastore(LocalDatastore):
    """MONAI Label's local datastore with input checks: nothing unreadable, oversized or mismatched is stored.

    Args:
        max_upload_mb: largest image or label file accepted (MB); larger ones get a 413.
        other arguments: as :class:`LocalDatastore`.
    """

    def __init__(self, *args, max_upload_mb: float = 2048.0, **kwargs):
        if max_upload_mb <= 0:
            raise ValueError(f"max_upload_mb must be > 0, got {max_upload_mb}")
        self.max_upload_bytes = int(max_upload_mb * 1024 * 1024)
        super().__init__(*args, **kwargs)

    def _check_size(self, path: str, what: str) -> None:
        size = os.path.getsize(path)
        if size > self.max_upload_bytes:
            raise bad_input(413, f"{what} is {size / 2**20:.1f} MB; this server accepts at most {self.max_upload_bytes / 2**20:.0f} MB (--conf max_upload_mb)")

    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        self._check_size(image_filename, f"uploaded image {image_id!r}")
        if image_id and not _ID.fullmatch(image_id):
            raise bad_input(422, f"image id {image_id!r} may hold only letters, digits, '.', '_' and '-'")
        check_image_file(image_filename, f"uploaded image {image_id or os.path.basename(image_filename)!r}")
        return super().add_image(image_id, image_filename, image_info)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        image_path = self.get_image_uri(image_id)
        if not image_path:
            raise bad_input(404, f"image {image_id!r} is not in the datastore")
        self._check_size(label_filename, f"label for image {image_id!r}")
        if not _ID.fullmatch(label_tag or ""):
            raise bad_input(422, f"label tag {label_tag!r} may hold only letters, digits, '.', '_' and '-'")
        label_size = spatial_size(check_image_file(label_filename, f"label for image {image_id!r}"))
        image_size = spatial_size(read_header(image_path, f"image {image_id!r}")[0])
        if label_size != image_size:
            raise bad_input(
                422, f"label for image {image_id!r} has size {label_size} but the image has size {image_size}"
            )
        return super().save_label(image_id, label_filename, label_tag, label_info)


def update_info_entry(datastore, image_id: str, field: str, task: str, record: Optional[Dict[str, Any]]) -> None:
    """Set (or, with ``record=None``, remove) ``info[field][task]`` of one image; serialised within the process."""
    with _info_lock:
        info = datastore.get_image_info(image_id)
        if not info:
            raise bad_input(404, f"image {image_id!r} is not in the datastore")
        entries = dict(info.get(field) or {})
        if record is None:
            entries.pop(task, None)
        else:
            entries[task] = dict(record, ts=int(time.time()))
        datastore.update_image_info(image_id, {field: entries})


def class_label(info: Dict[str, Any], task: str) -> Optional[str]:
    """The class name recorded for ``task`` in an image's info, or None."""
    record = (info.get("class_labels") or {}).get(task)
    return record.get("label") if isinstance(record, dict) else None
