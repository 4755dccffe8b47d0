"""A PACS as the studies source: MONAI Label's DICOMweb datastore, searching MR series, writing ``final``
labels back as DICOM-SEG (pydicom-seg; no dcmqi binary needed), with 4xx answers for bad input.

Start with ``--studies http://127.0.0.1:8042/dicom-web`` (e.g. Orthanc with its DICOMweb plugin). Series are
found by QIDO-RS with MONAI Label's ``MONAI_LABEL_DICOMWEB_SEARCH_FILTER`` and ``Modality`` set from
``--conf dicomweb_modality`` (default ``MR``); images are downloaded (WADO-RS) into a cache folder and
converted to NIfTI. Patient identifiers are kept out of the cache's records and out of the logs: only series
UIDs (the image ids) are logged.
"""

import logging
import os
import re
import shutil
import tempfile
import threading
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import requests
import SimpleITK as sitk
from dicomweb_client import DICOMwebClient
from monailabel.config import settings
from monailabel.datastore.dicom import DICOMwebClientX, DICOMWebDatastore
from monailabel.datastore.local import LocalDatastore
from monailabel.datastore.utils.convert import binary_to_image, nifti_to_dicom_seg
from monailabel.datastore.utils.dicom import dicom_web_upload_dcm
from monailabel.interfaces.datastore import DefaultLabelTag

from lib.datastore import check_label_file, check_label_tag, check_upload_size, without_review
from lib.errors import bad_input

logger = logging.getLogger(__name__)

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_MODALITY = re.compile(r"^[A-Z0-9_]{1,16}$")
# Keys of MONAI Label's series info that identify the patient; never kept in the cache's JSON (nor logged).
PATIENT_KEYS = ("PatientID", "PatientName", "PatientBirthDate", "OtherPatientIDs")


def is_uid(value: str) -> bool:
    """Whether ``value`` is a DICOM UID (digits and dots, at most 64 characters)."""
    return isinstance(value, str) and len(value) <= 64 and bool(_UID.fullmatch(value))


def search_filter(conf: Mapping[str, str]) -> Dict[str, Any]:
    """QIDO-RS series filter: MONAI Label's ``MONAI_LABEL_DICOMWEB_SEARCH_FILTER`` with ``Modality`` from
    ``--conf dicomweb_modality`` (default ``MR``; ``any`` drops the modality filter)."""
    modality = str(conf.get("dicomweb_modality") or "MR").strip().upper()
    found = {k: v for k, v in dict(settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER or {}).items() if k != "Modality"}
    if modality == "ANY":
        return found
    if not _MODALITY.fullmatch(modality):
        raise ValueError(f"--conf dicomweb_modality must be a DICOM modality like MR or CT (or any), got {modality!r}")
    return {**found, "Modality": modality}


#: (connect, read) time limits in seconds of every PACS request. dicomweb-client sets none: a PACS that stops
#: answering would hold an infer or a label save, and with it the one-at-a-time infer lock, for ever. The read
#: limit is the longest wait for the next bytes, not for a whole series.
PACS_TIMEOUT_S = (10.0, 120.0)


class TimeoutSession(requests.Session):
    """A ``requests`` session that gives every request :data:`PACS_TIMEOUT_S` unless the call sets its own."""

    def __init__(self, timeout=None):
        super().__init__()
        self.timeout = timeout or PACS_TIMEOUT_S

    def request(self, method, url, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().request(method, url, **kwargs)


def dicomweb_client(url: str) -> DICOMwebClient:
    """A DICOMweb client for ``url`` with MONAI Label's credential and prefix settings."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"url must be an http(s) DICOMweb root, got {url!r}")
    if "googleapis.com" in url:
        from dicomweb_client.ext.gcp.session_utils import create_session_from_gcp_credentials

        return DICOMwebClient(url=url, session=create_session_from_gcp_credentials())
    user = settings.MONAI_LABEL_DATASTORE_USERNAME or settings.MONAI_LABEL_DICOMWEB_USERNAME
    password = settings.MONAI_LABEL_DATASTORE_PASSWORD or settings.MONAI_LABEL_DICOMWEB_PASSWORD
    session = TimeoutSession()
    if user and password:
        session.auth = (user, password)  # as dicomweb_client.session_utils.create_session_from_user_pass
    client = DICOMwebClientX(
        url=url,
        session=session,
        qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
        wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
        stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX,
    )
    # dicomweb-client retries a refused connection 5 times with exponential back-off (about 30 s per request
    # before an answer); 3 attempts (about 6 s) are enough to ride out a PACS restart.
    client.set_http_retry_params(max_attempts=3)
    return client


def segment_info(
    values: List[int], info: Mapping[str, Any], task_labels: Mapping[str, Mapping[str, int]]
) -> List[dict]:
    """One ``{"name", "description", "model_name"}`` per label value (in ``values`` order), for MONAI Label's
    ``nifti_to_dicom_seg``.

    Names come from, first, the viewer's ``label_info`` (``[{"name", "idx"}]`` as MONAI Label's Slicer panel
    sends; entries without ``idx`` are taken in order); else from the task named by ``info["task"]`` (or
    ``info["model"]``), or the only segmentation task served; else ``segment <value>``.
    """
    viewer = [s for s in (info.get("label_info") or []) if isinstance(s, dict) and s.get("name")]
    by_idx = {int(s["idx"]): s for s in viewer if str(s.get("idx", "")).isdigit()}
    unindexed = [s for s in viewer if not str(s.get("idx", "")).isdigit() and s.get("name") != "background"]
    task: Any = info.get("task") if info.get("task") in task_labels else info.get("model")
    if task not in task_labels:
        task = next(iter(task_labels)) if len(task_labels) == 1 else None
    names = {int(v): n for n, v in (task_labels.get(task) or {}).items()}
    segments = []
    for i, value in enumerate(values):
        given = by_idx.get(value) or (unindexed[i] if i < len(unindexed) else {})
        name = str(given.get("name") or names.get(value) or f"segment {value}")
        segment = {
            "name": name,
            "description": f"{task}: {name}" if task else name,
            "model_name": task or "MONAI Label",
        }
        if isinstance(given.get("color"), (list, tuple)) and len(given["color"]) >= 3:
            segment["color"] = [int(c) for c in given["color"][:3]]
        segments.append(segment)
    return segments


class MRIDICOMwebDatastore(DICOMWebDatastore):
    """MONAI Label's DICOMweb datastore with our input checks, DICOM-SEG written by pydicom-seg, and no
    patient identifiers in its records or logs.

    Args:
        client: DICOMweb client of the PACS.
        search_filter: QIDO-RS series filter (see :func:`search_filter`).
        task_labels: segmentation task -> ``{label name: value}``, to name the segments of a DICOM-SEG.
        cache_path: folder for downloaded series and labels (MONAI Label's default when None).
        max_upload_mb: largest label file accepted (MB); larger ones get a 413.
        fetch_by_frame: as MONAI Label's ``MONAI_LABEL_DICOMWEB_FETCH_BY_FRAME``.
    """

    def __init__(
        self,
        client: DICOMwebClient,
        search_filter: Dict[str, Any],
        task_labels: Optional[Mapping[str, Mapping[str, int]]] = None,
        cache_path: Optional[str] = None,
        max_upload_mb: float = 2048.0,
        fetch_by_frame: bool = False,
    ):
        if not isinstance(search_filter, dict):
            raise ValueError(f"search_filter must be a dict, got {search_filter!r}")
        if max_upload_mb <= 0:
            raise ValueError(f"max_upload_mb must be > 0, got {max_upload_mb}")
        self.task_labels = {t: dict(v) for t, v in (task_labels or {}).items()}
        self.max_upload_bytes = int(max_upload_mb * 1024 * 1024)
        self._fetch_lock = threading.Lock()
        super().__init__(
            client, search_filter, cache_path=cache_path, fetch_by_frame=fetch_by_frame, convert_to_nifti=True
        )

    def _dicom_info(self, series_id):
        info = super()._dicom_info(series_id)
        return {k: v for k, v in info.items() if k not in PATIENT_KEYS}

    def list_images(self) -> List[str]:
        """Series UIDs matching the search filter (QIDO-RS; cached by MONAI Label)."""
        try:
            return super().list_images()
        except requests.RequestException as error:
            raise bad_input(502, f"the PACS did not answer the series search: {type(error).__name__}") from None

    def get_labeled_images(self, label_tag: Optional[str] = None, labels: Optional[List[str]] = None) -> List[str]:
        """Series with a DICOM-SEG in the PACS (QIDO-RS; cached by MONAI Label)."""
        try:
            return super().get_labeled_images(label_tag, labels)
        except requests.RequestException as error:
            raise bad_input(502, f"the PACS did not answer the DICOM-SEG search: {type(error).__name__}") from None

    def get_image_uri(self, image_id: str) -> str:
        """Path of the series' NIfTI in the cache (downloaded and converted on first use); ``""`` when
        ``image_id`` is not a series of the PACS."""
        if not is_uid(image_id):
            return ""
        cached = LocalDatastore.get_image_uri(self, image_id)
        if cached and os.path.isfile(cached):
            return cached
        with self._fetch_lock:
            try:
                path = super().get_image_uri(image_id)
            except IndexError:  # MONAI Label's download: no series with this UID
                return ""
            except requests.RequestException as error:
                # a partial download would later be taken for the whole series
                shutil.rmtree(os.path.join(self._datastore.image_path(), image_id), ignore_errors=True)
                raise bad_input(502, f"the PACS did not deliver series {image_id}: {type(error).__name__}") from None
            except RuntimeError:  # SimpleITK could not read the series as one image
                raise bad_input(422, f"series {image_id} could not be converted to an image volume") from None
        cached = LocalDatastore.get_image_uri(self, image_id)
        if cached and os.path.isfile(cached):
            if path != cached and path.startswith(tempfile.gettempdir()):
                os.unlink(path)  # MONAI Label returns its temporary NIfTI the first time
            return cached
        return path

    def get_label_uri(self, label_id: str, label_tag: str, image_id: str = "") -> str:
        """A ``final`` label saved through this server is read from the cache, not downloaded again."""
        local = LocalDatastore.get_label_uri(self, label_id, label_tag)
        if local and os.path.isfile(local):
            return local
        return super().get_label_uri(label_id, label_tag, image_id)

    def save_label(
        self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any], label_id: str = ""
    ) -> str:
        """Check the label against the series; a ``final`` one is also stored in the PACS as DICOM-SEG
        (STOW-RS), and its series UID recorded in the label info (``SeriesInstanceUID``)."""
        image_path = self.get_image_uri(image_id)
        if not image_path:
            raise bad_input(404, f"image {image_id!r} is not a series of the PACS")
        check_upload_size(label_filename, f"label for image {image_id!r}", self.max_upload_bytes)
        check_label_tag(label_tag)
        converted = ""
        try:
            if label_filename.endswith(".bin"):
                try:
                    converted = label_filename = binary_to_image(image_path, label_filename)
                except ValueError:
                    raise bad_input(
                        422, f"binary label for image {image_id!r} does not hold one byte per voxel of the image"
                    ) from None
            check_label_file(label_filename, image_id, image_path)
            info = {k: v for k, v in without_review(label_info).items() if k not in PATIENT_KEYS}
            if label_tag == DefaultLabelTag.FINAL:
                info.update(self._store_seg(image_id, image_path, label_filename, info))
            return LocalDatastore.save_label(self, image_id, label_filename, label_tag, info)
        finally:
            if converted and os.path.exists(converted):
                os.unlink(converted)

    def _store_seg(self, image_id: str, image_path: str, label_filename: str, info: Dict[str, Any]) -> Dict[str, Any]:
        """Write the label as DICOM-SEG referencing the cached series and store it in the PACS."""
        label = sitk.ReadImage(label_filename)
        array = sitk.GetArrayViewFromImage(label)
        if (
            label.GetNumberOfComponentsPerPixel() != 1
            or np.any(array < 0)
            or np.any(array != np.round(array))
            or np.any(array > 65535)
        ):
            raise bad_input(
                422, f"final label for image {image_id!r} must hold integer label values 0..65535 in one channel"
            )
        values = [int(v) for v in np.unique(array) if v != 0]
        if not values:
            raise bad_input(422, f"final label for image {image_id!r} is empty: a DICOM-SEG needs at least one segment")
        image = sitk.ReadImage(image_path)
        label = sitk.Cast(label, sitk.sitkUInt16)
        if label.GetDimension() == 2:
            label = sitk.JoinSeries([label])
        if not _same_grid(label, image):
            raise bad_input(
                422,
                f"final label for image {image_id!r} is not in the image's grid (origin, spacing or direction differ)",
            )
        label.CopyInformation(image)
        grid_file = tempfile.NamedTemporaryFile(suffix=".nii.gz", delete=False).name
        seg_file = ""
        try:
            sitk.WriteImage(label, grid_file, True)
            series_dir = os.path.join(self._datastore.image_path(), image_id)
            try:
                seg_file = nifti_to_dicom_seg(
                    series_dir, grid_file, segment_info(values, info, self.task_labels), use_itk=False
                )
            except (ValueError, AttributeError) as error:
                raise bad_input(
                    422, f"final label for image {image_id!r} could not be written as DICOM-SEG: {error}"
                ) from None
            try:
                seg_series = dicom_web_upload_dcm(seg_file, self._client)
            except requests.RequestException as error:
                raise bad_input(
                    502, f"the PACS did not store the DICOM-SEG of image {image_id}: {type(error).__name__}"
                ) from None
        finally:
            for path in (grid_file, seg_file):
                if path and os.path.exists(path):
                    os.unlink(path)
        if not seg_series:
            raise bad_input(502, f"the PACS did not confirm the DICOM-SEG of image {image_id}")
        for method in (DICOMWebDatastore.list_images, DICOMWebDatastore.get_labeled_images):
            method.cache_clear()  # so the new label counts at once, not after MONAI_LABEL_DICOMWEB_CACHE_EXPIRY
        logger.info(f"DICOM-SEG {seg_series} stored for image {image_id}: segments {values}")
        study = self.get_image_info(image_id).get("StudyInstanceUID")
        return {"SeriesInstanceUID": seg_series, "StudyInstanceUID": study, "Modality": "SEG"}


def _same_grid(label: sitk.Image, image: sitk.Image, mm: float = 1e-2, cosine: float = 1e-3) -> bool:
    """Whether two images share size, and origin and spacing within ``mm``, and direction within ``cosine``."""
    return (
        label.GetSize() == image.GetSize()
        and np.allclose(label.GetOrigin(), image.GetOrigin(), atol=mm)
        and np.allclose(label.GetSpacing(), image.GetSpacing(), atol=mm)
        and np.allclose(label.GetDirection(), image.GetDirection(), atol=cosine)
    )
