"""The Slicer module file imports with stub ``slicer``/``qt``/``vtk``/``ctk`` modules, its widget calls only
the logic layer, and the plain package imports nothing from Slicer. (No Slicer is needed to run these.)"""

import ast
import re
import unittest
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fake_slicer import FakeCombo, FakeNode, FakeSelector, FakeTable

from MRILabelLib import NO_CAM_SENTENCE, TaskInfo, TrainingRun, plain_sentence
from MRILabelLib.errors import ServerHTTPError
from MRILabelLib.jobs import Plan, run_plan
from MRILabelLib.progress import TrainingProgress
from MRILabelLib.results import parse_classification, parse_segmentation

MODULE_DIR = Path(__file__).resolve().parents[3] / "slicer_module" / "MRILabel"

SLICER_NAMES = {"slicer", "vtk", "qt", "ctk"}
HTTP_NAMES = {"urllib", "http", "json", "requests", "socket", "MRILabelLib.client", "MRILabelLib.multipart"}


def settle(widget):
    """Let the running job (if any) end, then deliver it as the panel's timer would."""
    if widget.jobs.job is not None:
        assert widget.jobs.job.wait(10)
    widget.onJobTimer()


class FakeLogic:
    """Records every call the widget makes and answers with canned values (as plans, like the real logic: the
    server part runs in the worker, the rest on the GUI thread)."""

    def __init__(self, fail=None):
        self.calls, self.fail = [], fail
        self.volume = FakeNode("head")

    def _record(self, name, *args):
        self.calls.append((name, args))
        if self.fail and name == self.fail[0]:
            raise self.fail[1]

    @staticmethod
    def _plan(title, answer):
        return Plan(title, lambda progress: answer)

    def connect(self, url, max_mb, username, password):
        self._record("connect", url, max_mb, username, password)
        return self._plan(
            "Connecting",
            [
                TaskInfo("sequence", "classification", {"T1": 0, "T2": 1}, "", True),
                TaskInfo("tumor_pipeline", "segmentation", {"tumor": 1}, "", False),
            ],
        )

    def strategies(self):
        self._record("strategies")
        return ["first", "random"]

    def runTask(self, task, volume, study=None):
        self._record("runTask", task, volume, study)
        if task == "sequence":
            answer = parse_classification({"label": "T2", "probabilities": {"T1": 0.25, "T2": 0.75}}), None
        else:
            answer = (
                parse_segmentation(
                    {"label_names": {"tumor": 1}, "measurements": {"mm3": {"tumor": 6.0}, "total_mm3": 6.0}}, "m", task
                ),
                FakeNode("seg"),
            )
        return self._plan(f"Running {task}", answer)

    def classesOf(self, task):
        self._record("classesOf", task)
        return ["T1", "T2"]

    def loadClassActivationMap(self, task, volume):
        self._record("loadClassActivationMap", task, volume)
        return self._plan("CAM", (None, NO_CAM_SENTENCE))

    def submitClass(self, task, volume, label):
        self._record("submitClass", task, volume, label)
        return self._plan("Class", {"label": label})

    def submitSegmentation(self, task, segmentation):
        self._record("submitSegmentation", task, segmentation)
        return self._plan("Segmentation", {"label": "x"})

    def startTraining(self, task, epochs):
        self._record("startTraining", task, epochs)
        return self._plan("Training", TrainingRun(task, "run-1"))

    def trainingProgress(self, run):
        self._record("trainingProgress", run)
        return self._plan("Progress", TrainingProgress(run.task, run.run_id, "DONE", 1, 1, 5, 5, 0.3, None, 1.0))

    def trainingFailure(self, state):
        return RuntimeError(state.status)

    def nextSample(self, strategy):
        self._record("nextSample", strategy)
        return self._plan("Next sample", FakeNode("synth01_t1"))

    def overlayNodeIDs(self):
        return []

    def cleanTemporaryFiles(self, removeFolder=False):
        pass

    def describeError(self, error):
        return plain_sentence(error)


def _imports(path: Path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(("." * node.level) + (node.module or ""))
    return names


def test_module_file_has_the_wizard_classes(module):
    for name in ("MRILabel", "MRILabelWidget", "MRILabelLogic", "MRILabelTest"):
        assert hasattr(module, name)
    assert issubclass(module.MRILabelTest, unittest.TestCase)
    parent = SimpleNamespace()
    module.MRILabel(parent)
    assert parent.title == "MRI Label" and "Research use only" in parent.helpText


def test_module_file_does_no_http_itself():
    imported = _imports(MODULE_DIR / "MRILabel.py")
    assert not {n for n in imported if n.split(".")[0] in HTTP_NAMES or n in HTTP_NAMES}, imported


@pytest.mark.parametrize("path", sorted((MODULE_DIR / "MRILabelLib").glob("*.py")), ids=lambda p: p.name)
def test_plain_package_imports_nothing_from_slicer(path):
    imported = {n.split(".")[0] for n in _imports(path)}
    assert not imported & SLICER_NAMES


def test_buttons_are_wired_to_their_handlers(module):
    widget = module.MRILabelWidget()  # parentless: setup() runs inside __init__, as in Slicer
    wiring = {
        "connectButton": widget.onConnect,
        "runButton": widget.onRunTask,
        "camButton": widget.onShowCam,
        "uncertaintyButton": widget.onShowUncertainty,
        "submitClassButton": widget.onSubmitClass,
        "submitSegmentationButton": widget.onSubmitSegmentation,
        "trainButton": widget.onStartTraining,
        "nextSampleButton": widget.onNextSample,
        "refreshHistoryButton": widget.onRefreshHistory,
        "rollbackButton": widget.onRollBack,
        "refreshReviewsButton": widget.onRefreshReviews,
        "loadReviewButton": widget.onLoadForReview,
        "approveButton": widget.onApprove,
        "needsChangesButton": widget.onNeedsChanges,
        "reportButton": widget.onReport,
        "cancelButton": widget.onCancel,
    }
    for attribute, handler in wiring.items():
        assert getattr(widget.ui, attribute).clicked.connect.calls == [((handler,), {})], attribute
    slice_list = widget.ui.uncertaintyList
    for signal in (slice_list.itemClicked, slice_list.itemActivated):  # a click or Enter on a listed slice
        assert signal.connect.calls == [((widget.onUncertainSliceClicked,), {})]
    assert widget.ui.taskCombo.currentTextChanged.connect.calls == [((widget.onTaskChanged,), {})]
    assert widget.ui.volumeSelector.currentNodeChanged.connect.calls == [((widget.onVolumeChanged,), {})]
    assert widget.ui.historyTaskCombo.currentTextChanged.connect.calls == [((widget.onHistoryTaskChanged,), {})]
    assert widget.ui.reviewStatusCombo.currentTextChanged.connect.calls == [((widget.onReviewStatusChanged,), {})]
    assert widget.trainingTimer.timeout.connect.calls == [((widget.onTrainingTimer,), {})]
    assert widget.jobTimer.timeout.connect.calls == [((widget.onJobTimer,), {})]
    assert isinstance(widget.logic, module.MRILabelLogic)


@pytest.fixture
def widget(module):
    widget = module.MRILabelWidget()
    widget.logic = FakeLogic()
    ui = widget.ui
    ui.serverUrlEdit = SimpleNamespace(text=" http://127.0.0.1:8000 ")
    ui.usernameEdit, ui.passwordEdit = SimpleNamespace(text=" ann.annotator "), SimpleNamespace(text=" pw ")
    ui.maxUploadSpin = SimpleNamespace(value=256.0)
    ui.taskCombo, ui.trainTaskCombo = FakeCombo("sequence"), FakeCombo("tumor_gate")
    ui.classCombo, ui.strategyCombo = FakeCombo("T1"), FakeCombo("random")
    ui.epochsSpin = SimpleNamespace(value=3)
    ui.volumeSelector = FakeSelector(widget.logic.volume)
    widget.segmentationNode = FakeNode("seg")
    ui.segmentationSelector = FakeSelector(widget.segmentationNode)
    ui.subjectEdit, ui.studyDateEdit = SimpleNamespace(text=" sub-01 "), SimpleNamespace(text="2021-07-15")
    ui.ageEdit, ui.sexCombo = SimpleNamespace(text=""), FakeCombo("not given")
    ui.measurementsTable = FakeTable(2)
    return widget


#: The study fields of the widget fixture, as the logic gets them (the logic checks them).
STUDY = {"subject": " sub-01 ", "study_date": "2021-07-15", "age": "", "sex": "not given"}


def _status(widget):
    return widget.ui.statusLabel.setText.calls[-1][0][0]


def test_handlers_call_only_logic_methods(widget):
    volume = widget.logic.volume
    for handler in (widget.onConnect, widget.onRunTask, widget.onShowCam):
        handler()
        settle(widget)
    widget.ui.classCombo.currentText = "T1"
    for handler in (widget.onSubmitClass, widget.onSubmitSegmentation, widget.onStartTraining):
        handler()
        settle(widget)
    widget.onTrainingTimer()  # asks for the progress in the worker ...
    assert widget.trainingJobs.job.wait(10)
    widget.onTrainingTimer()  # ... and shows it at the next tick
    widget.onNextSample()
    settle(widget)
    assert widget.logic.calls == [
        ("connect", ("http://127.0.0.1:8000", 256.0, "ann.annotator", " pw ")),  # a password is sent as typed
        ("strategies", ()),
        ("runTask", ("sequence", volume, STUDY)),
        ("classesOf", ("sequence",)),
        ("loadClassActivationMap", ("sequence", volume)),
        ("submitClass", ("sequence", volume, "T1")),
        # issue 18 row 1: the segmentation carries its own image and reference volume, the volume selector is unused
        ("submitSegmentation", ("sequence", widget.segmentationNode)),
        ("startTraining", ("tumor_gate", 3)),
        ("trainingProgress", (TrainingRun("tumor_gate", "run-1"),)),
        ("nextSample", ("random",)),
    ]


def test_results_reach_the_table_and_labels(widget):
    widget.onConnect()
    settle(widget)
    ui = widget.ui
    assert ui.taskCombo.items == ["sequence", "tumor_pipeline"] and ui.trainTaskCombo.items == ["sequence"]
    assert ui.strategyCombo.items == ["first", "random"]
    widget.onRunTask()
    settle(widget)
    assert ui.resultTable.setRowCount.calls == [((2,), {})]
    assert ui.resultSummaryLabel.setText.calls[-1][0][0] == "Predicted class: T2"
    assert ui.classCombo.currentText == "T2"  # the prediction is preselected for correction
    ui.taskCombo.currentText = "tumor_pipeline"
    widget.onRunTask()
    settle(widget)
    assert ui.measurementsTable.texts() == [["Total (side not known)", "6.0 mm³"], ["tumor", "6.0 mm³"]]
    assert ui.measurementsTitleLabel.setText.calls[-1][0][0].endswith("(tumor_pipeline makes no one-page report)")
    widget.onShowCam()
    settle(widget)
    assert _status(widget) == NO_CAM_SENTENCE


def test_training_progress_reaches_the_bar(widget):
    widget.onStartTraining()
    settle(widget)
    widget.onTrainingTimer()
    assert widget.trainingJobs.job.wait(10)
    widget.onTrainingTimer()
    assert widget.ui.trainingProgressBar.setValue.calls[-1][0][0] == 100
    assert widget.ui.trainingLabel.setText.calls[-1][0][0].startswith("tumor_gate: DONE, epoch 1/1")
    assert widget.trainingRun is None and widget.trainingTimer.stop.calls


def test_failures_are_shown_as_one_sentence(widget, module):
    error = ServerHTTPError(
        409, "model 'sequence' is not trained yet: train it (POST /train/<task>) or put a checkpoint at x"
    )
    widget.logic.fail = ("runTask", error)
    widget.onRunTask()
    sentence = plain_sentence(error)
    assert _status(widget) == sentence
    assert module.stubs["slicer"].util.errorDisplay.calls[-1] == ((sentence,), {"windowTitle": "MRI Label"})
    assert widget.ui.resultTable.setRowCount.calls == []


def test_failures_in_the_worker_are_shown_as_one_sentence(widget, module):
    error = ServerHTTPError(503, "busy")

    def failing(progress):
        raise error

    widget.logic.runTask = lambda task, volume, study: Plan("Running", failing)
    widget.onRunTask()
    settle(widget)
    sentence = plain_sentence(error)
    assert _status(widget) == sentence
    assert module.stubs["slicer"].util.errorDisplay.calls[-1] == ((sentence,), {"windowTitle": "MRI Label"})


def test_logic_uses_the_fetched_image_id_or_a_fingerprint(module):
    module.stubs["slicer"].util.arrayFromVolume = lambda node: np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    logic = module.MRILabelLogic()
    assert logic.imageIdForVolume(FakeNode("x", {module.IMAGE_ID_ATTRIBUTE: "synth01_t1"})) == "synth01_t1"
    assert re.fullmatch(r"slicer_[0-9a-f]{10}", logic.imageIdForVolume(FakeNode("DOE^JANE T1")))  # no name in the id


def test_logic_without_a_server_says_to_connect(module):
    with pytest.raises(ValueError) as caught:
        module.MRILabelLogic().strategies()
    assert plain_sentence(caught.value) == "serverUrl is not set: enter the server URL and press Connect first."


def test_logic_reports_a_missing_map_without_loading_anything(module):
    logic = module.MRILabelLogic()
    logic.server = SimpleNamespace(has_image=lambda image_id: True, class_activation_map=lambda *a, **k: None)
    node = FakeNode("head", {module.IMAGE_ID_ATTRIBUTE: "synth01_flair"})
    assert run_plan(logic.loadClassActivationMap("tumor_gate", node)) == (None, NO_CAM_SENTENCE)
    assert module.stubs["slicer"].util.loadVolume.calls == []


def test_cmake_lists_every_package_file_and_the_icon():
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    for path in (MODULE_DIR / "MRILabelLib").glob("*.py"):
        assert f"${{MODULE_NAME}}Lib/{path.name}" in cmake
    assert "Resources/Icons/${MODULE_NAME}.png" in cmake
    assert "Resources/UI/${MODULE_NAME}.ui" in cmake  # the panel's Designer file travels with the module
    assert (MODULE_DIR / "Resources" / "Icons" / "MRILabel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "add_subdirectory(MRILabel)" in (MODULE_DIR.parent / "CMakeLists.txt").read_text(encoding="utf-8")


def test_the_password_is_never_stored_in_the_settings():
    source = (MODULE_DIR / "MRILabel.py").read_text(encoding="utf-8")
    stored = [line for line in source.splitlines() if "setValue(" in line]
    assert stored and not [line for line in stored if "password" in line.lower()], stored
