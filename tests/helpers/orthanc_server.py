"""A throw-away Orthanc PACS with its DICOMweb plugin on loopback, and a small generated MR series (for the
PACS integration test). Needs the Debian packages ``orthanc`` and ``orthanc-dicomweb``; :func:`missing` says
what is not installed."""

import contextlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Iterator, List, Optional

import numpy as np
import requests

from tests.helpers.live_server import free_port, stop, wait_until_ready

PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc/plugins", "/usr/local/share/orthanc/plugins")
PLUGIN_NAME = "libOrthancDicomWeb.so"


def orthanc_binary() -> Optional[str]:
    """Path of the ``Orthanc`` executable, or None."""
    return shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc",) if Path(p).is_file()), None)


def dicomweb_plugin() -> Optional[str]:
    """Path of Orthanc's DICOMweb plugin, or None."""
    return next((str(Path(d) / PLUGIN_NAME) for d in PLUGIN_DIRS if (Path(d) / PLUGIN_NAME).is_file()), None)


def missing() -> Optional[str]:
    """Why an Orthanc with DICOMweb cannot be started here, or None when it can."""
    if not orthanc_binary():
        return "Orthanc is not installed (Debian package 'orthanc')"
    if not dicomweb_plugin():
        return f"Orthanc's DICOMweb plugin {PLUGIN_NAME} is not installed (Debian package 'orthanc-dicomweb')"
    return None


@contextlib.contextmanager
def running_orthanc(root: Path, timeout: float = 60) -> Iterator[dict]:
    """Start Orthanc on free loopback ports with its storage under ``root``; yield ``{"url", "dicomweb", "log"}``
    (``dicomweb`` is the DICOMweb root to give MONAI Label as ``--studies``); stop it on exit."""
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0, got {timeout}")
    root.mkdir(parents=True, exist_ok=True)
    http_port = free_port()
    config = {
        "Name": "mri-label-test",
        "HttpPort": http_port,
        "DicomPort": free_port(),
        "DicomServerEnabled": False,
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "index"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [dicomweb_plugin()],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    config_path = root / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    log_path = root / "orthanc.log"
    url = f"http://127.0.0.1:{http_port}"
    with open(log_path, "a") as log:
        process = subprocess.Popen(
            [orthanc_binary(), str(config_path)], stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True
        )
        try:
            wait_until_ready(process, f"{url}/system", log_path, "Orthanc", timeout)
            yield {"url": url, "dicomweb": f"{url}/dicom-web", "log": log_path}
        finally:
            stop(process)


def mr_series(
    folder: Path,
    size: int = 64,
    slices: int = 8,
    patient_name: str = "DOE^JANE",
    patient_id: str = "PID-4711-SECRET",
) -> dict:
    """Write an axial MR series of ``slices`` ``size``×``size`` images (1 mm pixels, 3 mm slices) to ``folder``:
    a dim ellipse of "brain" with a bright blob ("tumor") on the central slices.

    Returns:
        ``{"study", "series", "files", "volume", "tumor"}``: the UIDs, the written paths, the pixel array
        ``(slices, rows, cols)`` and the boolean blob mask of the same shape.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    if size < 16 or slices < 3:
        raise ValueError(f"size must be >= 16 and slices >= 3, got size={size}, slices={slices}")
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    brain = ((yy - c) / (0.42 * size)) ** 2 + ((xx - c) / (0.36 * size)) ** 2 <= 1
    blob = (yy - c - size * 0.1) ** 2 + (xx - c + size * 0.12) ** 2 <= (size * 0.12) ** 2
    tumor_slices = range(slices // 2 - 1, slices // 2 + 2)
    volume = np.zeros((slices, size, size), np.uint16)
    tumor = np.zeros((slices, size, size), bool)
    files: List[Path] = []
    for k in range(slices):
        image = np.where(brain, 400, 0).astype(np.uint16)
        if k in tumor_slices:
            image[blob] = 1400
            tumor[k] = blob
        volume[k] = image
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"slice{k:03d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient_name, patient_id, "19700101", "F"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240102", "101500", "1", "ACC-1"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", 3, k + 1
        ds.SeriesDescription, ds.ScanningSequence, ds.SequenceVariant = "AX FLAIR", "SE\\IR", "SK"
        ds.MagneticFieldStrength, ds.Manufacturer = 3, "mri-label test"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ImagePositionPatient = [-c, -c, 3.0 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness, ds.SpacingBetweenSlices = [1, 1], 3, 3
        ds.SliceLocation = 3.0 * k
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = size, size, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = image.tobytes()
        ds.save_as(str(path), write_like_original=False)
        files.append(path)
    return {"study": study, "series": series, "files": files, "volume": volume, "tumor": tumor}


def upload(url: str, files: List[Path]) -> None:
    """Store DICOM files in Orthanc through its REST API (``POST /instances``)."""
    for path in files:
        response = requests.post(f"{url}/instances", data=Path(path).read_bytes(), timeout=30)
        response.raise_for_status()
