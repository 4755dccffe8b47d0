"""Issue 20 (Slicer part) against a real mri-label server (a subprocess) with the shipped tumor_seg and hippocampus
checkpoints: what the panel's *Measurements* section shows of a result (MRILabelLib.measurements), with the study
fields sent as params (MRILabelLib.report), and the one-page report the panel opens, asked through MRILabelLib's
client: a PDF whose text holds the numbers of the result's JSON.

tumor_seg: two studies of one subject (the second a copy with the tumor's upper slices filled with the brain's
median), linked by the subject and study dates the panel's fields send: the change since the first is computed.
hippocampus: the MNI152 template itself as a whole head, sent as Slicer sends a volume (uploaded, no info): eTIV
and the volumes per mille of it.
"""

import io
import re

import nibabel as nib
import numpy as np
import pytest
from pypdf import PdfReader

from mri_label.core.templates import template_path
from MRILabelLib import ServerLogic
from MRILabelLib.errors import ServerHTTPError
from MRILabelLib.measurements import measurement_view
from MRILabelLib.report import study_params
from tests.helpers.app import SHIPPED_DIR
from tests.helpers.live_server import running_server

FIRST, FOLLOW_UP, HEAD, CROP = "synth01_flair", "slicer_synth01_followup", "slicer_mni152_head", "synth_hippo01_t1"
#: The panel's study fields of each study, as typed (the first's subject comes from its image info).
FIRST_STUDY = {"study_date": "20200115"}
FOLLOW_UP_STUDY = {"subject": "synth01", "study_date": "2021-07-15", "age": "64", "sex": "F"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, sample_template):
    conf = {"models": "tumor_seg,hippocampus", "shipped_models": str(SHIPPED_DIR)}
    with running_server(tmp_path_factory.mktemp("slicer_report"), sample_template, conf=conf) as live:
        yield live


@pytest.fixture(scope="module")
def logic(server, tmp_path_factory):
    return ServerLogic(server["url"], work_dir=str(tmp_path_factory.mktemp("slicer_report_work")))


def page_text(path) -> str:
    with open(path, "rb") as handle:
        body = handle.read()
    assert body.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(body))
    assert len(reader.pages) == 1
    return " ".join(reader.pages[0].extract_text().split())


@pytest.fixture(scope="module")
def follow_up(logic, server, tmp_path_factory):
    """The first study measured (its study date from the panel's field), the follow-up uploaded and measured: the
    follow-up's result."""
    first = logic.run_task("tumor_seg", FIRST, params=study_params(**FIRST_STUDY))
    mask = np.asarray(nib.load(first.mask_path).dataobj)
    slices = np.nonzero(mask.any(axis=(0, 1)))[0]
    assert slices.size, "the shipped tumor_seg finds the sample tumor"
    scan = nib.load(server["studies"] / f"{FIRST}.nii.gz")
    data = np.asarray(scan.dataobj, dtype=np.float32).copy()
    upper = np.zeros(mask.shape, dtype=bool)
    upper[..., slices[len(slices) // 2] :] = mask[..., slices[len(slices) // 2] :] > 0
    data[upper] = float(np.median(data[data > 0]))
    path = tmp_path_factory.mktemp("follow_up") / "followup.nii.gz"
    nib.save(nib.Nifti1Image(data, scan.affine), path)
    return logic.run_task("tumor_seg", FOLLOW_UP, str(path), params=study_params(**FOLLOW_UP_STUDY))


def test_the_panel_shows_the_tumor_numbers_and_the_change_since_the_first_study(follow_up):
    raw = follow_up.raw
    change = raw["change_over_time"]
    assert change["computed"] and change["previous"] == {
        "image": FIRST,
        "study_date": "2020-01-15",
        "checkpoint": change["previous"]["checkpoint"],
    }
    view = measurement_view(raw, "tumor_seg")
    assert view.reportable and view.kind == "lesions"
    shown = dict((row.label, row.value) for row in view.rows)
    lesions = raw["measurements"]["lesions"]
    assert shown["Tumor volume"] == f"{lesions['volume_ml']:.2f} mL"
    assert shown["Lesions (connected components)"] == str(lesions["components"])
    big = lesions["lesions"][0]
    assert shown["Diameters (largest × perpendicular)"] == (
        f"{big['largest_diameter_mm']:.1f} × {big['perpendicular_diameter_mm']:.1f} mm"
    )
    assert shown["Previous study"] == f"2020-01-15 (image {FIRST})"
    assert shown["This study"] == "2021-07-15, 547 days later (1.50 years)"
    volume = change["changes"]["volume_ml"]
    assert shown["Change of volume"].startswith(f"{volume['previous']:.2f} → {volume['current']:.2f} mL, ")
    assert volume["absolute"] < 0  # the follow-up lost the tumor's upper slices
    assert shown["Checkpoint"] == "the same for both studies"


def test_the_tumor_report_is_a_pdf_holding_the_numbers_of_the_json(logic, follow_up, tmp_path):
    params = study_params(**FOLLOW_UP_STUDY, report=True)
    assert params == {"subject": "synth01", "study_date": "2021-07-15", "age": 64, "sex": "F"}
    path = logic.report("tumor_seg", FOLLOW_UP, params=params, folder=str(tmp_path))
    assert path == str(tmp_path / f"{FOLLOW_UP}-tumor_seg-report.pdf")
    text = page_text(path)
    assert "Research use only: not for clinical decisions" in text
    lesions = follow_up.raw["measurements"]["lesions"]
    big = lesions["lesions"][0]
    assert f"tumor volume: {lesions['volume_ml']:.2f} mL" in text
    assert f"lesions (connected components): {lesions['components']}" in text
    assert f"diameters {big['largest_diameter_mm']:.1f} x {big['perpendicular_diameter_mm']:.1f} mm" in text
    assert f"bidimensional product: {big['product_mm2']:.1f} mm²" in text
    change = follow_up.raw["change_over_time"]
    volume = change["changes"]["volume_ml"]
    assert f"since 2020-01-15 (image {FIRST}), 547 days (1.50 years) before this study of 2021-07-15" in text
    assert f"{volume['previous']:.2f} -> {volume['current']:.2f} mL, {volume['absolute']:+.2f} mL" in text
    assert "age 64 years" in text and "sex F" in text  # the panel's age and sex fields


def test_a_crop_report_holds_the_numbers_of_the_json(logic):
    result = logic.run_task("hippocampus", CROP)
    measured = result.raw["measurements"]
    shown = dict((row.label, row.value) for row in measurement_view(result.raw, "hippocampus").rows)
    assert shown["Total (side not known)"] == f"{measured['total_mm3']:.1f} mm³"
    assert "eTIV (head size)" not in shown and "Left" not in shown  # a crop: neither a head size nor sides
    text = page_text(logic.report("hippocampus", CROP))
    for name, volume in measured["mm3"].items():
        assert shown[name] == f"{volume:.1f} mm³" and f"{name}: {volume:.1f} mm³" in text
    assert f"total: {measured['total_mm3']:.1f} mm³" in text
    assert f"volume check: {measured['volume_check']['status']}" in text
    assert shown["Volume check"].startswith(measured["volume_check"]["status"])


def _page_number(pattern, text):
    found = re.search(pattern, text)
    assert found, (pattern, text)
    return float(found.group(1))


def test_a_whole_head_gives_etiv_in_the_panel_and_on_the_report(logic):
    result = logic.run_task("hippocampus", HEAD, template_path())  # uploaded as the panel uploads a volume
    measured = result.raw["measurements"]
    head = measured["head_size"]
    assert head["etiv_ml"] > 1000  # the template's own intracranial volume (unit-tested within 2 %)
    shown = dict((row.label, row.value) for row in measurement_view(result.raw, "hippocampus").rows)
    fractions = head["per_mille_of_etiv"]
    assert shown["eTIV (head size)"] == f"{head['etiv_ml']:.1f} mL"
    assert shown["Left"] == f"{measured['left']['total_mm3']:.1f} mm³ ({fractions['left']:.2f} ‰ of eTIV)"
    assert shown["Right"] == f"{measured['right']['total_mm3']:.1f} mm³ ({fractions['right']:.2f} ‰ of eTIV)"
    assert shown["Both sides"] == f"{measured['total_mm3']:.1f} mm³ ({fractions['total']:.2f} ‰ of eTIV)"
    assert shown["Change since the previous study"] == "not computed"  # an upload without subject or date

    text = page_text(logic.report("hippocampus", HEAD, params=study_params(age="71", sex="M", report=True)))
    assert "age 71 years" in text and "sex M" in text
    # The page comes from the report's own run of the task: a whole head is registered again, with the same seed
    # (lib/registration.py), so the page holds the panel's numbers as printed (one decimal)
    page = {
        "etiv_ml": _page_number(r"head size \(eTIV\): ([\d.]+) mL", text),
        "left": _page_number(r"total: left ([\d.]+) mm³", text),
        "right": _page_number(r"total: left [\d.]+ mm³, right ([\d.]+) mm³", text),
        "total": _page_number(r"total: left [\d.]+ mm³, right [\d.]+ mm³; both sides ([\d.]+) mm³", text),
        "per_mille_left": _page_number(r"per mille of eTIV: total [\d.]+, left ([\d.]+)", text),
    }
    assert page["etiv_ml"] == pytest.approx(head["etiv_ml"], abs=0.051)
    assert page["left"] == pytest.approx(measured["left"]["total_mm3"], abs=0.051)
    assert page["right"] == pytest.approx(measured["right"]["total_mm3"], abs=0.051)
    assert page["total"] == pytest.approx(measured["total_mm3"], abs=0.051)
    assert page["per_mille_left"] == pytest.approx(page["left"] / page["etiv_ml"], abs=0.006)  # the page's own


def test_a_bad_param_is_refused_before_anything_is_sent_and_the_servers_check_agrees(logic):
    with pytest.raises(ValueError) as caught:
        study_params(study_date="2021-07-32")
    assert str(caught.value) == "study date '2021-07-32' is not a calendar date"
    with pytest.raises(ServerHTTPError) as refused:  # the server refuses the same value
        logic.report("tumor_seg", FIRST, params={"study_date": "2021-07-32"})
    assert refused.value.status == 422 and "not a calendar date" in refused.value.detail
