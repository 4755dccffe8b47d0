"""A PACS as the studies source: MONAI Label's DICOMweb datastore, searching MR series, writing ``final``
labels back as DICOM-SEG (pydicom-seg; no dcmqi binary needed) with their measurements beside it as DICOM SR
(:mod:`lib.dicom_sr`), with 4xx answers for bad input.

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
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import pydicom
import requests
import SimpleITK as sitk
from dicomweb_client import DICOMwebClient
from monailabel.config import settings
from monailabel.datastore.dicom import DICOMwebClientX, DICOMWebDatastore
from monailabel.datastore.local import LocalDatastore
from monailabel.datastore.utils.convert import binary_to_image, nifti_to_dicom_seg
from monailabel.interfaces.datastore import DefaultLabelTag

from lib.datastore import check_label_file, check_label_tag, check_upload_size, without_review
from lib.dicom_sr import carried, measurement_report
from lib.errors import bad_input
from lib.stock import StockDICOMwebDatastore

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


def label_task(info: Mapping[str, Any], task_labels: Mapping[str, Mapping[str, int]]) -> Optional[str]:
    """The segmentation task a label belongs to: ``info["task"]`` (or ``info["model"]``) where it names one of
    ``task_labels``, else the only one there; None when neither tells."""
    task: Any = info.get("task") if info.get("task") in task_labels else info.get("model")
    if task not in task_labels:
        task = next(iter(task_labels)) if len(task_labels) == 1 else None
    return task


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
    task = label_task(info, task_labels)
    names = {int(v): n for n, v in (task_labels.get(task) or {}).items()} if task else {}
    segments = []
    for i, value in enumerate(values):
        given = by_idx.get(value) or (unindexed[i] if i < len(unindexed) else {})
        name = str(given.get("name") or names.get(value) or f"segment {value}")
        segment: Dict[str, Any] = {
            "name": name,
            "description": f"{task}: {name}" if task else name,
            "model_name": task or "MONAI Label",
        }
        if isinstance(given.get("color"), (list, tuple)) and len(given["color"]) >= 3:
            segment["color"] = [int(c) for c in given["color"][:3]]
        segments.append(segment)
    return segments


class MRIDICOMwebDatastore(StockDICOMwebDatastore):
    """MONAI Label's DICOMweb datastore with our input checks, DICOM-SEG written by pydicom-seg, and no
    patient identifiers in its records or logs.

    Args:
        client: DICOMweb client of the PACS.
        search_filter: QIDO-RS series filter (see :func:`search_filter`).
        task_labels: segmentation task -> ``{label name: value}``, to name the segments of a DICOM-SEG.
        measure: ``(task, image path, label path) -> measurements`` of a label map as the task's infer measures its
            answer (None: not a task that measures); a final label of a task it measures also gets a DICOM SR of
            them (:mod:`lib.dicom_sr`). None: no SR.
        lesion_labels: segmentation task -> the label its config declares as ``lesions``.
        cache_path: folder for downloaded series and labels (MONAI Label's default when None).
        max_upload_mb: largest label file accepted (MB); larger ones get a 413.
        fetch_by_frame: as MONAI Label's ``MONAI_LABEL_DICOMWEB_FETCH_BY_FRAME``.
    """

    def __init__(
        self,
        client: DICOMwebClient,
        search_filter: Dict[str, Any],
        task_labels: Optional[Mapping[str, Mapping[str, int]]] = None,
        measure: Optional[Callable[[str, str, str], Optional[Dict[str, Any]]]] = None,
        lesion_labels: Optional[Mapping[str, str]] = None,
        cache_path: Optional[str] = None,
        max_upload_mb: float = 2048.0,
        fetch_by_frame: bool = False,
    ):
        if not isinstance(search_filter, dict):
            raise ValueError(f"search_filter must be a dict, got {search_filter!r}")
        if max_upload_mb <= 0:
            raise ValueError(f"max_upload_mb must be > 0, got {max_upload_mb}")
        self.task_labels = {t: dict(v) for t, v in (task_labels or {}).items()}
        if measure is not None and not callable(measure):
            raise ValueError(f"measure must be callable (task, image path, label path), got {measure!r}")
        self.measure = measure
        self.lesion_labels = dict(lesion_labels or {})
        for task, label in self.lesion_labels.items():
            if label not in self.task_labels.get(task, {}):
                raise ValueError(f"lesion_labels[{task!r}] must name a label of task {task!r}, got {label!r}")
        self.max_upload_bytes = int(max_upload_mb * 1024 * 1024)
        self._fetch_lock = threading.Lock()
        super().__init__(
            client, search_filter, cache_path=cache_path, fetch_by_frame=fetch_by_frame, convert_to_nifti=True
        )

    def series_info(self, info):
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
                shutil.rmtree(os.path.join(self.image_folder(), image_id), ignore_errors=True)
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
        (STOW-RS), and its series UID recorded in the label info (``SeriesInstanceUID``); with its task's
        measurements as DICOM SR in the same request where the task measures (``sr`` in the label info: the SR's
        ``SeriesInstanceUID`` and ``SOPInstanceUID``, None without one)."""
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
        """Write the label as DICOM-SEG referencing the cached series, and its measurements as DICOM SR referencing
        the SEG's segments, and store both in the PACS (one STOW-RS request)."""
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
        task = label_task(info, self.task_labels)
        numbers = self._measurements(image_id, task, image_path, label_filename)
        grid_file = tempfile.NamedTemporaryFile(suffix=".nii.gz", delete=False).name
        seg_file = ""
        try:
            sitk.WriteImage(label, grid_file, True)
            series_dir = os.path.join(self.image_folder(), image_id)
            try:
                seg_file = nifti_to_dicom_seg(
                    series_dir, grid_file, segment_info(values, info, self.task_labels), use_itk=False
                )
                seg = pydicom.dcmread(seg_file)
            except (ValueError, AttributeError) as error:
                raise bad_input(
                    422, f"final label for image {image_id!r} could not be written as DICOM-SEG: {error}"
                ) from None
        finally:
            for path in (grid_file, seg_file):
                if path and os.path.exists(path):
                    os.unlink(path)
        report = None
        if task is not None and numbers is not None:
            try:
                report = measurement_report(
                    seg, numbers, self.task_labels[task], task, lesions=self.lesion_labels.get(task)
                )
            except ValueError as error:
                raise bad_input(
                    422,
                    f"the measurements of the final label for image {image_id!r} could not be written as "
                    f"DICOM SR: {error}",
                ) from None
        self._stow(image_id, [seg] if report is None else [seg, report])
        for method in (DICOMWebDatastore.list_images, DICOMWebDatastore.get_labeled_images):
            method.cache_clear()  # so the new label counts at once, not after MONAI_LABEL_DICOMWEB_CACHE_EXPIRY
        seg_series = str(seg.SeriesInstanceUID)
        sr = None
        if report is not None:
            sr = {"SeriesInstanceUID": str(report.SeriesInstanceUID), "SOPInstanceUID": str(report.SOPInstanceUID)}
        logger.info(
            f"DICOM-SEG {seg_series} stored for image {image_id}: segments {values}"
            + (f"; DICOM SR {sr['SeriesInstanceUID']} of its {task} measurements" if sr else "; no DICOM SR")
        )
        study = self.get_image_info(image_id).get("StudyInstanceUID")
        return {"SeriesInstanceUID": seg_series, "StudyInstanceUID": study, "Modality": "SEG", "sr": sr}

    def _measurements(
        self, image_id: str, task: Optional[str], image_path: str, label_filename: str
    ) -> Optional[Dict[str, Any]]:
        """The task's measurements of the final label (None: no SR: no task known, none measured, or none of the
        task's labels in it); 422 when they cannot be taken."""
        if self.measure is None or task is None:
            return None
        try:
            measured = self.measure(task, image_path, label_filename)
            if measured is None:
                return None
            numbers = carried(measured, self.task_labels[task], self.lesion_labels.get(task))
        except ValueError as error:
            raise bad_input(
                422, f"the final label for image {image_id!r} could not be measured for its DICOM SR: {error}"
            ) from None
        if not numbers["mm3"] and "lesions" not in numbers:
            return None  # none of the task's labels in it: nothing to report
        return measured

    def _stow(self, image_id: str, datasets: Sequence[pydicom.Dataset]) -> None:
        """Store ``datasets`` in the PACS with one STOW-RS request; 502 unless it confirms every one."""
        what = " and ".join("DICOM SR" if ds.Modality == "SR" else f"DICOM-{ds.Modality}" for ds in datasets)
        try:
            answer = self.web_client.store_instances(list(datasets))
        except requests.RequestException as error:
            raise bad_input(
                502, f"the PACS did not store the {what} of image {image_id}: {type(error).__name__}"
            ) from None
        stored = {str(item.get("ReferencedSOPInstanceUID", "")) for item in answer.get("ReferencedSOPSequence", [])}
        missing = [ds for ds in datasets if str(ds.SOPInstanceUID) not in stored]
        if missing:
            names = " and ".join("DICOM SR" if ds.Modality == "SR" else f"DICOM-{ds.Modality}" for ds in missing)
            raise bad_input(502, f"the PACS did not confirm the {names} of image {image_id}")


def _same_grid(label: sitk.Image, image: sitk.Image, mm: float = 1e-2, cosine: float = 1e-3) -> bool:
    """Whether two images share size, and origin and spacing within ``mm``, and direction within ``cosine``."""
    return (
        label.GetSize() == image.GetSize()
        and np.allclose(label.GetOrigin(), image.GetOrigin(), atol=mm)
        and np.allclose(label.GetSpacing(), image.GetSpacing(), atol=mm)
        and np.allclose(label.GetDirection(), image.GetDirection(), atol=cosine)
    )
