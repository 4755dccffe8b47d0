"""Issue 20 (Slicer part): the panel's *Measurements* section and *Open report* on the fake Slicer of
``fake_slicer.py``, with the real MRILabelLogic over a fake server.

A hippocampus or tumor_seg run fills the table; the study fields go with the run (subject, study date) and the report
(and age, sex), checked before anything is sent; the report is asked in the worker, saved in the module's work folder
and opened with the system's viewer; another volume clears what belonged to the previous one.
"""

import os
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from fake_slicer import FILES, FakeCombo, FakeSelector, FakeTable, FakeVolumeNode, put

from MRILabelLib import TaskInfo
from MRILabelLib.measurements import NOTHING_MEASURED
from MRILabelLib.report import study_params
from MRILabelLib.results import parse_classification, parse_segmentation

MODULE_DIR = Path(__file__).resolve().parents[3] / "slicer_module" / "MRILabel"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "MRILabel.ui"
PDF = b"%PDF-1.4\n% the page\n%%EOF\n"
HIPPOCAMPUS = {
    "label_names": {"anterior": 1, "posterior": 2},
    "measurements": {
        "mm3": {"anterior": 1601.3, "posterior": 1438.7},
        "total_mm3": 3040.0,
        "left": {"anterior_mm3": 760.0, "posterior_mm3": 690.0, "total_mm3": 1450.0},
        "right": {"anterior_mm3": 841.3, "posterior_mm3": 748.7, "total_mm3": 1590.0},
        "left_mm3": 1450.0,
        "right_mm3": 1590.0,
        "volume_check": {"status": "ok", "range_mm3": [2000.0, 4500.0]},
        "head_size": {"etiv_ml": 1523.4, "per_mille_of_etiv": {"total": 1.9954, "left": 0.9518, "right": 1.0437}},
    },
    "change_over_time": {"computed": False, "reason": "no subject", "text": "not computed: no subject"},
}


class FakeEdit:
    """QLineEdit stand-in: the ``text`` property and ``setText``."""

    def __init__(self, text=""):
        self.text = text

    def setText(self, text):
        self.text = text


class ReportServer:
    """MRILabelLib.ServerLogic stand-in: answers runs with ``answer`` and reports with a PDF written where asked
    (``block``: an Event the report waits for)."""

    def __init__(self, work_dir):
        self.work_dir, self.images, self.calls = str(work_dir), set(), []
        self.answer, self.block = None, None

    def has_image(self, image_id):
        return image_id in self.images

    def ensure_image(self, image_id, image_path=None, progress=None):
        self.calls.append(("ensure_image", image_id, bool(image_path and os.path.isfile(image_path))))
        self.images.add(image_id)
        return image_id

    def task(self, name):
        return TaskInfo(name, "segmentation", {"anterior": 1, "posterior": 2}, "", True)

    def run_task(self, task, image_id, image_path=None, params=None, progress=None, folder=None):
        self.calls.append(("run_task", task, image_id, params))
        return self.answer

    def report(self, task, image_id, image_path=None, params=None, progress=None, folder=None):
        self.calls.append(("report", task, image_id, params))
        if self.block is not None:
            self.block.wait(10)
        path = os.path.join(folder, f"{image_id}-{task}-report.pdf")
        with open(path, "wb") as handle:
            handle.write(PDF)
        return path


def settle(widget):
    if widget.jobs.job is not None:
        assert widget.jobs.job.wait(10)
    widget.onJobTimer()


def _status(widget):
    return widget.ui.statusLabel.setText.calls[-1][0][0]


def _last(label):
    return label.setText.calls[-1][0][0]


class Opened(list):
    """The URLs ``qt.QDesktopServices.openUrl`` was given (``answer``: what it returns, True unless a test says)."""

    answer = True


@pytest.fixture
def opened(module):
    """``qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(path))`` recorded, as ``("file URL", path)``."""
    qt = module.stubs["qt"]
    urls = Opened()
    put(qt.QUrl, "fromLocalFile", lambda path: ("file URL", path))
    put(qt.QDesktopServices, "openUrl", lambda url: urls.append(url) or urls.answer)
    return urls


@pytest.fixture
def panel(module, tmp_path, opened):
    scene = module.stubs["slicer"].mrmlScene
    widget = module.MRILabelWidget()
    server = ReportServer(tmp_path / "server")
    widget.logic.server = server
    volume = scene.add(FakeVolumeNode("head T1", np.zeros((2, 3, 4), np.float32)))
    mask = str(tmp_path / "mask.nii.gz")
    FILES[mask] = (np.ones((2, 3, 4), np.uint8), volume.ijk)
    Path(mask).write_bytes(b"fake")
    server.answer = parse_segmentation(HIPPOCAMPUS, mask, "hippocampus")
    ui = widget.ui
    ui.taskCombo, ui.classCombo = FakeCombo("hippocampus"), FakeCombo("")
    ui.volumeSelector, ui.segmentationSelector = FakeSelector(volume), FakeSelector()
    ui.subjectEdit, ui.studyDateEdit, ui.ageEdit = FakeEdit(" sub-01 "), FakeEdit("20210901"), FakeEdit("71")
    ui.sexCombo = FakeCombo("F")
    ui.sexCombo.items = ["not given", "F", "M"]
    ui.measurementsTable = FakeTable(2)
    widget.server, widget.volume, widget.mask = server, volume, mask
    return widget


def _run(panel):
    panel.onRunTask()
    settle(panel)


def test_a_hippocampus_run_sends_the_study_and_fills_the_measurements(panel):
    _run(panel)
    assert (
        "run_task",
        "hippocampus",
        panel.logic.imageIdForVolume(panel.volume),
        {
            "subject": "sub-01",
            "study_date": "2021-09-01",
        },
    ) in panel.server.calls  # age and sex are for the page only
    texts = panel.ui.measurementsTable.texts()
    assert texts[:3] == [
        ["Left", "1450.0 mm³ (0.95 ‰ of eTIV)"],
        ["Right", "1590.0 mm³ (1.04 ‰ of eTIV)"],
        ["Both sides", "3040.0 mm³ (2.00 ‰ of eTIV)"],
    ]
    assert ["eTIV (head size)", "1523.4 mL"] in texts and texts[-1] == [
        "Change since the previous study",
        "not computed",
    ]
    assert _last(panel.ui.measurementsTitleLabel) == "hippocampus on head T1"
    assert _last(panel.ui.measurementsNotesLabel) == "Change over time not computed: no subject."
    assert panel.ui.reportButton.enabled is True


def test_the_report_is_asked_in_the_worker_saved_in_the_work_folder_and_opened(panel, opened):
    _run(panel)
    panel.onReport()
    assert panel.ui.reportButton.enabled is False and panel.ui.runButton.enabled is False  # one action at a time
    settle(panel)
    image_id = panel.logic.imageIdForVolume(panel.volume)
    report = {"subject": "sub-01", "study_date": "2021-09-01", "age": 71, "sex": "F"}
    assert panel.server.calls[-1] == ("report", "hippocampus", image_id, report)
    ((kind, path),) = opened
    assert kind == "file URL" and Path(path).read_bytes() == PDF
    work = panel.logic.temporaryFolder()
    assert Path(path).parent.parent == Path(work)  # a folder of its own in the module's work folder
    assert os.listdir(work) == [Path(path).parent.name]  # the action's upload folder is gone
    assert _status(panel) == f"The report is open in the system's PDF viewer ({path}; removed when the scene closes)."
    assert panel.ui.reportButton.enabled is True
    panel.onSceneStartClose(None, None)  # closing the scene empties the work folder and the section
    assert not os.path.exists(path) and panel.ui.measurementsTable.texts() == []
    assert panel.ui.reportButton.enabled is False


def test_without_a_pdf_viewer_the_status_says_where_the_file_is(panel, opened):
    opened.answer = False
    _run(panel)
    panel.onReport()
    settle(panel)
    ((_, path),) = opened
    assert os.path.isfile(path)
    assert _status(panel) == (
        f"The report was saved as {path}, but no PDF viewer opened it; open that file yourself (it is removed when "
        "the scene closes)."
    )


def test_a_cancelled_report_leaves_no_folder_and_opens_nothing(panel, opened):
    _run(panel)
    panel.server.block = threading.Event()
    panel.onReport()
    job = panel.jobs.job
    panel.onCancel()
    assert _status(panel) == "Asking hippocampus for its report was cancelled."
    assert os.listdir(panel.logic.temporaryFolder()) == []
    panel.server.block.set()
    job.wait(10)
    panel.onJobTimer()
    assert opened == []


@pytest.mark.parametrize(
    "field, value, sentence",
    [
        ("ageEdit", "200", "age must lie between 0 and 120 years, got 200."),
        ("studyDateEdit", "1.9.2021", "study date must be a date as YYYY-MM-DD (or YYYYMMDD), got '1.9.2021'."),
    ],
)
def test_a_bad_study_field_is_one_sentence_and_nothing_is_sent(module, panel, field, value, sentence):
    _run(panel)
    sent = len(panel.server.calls)
    getattr(panel.ui, field).text = value
    panel.onReport()
    assert panel.jobs.job is None and len(panel.server.calls) == sent
    assert _status(panel) == sentence
    assert module.stubs["slicer"].util.errorDisplay.calls[-1] == ((sentence,), {"windowTitle": "MRI Label"})
    assert os.listdir(panel.logic.temporaryFolder()) == []


def test_a_bad_study_date_stops_the_run_before_anything_is_sent(panel):
    panel.ui.studyDateEdit.text = "2021-13-01"
    panel.onRunTask()
    assert panel.jobs.job is None and panel.server.calls == []
    assert _status(panel) == "study date '2021-13-01' is not a calendar date."


def test_another_volume_clears_the_measurements_and_the_study_fields(module, panel):
    _run(panel)
    panel.onVolumeChanged(panel.volume)  # the measured one again: nothing changes
    assert panel.ui.measurementsTable.texts() and panel.ui.subjectEdit.text == " sub-01 "
    other = module.stubs["slicer"].mrmlScene.add(FakeVolumeNode("another patient"))
    panel.onVolumeChanged(other)
    assert panel.ui.measurementsTable.texts() == [] and _last(panel.ui.measurementsTitleLabel) == NOTHING_MEASURED
    assert [panel.ui.subjectEdit.text, panel.ui.studyDateEdit.text, panel.ui.ageEdit.text] == ["", "", ""]
    assert panel.ui.sexCombo.currentText == "not given"
    assert panel.ui.reportButton.enabled is False
    panel.onReport()  # a click that reached the panel anyway: one sentence, nothing sent
    assert _status(panel).startswith("Run hippocampus or tumor_seg on a volume first")


def test_a_classifier_clears_the_section_and_the_pipeline_offers_no_report(panel):
    panel.server.answer = parse_classification({"label": "T2", "probabilities": {"T1": 0.25, "T2": 0.75}}, "sequence")
    _run(panel)
    assert panel.ui.measurementsTable.texts() == [] and panel.ui.reportButton.enabled is False
    lesions = {"volume_ml": 1.5, "components": 1, "lesions": []}
    pipeline = dict(HIPPOCAMPUS, measurements={"mm3": {"tumor": 1500.0}, "total_mm3": 1500.0, "lesions": lesions})
    del pipeline["change_over_time"]
    panel.server.answer = parse_segmentation(pipeline, panel.mask, "tumor_pipeline")
    panel.ui.taskCombo.currentText = "tumor_pipeline"
    _run(panel)
    assert panel.ui.measurementsTable.texts()[0] == ["Tumor volume", "1.50 mL"]
    assert (
        _last(panel.ui.measurementsTitleLabel) == "tumor_pipeline on head T1 (tumor_pipeline makes no one-page report)"
    )
    assert panel.ui.reportButton.enabled is False


def test_the_report_of_a_removed_volume_is_a_sentence(module, panel):
    _run(panel)
    module.stubs["slicer"].mrmlScene.RemoveNode(panel.volume)
    panel.onReport()
    assert panel.jobs.job is None
    assert _status(panel) == "The measured volume was removed from the scene; select a volume and run the task again."


def test_a_flagged_row_is_marked(panel):
    flagged = dict(HIPPOCAMPUS["measurements"], volume_check={"status": "check the segmentation", "reason": "left"})
    panel.server.answer = parse_segmentation(dict(HIPPOCAMPUS, measurements=flagged), panel.mask, "hippocampus")
    _run(panel)
    assert ["Volume check", "⚠ check the segmentation"] in panel.ui.measurementsTable.texts()


# --- the .ui ----------------------------------------------------------------------------------------------------------


def test_the_ui_has_the_measurements_section_and_the_study_fields():
    widgets = {w.get("name"): w for w in ET.parse(UI_FILE).getroot().iter("widget")}
    assert widgets["measurementsCollapsibleButton"].get("class") == "ctkCollapsibleButton"
    table = widgets["measurementsTable"]
    assert [c.findtext("property/string") for c in table.findall("column")] == ["Measure", "Value"]
    for name in ("subjectEdit", "studyDateEdit", "ageEdit"):
        assert widgets[name].get("class") == "QLineEdit"
    items = [i.findtext("property/string") for i in widgets["sexCombo"].findall("item")]
    assert items == ["not given", "F", "M"]  # "not given" first: the default, and what clearing selects
    assert [study_params(sex=item, report=True).get("sex") for item in items] == [None, "F", "M"]
    assert widgets["reportButton"].get("class") == "QPushButton"
    assert "measurementsLabel" not in widgets  # the one-line text gave way to the section
