"""``output=report`` end to end: the real server (a subprocess) with the shipped tumor_seg checkpoint, two studies of
one subject linked by their study dates; the report PDF of the second holds the numbers of its JSON, the change over
time since the first among them; bad ``output`` values get a 4xx naming the allowed ones."""

import gzip
import io
import json
import zipfile

import nibabel as nib
import numpy as np
import pytest
import requests
from pypdf import PdfReader

from tests.helpers.app import SHIPPED_DIR
from tests.helpers.live_server import running_server

FIRST, FOLLOW_UP = "synth01_flair", "synth01_flair_followup"
TIMEOUT = 600


@pytest.fixture(scope="module")
def server(tmp_path_factory, sample_template):
    conf = {"models": "tumor_seg,sequence", "shipped_models": str(SHIPPED_DIR)}
    with running_server(tmp_path_factory.mktemp("report"), sample_template, conf=conf) as running:
        yield running


def pdf_text(body: bytes) -> tuple:
    reader = PdfReader(io.BytesIO(body))
    return len(reader.pages), " ".join(reader.pages[0].extract_text().split())


def infer(server, image, output, params=None):
    return requests.post(
        f"{server['url']}/infer/tumor_seg",
        params={"image": image, "output": output},
        data={"params": json.dumps(params or {})},
        timeout=TIMEOUT,
    )


def test_the_report_of_a_follow_up_study_holds_the_numbers_of_its_json(server):
    url = server["url"]
    dated = requests.put(
        f"{url}/datastore/image/info", params={"image": FIRST}, data={"info": json.dumps({"study_date": "20200115"})}
    )
    assert dated.status_code == 200, dated.text

    # the first study: its mask (output=image) measured and stored
    first = infer(server, FIRST, "image")
    assert first.status_code == 200, first.text
    mask = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(first.content)).dataobj)
    slices = np.nonzero(mask.any(axis=(0, 1)))[0]
    assert slices.size, "the shipped tumor_seg finds the sample tumor"

    # the follow-up: the same scan with the tumor's upper slices filled with the brain's median (a smaller tumor)
    scan = nib.load(server["studies"] / f"{FIRST}.nii.gz")
    data = np.asarray(scan.dataobj, dtype=np.float32).copy()
    upper = np.zeros_like(mask, dtype=bool)
    upper[..., slices[len(slices) // 2] :] = mask[..., slices[len(slices) // 2] :] > 0
    data[upper] = float(np.median(data[data > 0]))
    body = gzip.compress(nib.Nifti1Image(data, scan.affine).to_bytes())
    stored = requests.put(
        f"{url}/datastore/image",
        params={"image": FOLLOW_UP},
        data={"params": json.dumps({"subject": "synth01", "study_date": "2021-07-15"})},
        files={"file": ("followup.nii.gz", body)},
    )
    assert stored.status_code == 200, stored.text

    answer = infer(server, FOLLOW_UP, "json")
    assert answer.status_code == 200, answer.text
    result = answer.json()
    change = result["change_over_time"]
    assert change["computed"], change
    assert change["previous"]["image"] == FIRST and change["previous"]["study_date"] == "2020-01-15"
    assert change["interval_days"] == 547 and change["same_checkpoint"] is True
    volume = change["changes"]["volume_ml"]
    assert volume["current"] == round(result["measurements"]["lesions"]["volume_ml"], 2)
    # from the unrounded volumes: within a rounding step of the difference of the rounded ones
    assert volume["absolute"] == pytest.approx(volume["current"] - volume["previous"], abs=0.011)
    assert volume["absolute"] < 0  # the follow-up's tumor lost its upper slices

    report = infer(server, FOLLOW_UP, "report")
    assert report.status_code == 200, report.text
    assert report.headers["content-type"] == "application/pdf"
    pages, text = pdf_text(report.content)
    assert pages == 1 and "Research use only: not for clinical decisions" in text
    measured = result["measurements"]["lesions"]
    assert f"tumor volume: {measured['volume_ml']:.2f} mL" in text
    assert f"lesions (connected components): {measured['components']}" in text
    assert f"since 2020-01-15 (image {FIRST}), 547 days (1.50 years) before this study of 2021-07-15" in text
    assert f"{volume['previous']:.2f} -> {volume['current']:.2f} mL, {volume['absolute']:+.2f} mL" in text
    if volume["percent"] is not None:
        assert f"({volume['percent']:+.2f} %)" in text
    assert "both measured by the same checkpoint" in text and "shipped/tumor_seg/model.pt" in text

    # the ZIP: the same page, its PNG and its JSON
    zipped = infer(server, FOLLOW_UP, "report", {"report_format": "zip"})
    assert zipped.status_code == 200 and zipped.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as archive:
        assert sorted(archive.namelist()) == ["report.json", "report.pdf", "report.png"]
        numbers = json.loads(archive.read("report.json"))
    assert numbers["change_over_time"]["changes"] == change["changes"]
    assert numbers["measurements"]["volume_ml"] == round(measured["volume_ml"], 2)


@pytest.mark.parametrize(
    "task, output, says",
    [
        ("tumor_seg", "banana", "output must be one of image, json, all, dicom_seg, report; got 'banana'"),
        ("tumor_seg", "REPORT", "output must be one of"),
        ("sequence", "report", "output=report: sequence declares no measurements to report; tasks with a report"),
    ],
)
def test_bad_output_values_get_a_4xx_naming_what_is_allowed(server, task, output, says):
    response = requests.post(
        f"{server['url']}/infer/{task}", params={"image": FIRST, "output": output}, timeout=TIMEOUT
    )
    assert response.status_code == 422, response.text
    assert says in response.json()["detail"]
