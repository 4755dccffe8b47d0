"""A real PACS path: Orthanc with its DICOMweb plugin as ``--studies``; an MR series found, segmented by
``tumor_seg``, and final labels written back to Orthanc as DICOM-SEG with their measurements as DICOM SR; no patient
identifier in the logs.

Skips where Orthanc or its DICOMweb plugin is not installed (Debian ``orthanc``, ``orthanc-dicomweb``)."""

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import requests
import SimpleITK as sitk

from tests.helpers import orthanc_server

if orthanc_server.missing():
    pytest.skip(f"PACS test needs Orthanc: {orthanc_server.missing()}", allow_module_level=True)

import pydicom  # noqa: E402
import pydicom_seg  # noqa: E402
from dicomweb_client import DICOMwebClient  # noqa: E402

from lib.dicom_sr import carried, read_report  # noqa: E402
from tests.helpers.app import SHIPPED_DIR  # noqa: E402
from tests.helpers.live_server import running_server  # noqa: E402

SECRETS = ("DOE^JANE", "JANE", "PID-4711-SECRET")


@pytest.fixture(scope="module")
def pacs(tmp_path_factory, sample_template):
    """Orthanc holding one generated MR series, and our server using it as studies."""
    root = tmp_path_factory.mktemp("pacs")
    series = orthanc_server.mr_series(root / "dicom")
    with orthanc_server.running_orthanc(root / "orthanc") as orthanc:
        orthanc_server.upload(orthanc["url"], series["files"])
        conf = {"models": "tumor_seg,tumor_gate", "shipped_models": str(SHIPPED_DIR)}
        env = {"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(root / "cache")}
        with running_server(root, sample_template, conf=conf, env=env, studies=orthanc["dicomweb"]) as server:
            yield {
                **series,
                "server": server["url"],
                "log": server["log"],
                "orthanc": orthanc,
                "dicomweb": DICOMwebClient(orthanc["dicomweb"]),
                "app_log": server["state"] / "logs" / "app.log",
            }


def _infer_mask(pacs) -> sitk.Image:
    response = requests.post(
        f"{pacs['server']}/infer/tumor_seg", params={"image": pacs["series"], "output": "image"}, timeout=300
    )
    assert response.status_code == 200, response.text
    with tempfile.NamedTemporaryFile(suffix=".nii.gz") as f:
        f.write(response.content)
        f.flush()
        return sitk.ReadImage(f.name)


def _put_label(pacs, mask: np.ndarray, like: sitk.Image, params: dict, image: str = None) -> requests.Response:
    """PUT a final label, as MONAI Label's Slicer panel does; ``mask`` is ``(slices, rows, cols)``."""
    label = sitk.GetImageFromArray(mask.astype(np.uint8))
    label.CopyInformation(like)
    with tempfile.NamedTemporaryFile(suffix=".nii.gz") as f:
        sitk.WriteImage(label, f.name, True)
        return requests.put(
            f"{pacs['server']}/datastore/label",
            params={"image": image or pacs["series"], "tag": "final"},
            files={"label": ("label.nii.gz", Path(f.name).read_bytes())},
            data={"params": json.dumps(params)},
            timeout=120,
        )


def _seg_series(pacs, modality: str = "SEG") -> set:
    found = pacs["dicomweb"].search_for_series(pacs["study"], search_filters={"Modality": modality})
    return {str(pydicom.Dataset.from_json(s).SeriesInstanceUID) for s in found}


def _read_seg(pacs, seg_series: str):
    instances = pacs["dicomweb"].retrieve_series(pacs["study"], seg_series)
    assert len(instances) == 1
    return instances[0]


def test_mr_series_is_listed(pacs):
    status = requests.get(f"{pacs['server']}/datastore/", timeout=30).json()
    assert status["total"] == 1 and status["completed"] == 0
    sample = requests.post(f"{pacs['server']}/activelearning/first", timeout=60)
    assert sample.status_code == 200, sample.text
    assert sample.json()["id"] == pacs["series"]


def test_infer_segments_the_series_and_final_label_goes_back_as_dicom_seg(pacs):
    mask = _infer_mask(pacs)
    assert mask.GetSize() == (64, 64, 8)
    assert set(np.unique(sitk.GetArrayViewFromImage(mask))) <= {0, 1}

    cached = requests.get(f"{pacs['server']}/datastore/", params={"output": "all"}, timeout=30).json()["objects"]
    assert pacs["series"] in cached
    info = cached[pacs["series"]]["image"]["info"]
    assert info["Modality"] == "MR" and info["StudyInstanceUID"] == pacs["study"] and "PatientID" not in info

    response = _put_label(pacs, pacs["tumor"], mask, {"task": "tumor_seg"})
    assert response.status_code == 200, response.text
    segs = _seg_series(pacs)
    assert len(segs) == 1
    seg = _read_seg(pacs, segs.pop())
    assert seg.Modality == "SEG" and seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == pacs["series"]
    source = {
        str(p.ReferencedSOPInstanceUID)
        for f in seg.PerFrameFunctionalGroupsSequence
        for p in f.DerivationImageSequence[0].SourceImageSequence
    }
    assert source == {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in pacs["files"]}
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["tumor"]
    read = pydicom_seg.SegmentReader().read(seg)
    tumor = read.segment_data(1).astype(bool)
    assert tumor.shape == pacs["tumor"].shape
    assert tumor.sum() == pacs["tumor"].sum()
    assert np.array_equal(tumor, pacs["tumor"])  # right voxels on the right slices

    status = requests.get(f"{pacs['server']}/datastore/", timeout=30).json()
    assert status["completed"] == 1


def test_viewer_segment_names_and_values_are_kept(pacs):
    like = _infer_mask(pacs)
    mask = pacs["tumor"].astype(np.uint8)
    mask[0, 2:6, 2:5] = 3  # a 12-voxel segment on the first slice only
    before = _seg_series(pacs)
    params = {"label_info": [{"name": "tumor", "idx": 1}, {"name": "edema", "idx": 3, "color": [0, 255, 0]}]}
    response = _put_label(pacs, mask, like, params)
    assert response.status_code == 200, response.text
    new = _seg_series(pacs) - before
    assert len(new) == 1
    seg = _read_seg(pacs, new.pop())
    assert {s.SegmentNumber: s.SegmentLabel for s in seg.SegmentSequence} == {1: "tumor", 3: "edema"}
    read = pydicom_seg.SegmentReader().read(seg)
    edema = read.segment_data(3).astype(bool)
    assert edema.sum() == 12 and edema[0].sum() == 12


def test_final_label_measurements_go_back_as_dicom_sr(pacs):
    """The model's answer saved as the final label: beside its DICOM-SEG the PACS holds a DICOM SR (TID 1500) whose
    measurements, read back from Orthanc, are the infer's JSON ones, referencing the SEG's segment and the series."""
    answer = requests.post(
        f"{pacs['server']}/infer/tumor_seg", params={"image": pacs["series"], "output": "json"}, timeout=300
    )
    assert answer.status_code == 200, answer.text
    measurements = answer.json()["measurements"]
    assert measurements["lesions"]["components"] >= 1, measurements  # the blob is found
    mask = _infer_mask(pacs)
    before_seg, before_sr = _seg_series(pacs), _seg_series(pacs, "SR")
    response = _put_label(pacs, sitk.GetArrayFromImage(mask), mask, {"task": "tumor_seg"})
    assert response.status_code == 200, response.text
    new_seg, new_sr = _seg_series(pacs) - before_seg, _seg_series(pacs, "SR") - before_sr
    assert len(new_seg) == 1 and len(new_sr) == 1
    seg = _read_seg(pacs, next(iter(new_seg)))
    stored = pacs["dicomweb"].retrieve_series(pacs["study"], next(iter(new_sr)))
    assert len(stored) == 1 and stored[0].Modality == "SR"
    read = read_report(stored[0])
    assert read["measurements"] == carried(measurements, {"tumor": 1}, "tumor")
    lesions = read["measurements"]["lesions"]
    assert lesions["volume_ml"] == measurements["lesions"]["volume_ml"] > 0
    assert lesions["components"] == measurements["lesions"]["components"]
    for got, want in zip(lesions["lesions"], measurements["lesions"]["lesions"], strict=True):
        assert got["largest_diameter_mm"] == want["largest_diameter_mm"]
        assert got["perpendicular_diameter_mm"] == want["perpendicular_diameter_mm"]
    assert read["segments"] == {"tumor": 1} and read["seg"] == seg.SOPInstanceUID
    assert read["source_series"] == pacs["series"]

    cached = requests.get(f"{pacs['server']}/datastore/", params={"output": "all"}, timeout=30).json()["objects"]
    info = cached[pacs["series"]]["labels"]["final"]["info"]
    assert info["sr"]["SeriesInstanceUID"] == next(iter(new_sr)) and info["SeriesInstanceUID"] == seg.SeriesInstanceUID


def test_training_datalist_pairs_the_series_with_its_label(pacs):
    response = requests.get(f"{pacs['server']}/datastore/", params={"output": "train"}, timeout=120)
    assert response.status_code == 200, response.text
    items = response.json()
    assert len(items) == 1 and pacs["series"] in items[0]["image"] and Path(items[0]["label"]).is_file()


@pytest.mark.parametrize("image, statuses", [("1.2.3.999", {404}), ("../../etc/passwd", {404, 422})])
def test_infer_on_what_is_not_a_series_is_refused(pacs, image, statuses):
    response = requests.post(f"{pacs['server']}/infer/tumor_seg", params={"image": image, "output": "json"}, timeout=60)
    assert response.status_code in statuses, response.text
    assert response.json()["detail"]


def test_bad_final_labels_are_refused_with_4xx(pacs):
    like = _infer_mask(pacs)
    before = _seg_series(pacs)
    empty = _put_label(pacs, np.zeros((8, 64, 64), np.uint8), like, {"task": "tumor_seg"})
    assert empty.status_code == 422 and "empty" in empty.json()["detail"]
    small = sitk.Image(32, 32, 8, sitk.sitkUInt8)
    wrong = _put_label(pacs, np.ones((8, 32, 32), np.uint8), small, {})
    assert wrong.status_code == 422 and "size" in wrong.json()["detail"]
    shifted = sitk.Image(like)
    shifted.SetOrigin([o + 5 for o in like.GetOrigin()])
    moved = _put_label(pacs, pacs["tumor"], shifted, {})
    assert moved.status_code == 422 and "grid" in moved.json()["detail"]
    unknown = _put_label(pacs, pacs["tumor"], like, {}, image="1.2.3.999")
    assert unknown.status_code == 404
    assert _seg_series(pacs) == before


def test_patient_identifiers_never_logged(pacs):
    texts = {"server log": pacs["log"].read_text(errors="replace")}
    if pacs["app_log"].exists():  # the server's own log file (lib.server_state)
        texts["app.log"] = pacs["app_log"].read_text(errors="replace")
    assert pacs["series"] in texts["server log"]  # image ids are logged
    for name, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} appears in the {name}"


@pytest.mark.parametrize(
    "method,path,status",
    [
        ("GET", "/proxy/dicom/qido/studies", 200),
        ("GET", "/proxy/dicom/qido/studies/%2E%2E/%2E%2E/system", 422),
        ("GET", "/proxy/dicom/qido/studies/..%2F..%2Fsystem", 422),
        ("GET", "/proxy/dicom/qido/system", 422),
        ("POST", "/proxy/dicom/qido/studies", 405),
    ],
)
def test_the_pacs_proxy_passes_only_dicomweb_reads(pacs, method, path, status):
    """The live proxy to Orthanc: a QIDO study search passes; dot segments, paths that are no DICOMweb resource and
    writes through the read routes are refused before anything reaches the PACS."""
    answer = requests.request(method, pacs["server"] + path, timeout=60)
    assert answer.status_code == status, answer.text[:300]
    if status == 200:
        assert pacs["study"] in answer.text
