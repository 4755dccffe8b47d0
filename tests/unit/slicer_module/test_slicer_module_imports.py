"""The Slicer module file imports with stub ``slicer``/``qt``/``vtk``/``ctk`` modules, its widget calls only
the logic layer, and the plain package imports nothing from Slicer. (No Slicer is needed to run these.)"""

import ast
import importlib.util
import re
import sys
import types
import unittest
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from MRILabelLib import NO_CAM_SENTENCE, TaskInfo, TrainingRun, plain_sentence
from MRILabelLib.errors import ServerHTTPError
from MRILabelLib.progress import TrainingProgress
from MRILabelLib.results import parse_classification, parse_segmentation

MODULE_DIR = Path(__file__).resolve().parents[3] / "slicer_module" / "MRILabel"

SLICER_NAMES = {"slicer", "vtk", "qt", "ctk"}
HTTP_NAMES = {"urllib", "http", "json", "requests", "socket", "MRILabelLib.client", "MRILabelLib.multipart"}


class Recorder:
    """Stand-in for any Qt/Slicer object: attributes are Recorders (one per name), calls are recorded."""

    def __init__(self, name="stub"):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_children", {})
        object.__setattr__(self, "calls", [])

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        children = object.__getattribute__(self, "_children")
        if name not in children:
            children[name] = Recorder(f"{self._name}.{name}")
        return children[name]

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return Recorder(f"{self._name}()")


class FakeCombo:
    def __init__(self, current=""):
        self.currentText, self.items = current, []

    def clear(self):
        self.items = []

    def addItem(self, name):
        self.items.append(name)

    def setCurrentIndex(self, index):
        self.currentText = self.items[index]


class FakeNode:
    def __init__(self, name, attributes=None):
        self.name, self.attributes = name, dict(attributes or {})

    def GetName(self):
        return self.name

    def GetAttribute(self, key):
        return self.attributes.get(key)

    def SetAttribute(self, key, value):
        self.attributes[key] = value

    def GetSpacing(self):
        return (1.0, 1.0, 2.0)


def _stub_modules():
    slicer_pkg = Recorder("slicer")
    loadable = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent, self.layout = parent, Recorder("layout")

        def setup(self):
            pass

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            pass

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=0):
            pass

    for cls in (
        ScriptedLoadableModule,
        ScriptedLoadableModuleWidget,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
    ):
        setattr(loadable, cls.__name__, cls)
    object.__setattr__(slicer_pkg, "ScriptedLoadableModule", loadable)
    return {
        "slicer": slicer_pkg,
        "slicer.ScriptedLoadableModule": loadable,
        "qt": Recorder("qt"),
        "vtk": Recorder("vtk"),
        "ctk": Recorder("ctk"),
    }


@pytest.fixture
def module(monkeypatch):
    """MRILabel.py loaded with the stub modules (removed again afterwards)."""
    stubs = _stub_modules()
    for name, stub in stubs.items():
        monkeypatch.setitem(sys.modules, name, stub)
    spec = importlib.util.spec_from_file_location("MRILabel", MODULE_DIR / "MRILabel.py")
    loaded = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "MRILabel", loaded)
    spec.loader.exec_module(loaded)
    loaded.stubs = stubs
    return loaded


class FakeLogic:
    """Records every call the widget makes and answers with canned values."""

    def __init__(self, fail=None):
        self.calls, self.fail = [], fail
        self.volume = FakeNode("head")

    def _record(self, name, *args):
        self.calls.append((name, args))
        if self.fail and name == self.fail[0]:
            raise self.fail[1]

    def connect(self, url, max_mb, username, password):
        self._record("connect", url, max_mb, username, password)
        return [
            TaskInfo("sequence", "classification", {"T1": 0, "T2": 1}, "", True),
            TaskInfo("tumor_pipeline", "segmentation", {"tumor": 1}, "", False),
        ]

    def strategies(self):
        self._record("strategies")
        return ["first", "random"]

    def runTask(self, task, volume, progress):
        self._record("runTask", task, volume)
        if task == "sequence":
            return parse_classification({"label": "T2", "probabilities": {"T1": 0.25, "T2": 0.75}}), None
        segmentation = FakeNode("seg")
        return parse_segmentation(
            {"label_names": {"tumor": 1}, "measurements": {"mm3": {"tumor": 6.0}}}, "m.nii.gz", task
        ), segmentation

    def classesOf(self, task):
        self._record("classesOf", task)
        return ["T1", "T2"]

    def loadClassActivationMap(self, task, volume, progress):
        self._record("loadClassActivationMap", task, volume)
        return None, NO_CAM_SENTENCE

    def submitClass(self, task, volume, label):
        self._record("submitClass", task, volume, label)
        return {"label": label}

    def submitSegmentation(self, task, segmentation, volume):
        self._record("submitSegmentation", task, segmentation, volume)
        return {"label": "x"}

    def startTraining(self, task, epochs):
        self._record("startTraining", task, epochs)
        return TrainingRun(task, "run-1")

    def trainingProgress(self, run):
        self._record("trainingProgress", run)
        return TrainingProgress(run.task, run.run_id, "DONE", 1, 1, 5, 5, 0.3, None, 1.0)

    def trainingFailure(self, state):
        return RuntimeError(state.status)

    def nextSample(self, strategy, progress):
        self._record("nextSample", strategy)
        return FakeNode("synth01_t1")

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
    widget = module.MRILabelWidget()
    widget.setup()
    wiring = {
        "connectButton": widget.onConnect,
        "runButton": widget.onRunTask,
        "camButton": widget.onShowCam,
        "submitClassButton": widget.onSubmitClass,
        "submitSegmentationButton": widget.onSubmitSegmentation,
        "trainButton": widget.onStartTraining,
        "nextSampleButton": widget.onNextSample,
    }
    for attribute, handler in wiring.items():
        assert getattr(widget, attribute).clicked.connect.calls == [((handler,), {})], attribute
    assert widget.trainingTimer.timeout.connect.calls == [((widget.onTrainingTimer,), {})]
    assert isinstance(widget.logic, module.MRILabelLogic)


@pytest.fixture
def widget(module):
    widget = module.MRILabelWidget()
    widget.setup()
    widget.logic = FakeLogic()
    widget.serverUrlEdit = SimpleNamespace(text=" http://127.0.0.1:8000 ")
    widget.usernameEdit, widget.passwordEdit = SimpleNamespace(text=" ann.annotator "), SimpleNamespace(text=" pw ")
    widget.maxUploadSpin = SimpleNamespace(value=256.0)
    widget.taskCombo, widget.trainTaskCombo = FakeCombo("sequence"), FakeCombo("tumor_gate")
    widget.classCombo, widget.strategyCombo = FakeCombo("T1"), FakeCombo("random")
    widget.epochsSpin = SimpleNamespace(value=3)
    widget.volumeSelector = SimpleNamespace(currentNode=lambda: widget.logic.volume, setCurrentNode=lambda n: None)
    widget.segmentationNode = FakeNode("seg")
    widget.segmentationSelector = SimpleNamespace(
        currentNode=lambda: widget.segmentationNode, setCurrentNode=lambda n: None
    )
    return widget


def _status(widget):
    return widget.statusLabel.setText.calls[-1][0][0]


def test_handlers_call_only_logic_methods(widget):
    volume = widget.logic.volume
    widget.onConnect()
    widget.onRunTask()
    widget.onShowCam()
    widget.classCombo.currentText = "T1"
    widget.onSubmitClass()
    widget.onSubmitSegmentation()
    widget.onStartTraining()
    widget.onTrainingTimer()
    widget.onNextSample()
    assert widget.logic.calls == [
        ("connect", ("http://127.0.0.1:8000", 256.0, "ann.annotator", " pw ")),  # a password is sent as typed
        ("strategies", ()),
        ("runTask", ("sequence", volume)),
        ("classesOf", ("sequence",)),
        ("loadClassActivationMap", ("sequence", volume)),
        ("submitClass", ("sequence", volume, "T1")),
        ("submitSegmentation", ("sequence", widget.segmentationNode, volume)),
        ("startTraining", ("tumor_gate", 3)),
        ("trainingProgress", (TrainingRun("tumor_gate", "run-1"),)),
        ("nextSample", ("random",)),
    ]


def test_results_reach_the_table_and_labels(widget):
    widget.onConnect()
    assert widget.taskCombo.items == ["sequence", "tumor_pipeline"] and widget.trainTaskCombo.items == ["sequence"]
    assert widget.strategyCombo.items == ["first", "random"]
    widget.onRunTask()
    assert widget.resultTable.setRowCount.calls == [((2,), {})]
    assert widget.resultSummaryLabel.setText.calls[-1][0][0] == "Predicted class: T2"
    assert widget.classCombo.currentText == "T2"  # the prediction is preselected for correction
    widget.taskCombo.currentText = "tumor_pipeline"
    widget.onRunTask()
    assert widget.measurementsLabel.setText.calls[-1][0][0] == "tumor: 6.0 mm³\nTotal: 6.0 mm³"
    widget.onShowCam()
    assert _status(widget) == NO_CAM_SENTENCE


def test_training_progress_reaches_the_bar(widget):
    widget.onStartTraining()
    widget.onTrainingTimer()
    assert widget.trainingProgressBar.setValue.calls[-1][0][0] == 100
    assert widget.trainingLabel.setText.calls[-1][0][0].startswith("tumor_gate: DONE, epoch 1/1")
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
    assert widget.resultTable.setRowCount.calls == []


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
    assert logic.loadClassActivationMap("tumor_gate", node) == (None, NO_CAM_SENTENCE)
    assert module.stubs["slicer"].util.loadVolume.calls == []


def test_cmake_lists_every_package_file_and_the_icon():
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    for path in (MODULE_DIR / "MRILabelLib").glob("*.py"):
        assert f"${{MODULE_NAME}}Lib/{path.name}" in cmake
    assert "Resources/Icons/${MODULE_NAME}.png" in cmake
    assert (MODULE_DIR / "Resources" / "Icons" / "MRILabel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "add_subdirectory(MRILabel)" in (MODULE_DIR.parent / "CMakeLists.txt").read_text(encoding="utf-8")


def test_the_password_is_never_stored_in_the_settings():
    source = (MODULE_DIR / "MRILabel.py").read_text(encoding="utf-8")
    stored = [line for line in source.splitlines() if "setValue(" in line]
    assert stored and not [line for line in stored if "password" in line.lower()], stored
