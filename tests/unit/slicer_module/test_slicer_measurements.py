"""Issue 20 (Slicer part): the *Measurements* rows of hippocampus and tumor_seg results, the study fields as params,
and the report request of the plain client.

The results are shaped as the server answers them (``apps/mri_app/lib/infers/hippocampus.py`` ``measure`` and
``head_size``, ``apps/mri_app/lib/lesion_measures.py``); their ``change_over_time`` is made by the server's own
functions (:mod:`mri_label.core.change`), so a change in its shape fails here.
"""

import json
from http.server import BaseHTTPRequestHandler

import pytest

from mri_label.core.change import change_since, measured_record, not_computed
from MRILabelLib import plain_sentence
from MRILabelLib.client import ServerClient
from MRILabelLib.errors import ServerHTTPError, UnexpectedAnswerError
from MRILabelLib.logic import ServerLogic
from MRILabelLib.measurements import NOTHING_MEASURED, MeasurementRow, change_value, measurement_view
from MRILabelLib.report import study_params
from tests.helpers.loopback import LoopbackServer

CHECKPOINT = {"name": "shipped/hippocampus/model.pt", "modified": "2026-01-05T10:00:00", "mtime": 1767607200.0}
RETRAINED = {"name": "model/hippocampus/model.pt", "modified": "2026-03-01T09:00:00", "mtime": 1772355600.0}

WHOLE_HEAD = {
    "mm3": {"anterior": 1601.3, "posterior": 1438.7},
    "total_mm3": 3040.0,
    "voxel_mm3": 1.0,
    "left": {"anterior_mm3": 760.0, "posterior_mm3": 690.0, "total_mm3": 1450.0},
    "right": {"anterior_mm3": 841.3, "posterior_mm3": 748.7, "total_mm3": 1590.0},
    "left_mm3": 1450.0,
    "right_mm3": 1590.0,
    "volume_check": {"range_mm3": [2000.0, 4500.0], "range_from": "training labels", "status": "ok"},
    "head_size": {
        "etiv_ml": 1523.4,
        "template_icv_ml": 1498.2,
        "method": "MNI152 template intracranial volume x |det| of the affine registration (FreeSurfer-style eTIV)",
        "per_mille_of_etiv": {"total": 1.9954, "left": 0.9518, "right": 1.0437},
    },
}
BOXES_NOTE = "not computed: boxes were given, so no registration to the template ran"
CROP = {
    "mm3": {"anterior": 1712.0, "posterior": 1531.0},
    "total_mm3": 3243.0,
    "voxel_mm3": 1.0,
    "volume_check": {
        "range_mm3": [2000.0, 3000.0],
        "range_from": "training labels",
        "status": "check the segmentation",
        "reason": "hippocampus 3243.0 mm³ is outside 2000-3000 mm³",
    },
}
LARGEST = {
    "volume_ml": 11.9,
    "slices": [10, 18],
    "slice": 14,
    "largest_diameter_mm": 34.2,
    "perpendicular_diameter_mm": 27.5,
    "product_mm2": 940.5,
    "measurable": True,
}
SMALL = {
    "volume_ml": 0.4456,
    "slices": [3, 4],
    "slice": 3,
    "largest_diameter_mm": 8.1,
    "perpendicular_diameter_mm": 5.0,
    "product_mm2": 40.5,
    "measurable": False,
}
TUMOR = {
    "mm3": {"tumor": 12345.6},
    "total_mm3": 12345.6,
    "left_mm3": 6000.0,  # the field of view's halves: not what a clinician reads of a tumor, so not shown
    "right_mm3": 6345.6,
    "lesions": {
        "volume_ml": 12.3456,
        "components": 2,
        "lesions": [LARGEST, SMALL],
        "sum_of_products_mm2": 940.5,
        "method": "diameters between voxel centres on the axial slice with the largest product",
    },
}


def computed_change(measures, before, after, checkpoints=(CHECKPOINT, CHECKPOINT)):
    """The server's change over time from ``before`` (2020-03-01, image sub-01_2020) to ``after`` (2021-09-01)."""
    previous = measured_record(measures, before, checkpoints[0], "sub-01", "2020-03-01")
    current = measured_record(measures, after, checkpoints[1], "sub-01", "2021-09-01")
    return change_since(current, "sub-01_2020", previous)


def rows(view):
    return [(row.label, row.value) for row in view.rows]


# --- hippocampus ------------------------------------------------------------------------------------------------------


def test_whole_head_with_etiv_and_a_computed_change():
    earlier = dict(WHOLE_HEAD, total_mm3=3100.0, left_mm3=1480.0, right_mm3=1620.0)
    change = computed_change("volumes", earlier, WHOLE_HEAD)
    view = measurement_view({"measurements": WHOLE_HEAD, "change_over_time": change}, "hippocampus")
    assert view.task == "hippocampus" and view.kind == "volumes" and view.reportable
    assert rows(view) == [
        ("Left", "1450.0 mm³ (0.95 ‰ of eTIV)"),
        ("Right", "1590.0 mm³ (1.04 ‰ of eTIV)"),
        ("Both sides", "3040.0 mm³ (2.00 ‰ of eTIV)"),
        ("anterior", "1601.3 mm³ (left 760.0 mm³, right 841.3 mm³)"),
        ("posterior", "1438.7 mm³ (left 690.0 mm³, right 748.7 mm³)"),
        ("eTIV (head size)", "1523.4 mL"),
        ("Volume check", "ok (training labels 2000-4500 mm³ per hippocampus)"),
        ("Previous study", "2020-03-01 (image sub-01_2020)"),
        ("This study", "2021-09-01, 549 days later (1.50 years)"),
        ("Change of total volume", "3100.0 → 3040.0 mm³, -60.0 mm³ (-1.94 %); per year -39.9 mm³ (-1.29 %)"),
        ("Change of left side", "1480.0 → 1450.0 mm³, -30.0 mm³ (-2.03 %); per year -20.0 mm³ (-1.35 %)"),
        ("Change of right side", "1620.0 → 1590.0 mm³, -30.0 mm³ (-1.85 %); per year -20.0 mm³ (-1.23 %)"),
        ("Checkpoint", "the same for both studies"),
    ]
    assert not any(row.flagged for row in view.rows) and view.notes == []
    # the numbers are the server's, as it rounded them
    assert change["changes"]["total_mm3"]["absolute_per_year"] == -39.9


def test_whole_head_without_etiv_says_why():
    measured = dict(WHOLE_HEAD, head_size={"etiv_ml": None, "note": BOXES_NOTE})
    view = measurement_view({"measurements": measured, "change_over_time": not_computed("no subject")})
    assert rows(view)[:3] == [("Left", "1450.0 mm³"), ("Right", "1590.0 mm³"), ("Both sides", "3040.0 mm³")]
    assert ("eTIV (head size)", "not computed") in rows(view)
    assert view.notes[0] == "Head size (eTIV) not computed: boxes were given, so no registration to the template ran."


def test_a_crop_has_no_sides_and_no_etiv_and_a_flagged_volume_check():
    reason = "no subject is recorded for this image (image info subject, or params subject)"
    view = measurement_view({"measurements": CROP, "change_over_time": not_computed(reason)}, "hippocampus")
    assert rows(view) == [
        ("Total (side not known)", "3243.0 mm³"),
        ("anterior", "1712.0 mm³"),
        ("posterior", "1531.0 mm³"),
        ("Volume check", "check the segmentation (training labels 2000-3000 mm³ per hippocampus)"),
        ("Change since the previous study", "not computed"),
    ]
    assert [row.flagged for row in view.rows] == [False, False, False, True, False]
    assert view.notes == [
        "Volume check: hippocampus 3243.0 mm³ is outside 2000-3000 mm³.",
        f"Change over time not computed: {reason}.",
    ]
    assert view.reportable


def test_a_change_measured_by_another_checkpoint_is_flagged():
    change = computed_change("volumes", WHOLE_HEAD, WHOLE_HEAD, (CHECKPOINT, RETRAINED))
    view = measurement_view({"measurements": WHOLE_HEAD, "change_over_time": change})
    assert MeasurementRow("Checkpoint", "another one measured the previous study", True) in view.rows
    assert view.notes[0].startswith("Change over time: the previous result was measured by another checkpoint")
    assert "part of the change may be the model's" in view.notes[0]


# --- tumor ------------------------------------------------------------------------------------------------------------


def test_tumor_lesions_with_a_computed_change():
    earlier = {"total_mm3": 15000.0, "lesions": dict(TUMOR["lesions"], volume_ml=15.0, sum_of_products_mm2=1100.0)}
    change = computed_change("lesions", earlier, TUMOR)
    view = measurement_view({"task": "tumor_seg", "measurements": TUMOR, "change_over_time": change})
    assert view.task == "tumor_seg" and view.kind == "lesions" and view.reportable
    assert rows(view) == [
        ("Tumor volume", "12.35 mL"),
        ("Lesions (connected components)", "2"),
        ("Largest lesion", "11.90 mL on slice 14 (spans slices 10-18)"),
        ("Diameters (largest × perpendicular)", "34.2 × 27.5 mm"),
        ("Bidimensional product", "940.5 mm² (measurable)"),
        ("Sum of products (measurable lesions)", "940.5 mm²"),
        ("Previous study", "2020-03-01 (image sub-01_2020)"),
        ("This study", "2021-09-01, 549 days later (1.50 years)"),
        ("Change of volume", "15.00 → 12.35 mL, -2.65 mL (-17.70 %)"),
        ("Change of sum of products", "1100.0 → 940.5 mm², -159.5 mm² (-14.50 %)"),
        ("Checkpoint", "the same for both studies"),
    ]
    assert view.notes == []


def test_tumor_with_nothing_segmented_and_a_change_not_computed():
    measured = {
        "mm3": {"tumor": 0.0},
        "total_mm3": 0.0,
        "lesions": {"volume_ml": 0.0, "components": 0, "lesions": [], "sum_of_products_mm2": 0.0},
    }
    reason = "no earlier study of subject 'sub-01' with a stored result of this task: 1 on 2021-09-01 or later"
    view = measurement_view({"measurements": measured, "change_over_time": not_computed(reason)}, "tumor_seg")
    assert rows(view) == [
        ("Tumor volume", "0.00 mL"),
        ("Lesions (connected components)", "0"),
        ("Largest lesion", "none (nothing segmented)"),
        ("Change since the previous study", "not computed"),
    ]
    assert view.notes == [f"Change over time not computed: {reason}."]


def test_a_small_lesion_is_not_measurable_and_a_2d_slice_gives_areas():
    measured = {
        "mm2": {"tumor": 412.0},
        "total_mm2": 412.0,
        "lesions": {"volume_ml": 0.412, "components": 1, "lesions": [dict(SMALL, volume_ml=0.412)]},
    }
    view = measurement_view({"measurements": measured, "change_over_time": not_computed("no subject")})
    assert rows(view)[:5] == [
        ("Tumor area", "412.0 mm²"),
        ("Lesions (connected components)", "1"),
        ("Largest lesion", "412.0 mm²"),
        ("Diameters (largest × perpendicular)", "8.1 × 5.0 mm"),
        ("Bidimensional product", "40.5 mm² (not measurable: a diameter under 10 mm)"),
    ]
    assert view.notes[0] == "A single 2D slice: an area, no volume."


def test_results_without_measurements_show_nothing_and_the_pipeline_makes_no_report():
    assert measurement_view({"label": "T2", "probabilities": {"T1": 0.25, "T2": 0.75}}) is None
    assert measurement_view(None) is None and measurement_view({"measurements": {}}) is None
    pipeline = measurement_view({"measurements": TUMOR}, "tumor_pipeline")
    assert pipeline.kind == "lesions" and not pipeline.reportable
    assert not [row for row in pipeline.rows if row.label.startswith("Change")]
    assert NOTHING_MEASURED.startswith("Run hippocampus or tumor_seg")


def test_missing_numbers_read_na_and_nothing_is_made_up():
    view = measurement_view({"measurements": {"mm3": {"anterior": None}, "left": {}, "right": {"total_mm3": "x"}}})
    assert rows(view) == [
        ("Left", "n/a"),
        ("Right", "n/a"),
        ("Both sides", "n/a"),
        ("anterior", "n/a (left n/a, right n/a)"),
    ]
    assert change_value("volume_ml", {"previous": 1.0, "current": 1.5, "absolute": 0.5, "percent": None}) == (
        "1.00 → 1.50 mL, +0.50 mL (percent: previous 0)"
    )


def test_text_lists_rows_and_notes():
    view = measurement_view({"measurements": CROP})
    assert view.text().splitlines()[0] == "Total (side not known): 3243.0 mm³"
    assert view.text().splitlines()[-1] == "Volume check: hippocampus 3243.0 mm³ is outside 2000-3000 mm³."


# --- the study fields -------------------------------------------------------------------------------------------------


def test_study_params_send_what_was_typed_and_only_for_a_report_age_and_sex():
    fields = {"subject": " sub-01 ", "study_date": "20210901", "age": "71", "sex": "f"}
    assert study_params(**fields) == {"subject": "sub-01", "study_date": "2021-09-01"}
    assert study_params(**fields, report=True) == {
        "subject": "sub-01",
        "study_date": "2021-09-01",
        "age": 71,
        "sex": "F",
    }
    assert study_params(age="70,5", sex="not given", report=True) == {"age": 70.5}
    assert study_params(subject="", study_date="  ", age="", sex="", report=True) == {}
    assert study_params(age="banana", sex="X") == {}  # a run neither sends nor checks them


@pytest.mark.parametrize(
    "fields, sentence",
    [
        ({"study_date": "15.07.2021"}, "study date must be a date as YYYY-MM-DD (or YYYYMMDD), got '15.07.2021'."),
        ({"study_date": "2021-02-30"}, "study date '2021-02-30' is not a calendar date."),
        ({"study_date": "1899-12-31"}, "study date '1899-12-31' lies before 1900."),
        ({"subject": "sub\t01"}, "subject must be 1-128 characters without tabs or line breaks, got 'sub\\t01'."),
        ({"subject": "x" * 129}, "subject must be 1-128 characters without tabs or line breaks"),
        ({"age": "seventy", "report": True}, "age must be a number of years, got 'seventy'."),
        ({"age": "121", "report": True}, "age must lie between 0 and 120 years, got 121."),
        ({"age": "nan", "report": True}, "age must lie between 0 and 120 years, got nan."),
        ({"sex": "X", "report": True}, "sex must be F or M (or not given), got 'X'."),
    ],
)
def test_bad_study_fields_are_one_sentence(fields, sentence):
    with pytest.raises(ValueError) as caught:
        study_params(**fields)
    assert plain_sentence(caught.value).startswith(sentence)


# --- the report request ----------------------------------------------------------------------------------------------

PDF = b"%PDF-1.4\n% a one-page report\n%%EOF\n"


class ReportListener:
    """A loopback server answering every POST with ``(status, headers, body)``; records path and body."""

    def __init__(self, status, headers, body):
        self.requests = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                listener.requests.append((self.path, self.headers.get("Content-Type"), self.rfile.read(length)))
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = LoopbackServer(Handler).start()
        self.url = self.server.url

    def close(self):
        self.server.close()


@pytest.fixture
def listener(request):
    running = ReportListener(*request.param)
    yield running
    running.close()


def _form_params(content_type, body):
    from MRILabelLib import multipart

    return json.loads(multipart.decode(body, content_type)["params"].data)


PDF_ANSWER = (
    200,
    {"Content-Type": "application/pdf", "Content-Disposition": 'inline; filename="img 1-tumor_seg-report.pdf"'},
    PDF,
)


@pytest.mark.parametrize("listener", [PDF_ANSWER], indirect=True)
def test_the_report_is_asked_as_output_report_and_saved_under_the_servers_name(listener, tmp_path):
    client = ServerClient(listener.url, retries=0)
    path = client.report("tumor_seg", "img 1", {"subject": "sub-01", "age": 64}, folder=str(tmp_path))
    assert path == str(tmp_path / "img_1-tumor_seg-report.pdf")  # the name's space made safe
    assert (tmp_path / "img_1-tumor_seg-report.pdf").read_bytes() == PDF
    ((where, content_type, body),) = listener.requests
    assert where == "/infer/tumor_seg?image=img+1&output=report"
    assert _form_params(content_type, body) == {"subject": "sub-01", "age": 64, "report_format": "pdf"}


@pytest.mark.parametrize("listener", [(200, {"Content-Type": "application/pdf"}, PDF)], indirect=True)
def test_without_a_file_name_the_report_is_named_after_image_and_task(listener, tmp_path):
    path = ServerClient(listener.url, retries=0).report("hippocampus", "slicer_0123", folder=str(tmp_path))
    assert path == str(tmp_path / "slicer_0123-hippocampus-report.pdf")


@pytest.mark.parametrize("listener", [(200, {"Content-Type": "application/json"}, b'{"label": "T2"}')], indirect=True)
def test_an_answer_that_is_no_pdf_is_refused_and_nothing_is_saved(listener, tmp_path):
    with pytest.raises(UnexpectedAnswerError) as caught:
        ServerClient(listener.url, retries=0).report("tumor_seg", "img", folder=str(tmp_path))
    assert "the report of tumor_seg is not a PDF (content type 'application/json'" in plain_sentence(caught.value)
    assert list(tmp_path.iterdir()) == []


REFUSED = json.dumps(
    {"detail": "output=report: sequence declares no measurements to report; tasks with a report: hippocampus"}
).encode()


@pytest.mark.parametrize("listener", [(422, {"Content-Type": "application/json"}, REFUSED)], indirect=True)
def test_a_task_without_a_report_gets_the_servers_sentence(listener, tmp_path):
    logic = ServerLogic(client=ServerClient(listener.url, retries=0), work_dir=str(tmp_path))
    logic.ensure_image = lambda image_id, image_path=None, progress=None: image_id
    with pytest.raises(ServerHTTPError) as caught:
        logic.report("sequence", "img")
    assert plain_sentence(caught.value) == (
        "The server refused the request: output=report: sequence declares no measurements to report; tasks with a "
        "report: hippocampus."
    )


@pytest.mark.parametrize("listener", [PDF_ANSWER], indirect=True)
def test_the_logic_uploads_first_reports_progress_and_saves_into_its_work_folder(listener, tmp_path):
    logic = ServerLogic(client=ServerClient(listener.url, retries=0), work_dir=str(tmp_path))
    ensured, messages = [], []
    logic.ensure_image = lambda image_id, image_path=None, progress=None: ensured.append((image_id, image_path))
    path = logic.report(
        "tumor_seg", "img 1", "/tmp/img.nii.gz", {"age": 64}, lambda m, f=None, d=None: messages.append(m)
    )
    assert ensured == [("img 1", "/tmp/img.nii.gz")] and messages == ["Asking tumor_seg for its report on img 1"]
    assert path == str(tmp_path / "img_1-tumor_seg-report.pdf")
    with pytest.raises(ValueError):
        logic.report("", "img 1")
