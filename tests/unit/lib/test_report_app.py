"""``output=report`` in process (``lib.report`` and the infer route, FastAPI TestClient, initial weights): the PDF,
the ZIP, the change over time of a second study in it, and the refusals (4xx naming what is wrong)."""

import io
import json
import zipfile

import pytest
from pypdf import PdfReader

from lib.report import answer_name, report_options

IMAGE = "synth01_flair"


@pytest.fixture
def api_conf():
    return {"models": "tumor_seg,sequence"}  # a segmenter with a report and a classifier without one


def pdf_text(body: bytes) -> tuple:
    reader = PdfReader(io.BytesIO(body))
    return len(reader.pages), " ".join(reader.pages[0].extract_text().split())


def infer(client, image, output, params=None):
    return client.post(f"/infer/tumor_seg?image={image}&output={output}", data={"params": json.dumps(params or {})})


def test_report_options_refuse_naming_the_param():
    reporting = {"tumor_seg": "lesions"}
    assert report_options("lesions", "tumor_seg", reporting, {"age": 64, "sex": "f"}) == ("lesions", 64, "F", "pdf")
    assert report_options("lesions", "tumor_seg", reporting, {"report_format": "zip"})[3] == "zip"
    cases = [
        (None, {}, "output=report: sequence declares no measurements to report; tasks with a report: tumor_seg"),
        ("lesions", {"uncertainty": True}, "leave params uncertainty out"),
        ("lesions", {"age": "old"}, "params age must be a number of years, got 'old'"),
        ("lesions", {"sex": "x"}, "params sex must be F or M, got 'x'"),
        ("lesions", {"report_format": "docx"}, "params report_format must be one of pdf, zip, got 'docx'"),
    ]
    for measures, params, says in cases:
        with pytest.raises(ValueError) as refused:
            report_options(measures, "sequence" if measures is None else "tumor_seg", reporting, params)
        assert says in str(refused.value)
    assert answer_name("sub 1/../x", "tumor_seg") == "sub_1_.._x-tumor_seg-report"
    assert answer_name(None, "tumor_seg") == "upload-tumor_seg-report"


def test_the_report_of_a_second_study_holds_the_change_since_the_first(api_trained):
    client, app, folder = api_trained
    datastore = app.datastore()
    datastore.update_image_info(IMAGE, {"study_date": "2020-01-15"})
    with open(datastore.get_image_uri(IMAGE), "rb") as handle:  # the same scan again, a year and a half later
        answer = client.put(
            "/datastore/image?image=synth01_flair_followup",
            data={"params": json.dumps({"subject": "synth01", "study_date": "2021-07-15"})},
            files={"file": ("followup.nii.gz", handle.read())},
        )
    assert answer.status_code == 200, answer.text

    first = infer(client, IMAGE, "json")
    assert first.status_code == 200, first.text
    assert first.json()["change_over_time"]["computed"] is False  # nothing earlier yet

    response = infer(client, "synth01_flair_followup", "report")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"] == 'inline; filename="synth01_flair_followup-tumor_seg-report.pdf"'
    pages, text = pdf_text(response.content)
    assert pages == 1 and "mri-label report: tumor_seg" in text
    assert "since 2020-01-15 (image synth01_flair), 547 days (1.50 years)" in text

    zipped = infer(client, "synth01_flair_followup", "report", {"report_format": "zip", "age": 50, "sex": "M"})
    assert zipped.status_code == 200 and zipped.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as archive:
        assert sorted(archive.namelist()) == ["report.json", "report.pdf", "report.png"]
        report = json.loads(archive.read("report.json"))
        _, zipped_text = pdf_text(archive.read("report.pdf"))
    change = report["change_over_time"]
    assert change["computed"] and change["previous"]["image"] == IMAGE and change["interval_days"] == 547
    volume = change["changes"]["volume_ml"]
    assert volume["previous"] == volume["current"] and volume["absolute"] == 0.0  # the same scan, the same model
    assert change["same_checkpoint"] is True and not change["annualised"]
    assert f"{volume['previous']:.2f} -> {volume['current']:.2f} mL, +0.00 mL" in zipped_text
    assert report["subject"] == {"age_years": 50.0, "sex": "M"}
    assert report["input"]["file"] == "synth01_flair_followup"
    # the stored results: one per image, the follow-up's replaced by its latest infer
    assert set(datastore.get_image_info(IMAGE)["measured"]) == {"tumor_seg"}
    assert datastore.get_image_info("synth01_flair_followup")["measured"]["tumor_seg"]["study_date"] == "2021-07-15"


@pytest.mark.parametrize(
    "url, params, status, says",
    [
        (f"/infer/tumor_seg?image={IMAGE}&output=banana", {}, 422, "output must be one of image, json, all, dicom_seg"),
        (f"/infer/sequence?image={IMAGE}&output=report", {}, 422, "sequence declares no measurements to report"),
        (f"/infer/tumor_seg?image={IMAGE}&output=report", {"report_format": "docx"}, 422, "params report_format"),
        (f"/infer/tumor_seg?image={IMAGE}&output=report", {"sex": "X"}, 422, "params sex must be F or M"),
        (f"/infer/tumor_seg?image={IMAGE}&output=report", {"uncertainty": True}, 422, "leave params uncertainty"),
        (f"/infer/tumor_seg?image={IMAGE}&output=json", {"study_date": "15/01/2020"}, 422, "params study_date"),
        (f"/infer/banana?image={IMAGE}&output=report", {}, 404, "banana"),
    ],
    ids=["unknown output", "task without a report", "format", "sex", "uncertainty", "study date", "unknown task"],
)
def test_bad_report_requests_get_a_4xx_naming_the_problem(api_trained, url, params, status, says):
    client, _, _ = api_trained
    response = client.post(url, data={"params": json.dumps(params)})
    assert response.status_code == status, response.text
    assert says in response.json()["detail"]
