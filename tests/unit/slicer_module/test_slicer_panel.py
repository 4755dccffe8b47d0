"""Issue 18 part A: the Slicer panel's fixes, one or more tests per row, on the fake Slicer of ``fake_slicer.py``.

Each test names its row. ``perform`` runs what a logic action returns: a plan (prepare on the GUI thread, server
work in a worker, finish on the GUI thread) is run inline; anything else is returned as it is.
"""

import ast
import importlib
import os
import re
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from fake_slicer import (
    FILES,
    FakeCombo,
    FakeList,
    FakeNode,
    FakeSegmentationNode,
    FakeSelector,
    FakeSliceNode,
    FakeTransformNode,
    FakeVectorVolumeNode,
    FakeVolumeNode,
)

from MRILabelLib import TaskInfo, plain_sentence
from MRILabelLib.geometry import slice_center
from MRILabelLib.logic import NextSample
from MRILabelLib.results import parse_classification, parse_segmentation, read_uncertainty

MODULE_DIR = Path(__file__).resolve().parents[3] / "slicer_module" / "MRILabel"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "MRILabel.ui"
ACTION_BUTTONS = (
    "connectButton",
    "runButton",
    "camButton",
    "submitClassButton",
    "submitSegmentationButton",
    "trainButton",
    "nextSampleButton",
    "refreshHistoryButton",
    "rollbackButton",
    "refreshReviewsButton",
    "loadReviewButton",
    "approveButton",
    "needsChangesButton",
)
PNG_IJK_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # how Slicer loads a PNG or JPG


def perform(answer, progress=None):
    """Run a plan inline (as the panel does in steps); return anything else unchanged."""
    if hasattr(answer, "work") and hasattr(answer, "finish"):
        from MRILabelLib.jobs import run_plan

        return run_plan(answer, progress)
    return answer


def translation(x, y, z):
    matrix = np.eye(4)
    matrix[:3, 3] = (x, y, z)
    return matrix


class FakeServer:
    """MRILabelLib.ServerLogic stand-in: records what reaches "the server"."""

    def __init__(self, work_dir, images=()):
        self.work_dir, self.images, self.calls = str(work_dir), set(images), []
        os.makedirs(self.work_dir, exist_ok=True)
        self.answer, self.cam_path, self.sample = None, None, None
        self.uncertainty = None  # (result JSON, map path) of the next uncertainty answer
        self.seen_files = {}

    def has_image(self, image_id):
        self.calls.append(("has_image", image_id))
        return image_id in self.images

    def ensure_image(self, image_id, image_path=None, progress=None):
        self.calls.append(("ensure_image", image_id))
        if image_id not in self.images:
            assert image_path and os.path.isfile(image_path), image_path
            self.seen_files[image_id] = FILES.get(image_path)
            self.images.add(image_id)
        return image_id

    def task(self, name):
        return TaskInfo(name, "segmentation", {"tumor": 1, "edema": 2}, "", True)

    def run_task(self, task, image_id, image_path=None, params=None, progress=None, folder=None):
        self.calls.append(("run_task", task, image_id))
        return self.answer

    def class_activation_map(self, task, image_id, image_path=None, progress=None, folder=None):
        self.calls.append(("class_activation_map", task, image_id))
        return self.cam_path

    def require_uncertainty(self, task):
        self.calls.append(("require_uncertainty", task))
        if task not in ("tumor_seg", "hippocampus"):
            raise ValueError(f"{task} does not give uncertainty maps")

    def uncertainty_map(self, task, image_id, image_path=None, progress=None, folder=None):
        self.calls.append(("uncertainty_map", task, image_id))
        result, path = self.uncertainty
        return read_uncertainty(result, path, task)

    def submit_class(self, task, image_id, label):
        self.calls.append(("submit_class", task, image_id, label))
        return {}

    def submit_segmentation(self, task, image_id, label_path, segment_names, tag="final"):
        self.calls.append(("submit_segmentation", task, image_id, sorted(segment_names)))
        self.seen_files["final"] = FILES.get(label_path)
        return {}

    def next_sample(self, strategy, progress=None, folder=None):
        self.calls.append(("next_sample", strategy))
        return self.sample


@pytest.fixture
def scene(module):
    return module.stubs["slicer"].mrmlScene


@pytest.fixture
def util(module):
    return module.stubs["slicer"].util


@pytest.fixture
def server(tmp_path):
    return FakeServer(tmp_path / "server")


@pytest.fixture
def logic(module, server):
    logic = module.MRILabelLogic()
    logic.server = server
    yield logic
    if hasattr(logic, "cleanTemporaryFiles"):
        logic.cleanTemporaryFiles(removeFolder=True)


@pytest.fixture
def panel(module, scene):
    widget = module.MRILabelWidget()
    volume = scene.add(FakeVolumeNode("head", np.zeros((2, 3, 4), np.float32)))
    ui = getattr(widget, "ui", widget)  # (before issue 18 the widgets were attributes of the widget itself)
    ui.taskCombo, ui.trainTaskCombo = FakeCombo("sequence"), FakeCombo("tumor_gate")
    ui.classCombo, ui.strategyCombo = FakeCombo("T1"), FakeCombo("random")
    ui.volumeSelector, ui.segmentationSelector = FakeSelector(volume), FakeSelector()
    ui.uncertaintyList = FakeList()
    return widget


def _status(widget):
    return widget.ui.statusLabel.setText.calls[-1][0][0]


def _classification():
    return parse_classification({"label": "T2", "probabilities": {"T1": 0.25, "T2": 0.75}}, "sequence")


def _write(path, array, ijk=None):
    FILES[str(path)] = (np.asarray(array), np.eye(4) if ijk is None else np.asarray(ijk, dtype=float))
    Path(path).write_bytes(b"fake")
    return str(path)


# --- row 1: a segmentation is saved for its own image, not the one the volume selector shows ----------------------


def test_row1_submitted_segmentation_uses_its_own_image_and_reference_volume(module, logic, server, scene, util):
    first = scene.add(FakeVolumeNode("first", np.zeros((2, 3, 4))))
    scene.add(FakeVolumeNode("second (next sample, now in the selector)", np.ones((2, 3, 4))))
    segmentation = scene.add(
        FakeSegmentationNode(
            "first tumor_seg",
            {module.TASK_ATTRIBUTE: "tumor_seg", module.IMAGE_ID_ATTRIBUTE: "first_id"},
        )
    )
    segmentation.SetAttribute(module.SOURCE_VOLUME_ATTRIBUTE, first.GetID())
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(first)
    segmentation.add_segment("tumor", np.ones((2, 3, 4), bool))
    server.images.add("first_id")
    perform(logic.submitSegmentation("tumor_seg", segmentation))
    assert ("submit_segmentation", "tumor_seg", "first_id", ["tumor"]) in server.calls
    assert {reference for _, _, reference in util.segmentExports} == {first}
    volumes_logic = module.stubs["slicer"].modules.volumes.logic()
    assert [volume for volume, _ in volumes_logic.created] == [first]  # the label map takes first's geometry


def test_row1_user_made_segmentation_uses_its_reference_geometry_volume(module, logic, server, scene):
    reference = scene.add(FakeVolumeNode("drawn on", np.arange(24.0).reshape(2, 3, 4)))
    segmentation = scene.add(FakeSegmentationNode("Segmentation"))  # made in Segment Editor: no MRILabel attributes
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    segmentation.add_segment("tumor", np.zeros((2, 3, 4), bool))
    perform(logic.submitSegmentation("tumor_seg", segmentation))
    image_id = logic.imageIdForVolume(reference)
    assert ("ensure_image", image_id) in server.calls  # the reference volume is sent when the server lacks it
    assert ("submit_segmentation", "tumor_seg", image_id, ["tumor"]) in server.calls


def test_row1_segmentation_without_a_volume_is_refused_with_a_sentence(logic, scene):
    segmentation = scene.add(FakeSegmentationNode("orphan"))
    segmentation.add_segment("tumor", np.zeros((2, 3, 4), bool))
    with pytest.raises(ValueError) as caught:
        perform(logic.submitSegmentation("tumor_seg", segmentation))
    assert plain_sentence(caught.value).startswith("The segmentation 'orphan' has no source volume")


# --- row 2: uploads export a copy in world coordinates; the user's node and its storage are never touched ---------


def test_row2_upload_exports_and_never_saves_the_users_node(logic, server, scene, util):
    volume = scene.add(FakeVolumeNode("DOE^JANE T1", np.arange(24.0).reshape(2, 3, 4)))
    volume.storage = FakeNode("the DICOM file list")
    server.answer = _classification()
    perform(logic.runTask("sequence", volume))
    assert not [node for node, *_ in util.saves if node is volume]
    assert [(node, world) for node, _, _, world in util.exports] == [(volume, True)]
    assert volume.storage.GetName() == "the DICOM file list"


def test_row2_without_exportNode_a_hardened_clone_is_saved_and_removed(module, logic, server, scene, util):
    module.stubs["slicer"].util.exportNode = None  # Slicer before 5.4 has no slicer.util.exportNode
    transform = scene.add(FakeTransformNode("acquisition", translation(5, 0, 0)))
    volume = scene.add(FakeVolumeNode("head", np.arange(24.0).reshape(2, 3, 4)))
    volume.SetAndObserveTransformNodeID(transform.GetID())
    server.answer = _classification()
    perform(logic.runTask("sequence", volume))
    ((saved, path, _, _),) = util.saves
    assert saved is not volume and not scene.IsNodePresent(saved)
    assert module.stubs["slicer"].hardened == [saved]
    np.testing.assert_allclose(next(iter(server.seen_files.values()))[1], translation(5, 0, 0) @ volume.ijk)
    assert volume.GetTransformNodeID() == transform.GetID() and volume.storage is None


def test_row2_loaded_results_do_not_point_at_temporary_files(module, logic, server, scene, tmp_path):
    volume = scene.add(FakeVolumeNode("head", np.zeros((2, 3, 4))))
    server.cam_path = _write(tmp_path / "cam.nii.gz", np.full((2, 3, 4), 0.5, np.float32), volume.ijk)
    cam, _ = perform(logic.loadClassActivationMap("tumor_gate", volume))
    assert cam.GetStorageNode() is None  # a saved scene writes the map, it does not refer to the temporary file


# --- row 3: long calls run in a worker; one run at a time; Cancel -------------------------------------------------


def test_row3_a_running_job_disables_every_action_and_can_be_cancelled(panel):
    from MRILabelLib.jobs import Plan

    started, release, built = threading.Event(), threading.Event(), []

    def work(progress):
        started.set()
        progress("Uploading head (12.0 MB) as slicer_0123456789", None)
        release.wait(10)
        progress("answer arrived")
        return _classification(), None

    def run_task(task, volume, study):
        built.append(task)
        return Plan(f"Running {task}", work)

    panel.logic.runTask = run_task
    panel.onRunTask()
    assert started.wait(5)
    ui = panel.ui
    assert [getattr(ui, name).enabled for name in ACTION_BUTTONS] == [False] * len(ACTION_BUTTONS)
    assert ui.cancelButton.enabled is True and ui.cancelButton.visible is True and ui.jobProgressBar.visible is True
    panel.onJobTimer()
    assert _status(panel) == "Uploading head (12.0 MB) as slicer_0123456789"
    panel.onRunTask()  # a queued click while the run is active starts nothing
    assert built == ["sequence"]
    panel.onCancel()
    assert [getattr(ui, name).enabled for name in ACTION_BUTTONS] == [True] * len(ACTION_BUTTONS)
    assert ui.cancelButton.visible is False and ui.jobProgressBar.visible is False
    assert _status(panel) == "Running sequence was cancelled."
    release.set()
    panel.onJobTimer()
    assert ui.resultTable.setRowCount.calls == []  # the late answer of the cancelled run is dropped


def test_row3_server_work_touches_neither_slicer_nor_qt(module, logic, server, scene, tmp_path):
    class Forbidden:
        def __getattr__(self, name):
            raise AssertionError(f"the worker touched {name}")

    volume = scene.add(FakeVolumeNode("head", np.zeros((2, 3, 4))))
    mask_path = _write(tmp_path / "m.nii.gz", np.zeros((2, 3, 4)), volume.ijk)
    server.answer = parse_segmentation({"label_names": {"tumor": 1}}, mask_path)
    server.cam_path = _write(tmp_path / "cam.nii.gz", np.zeros((2, 3, 4), np.float32), volume.ijk)
    server.sample = NextSample("synth01_t1", _write(tmp_path / "s.nii.gz", np.zeros((2, 3, 4))), {})
    server.uncertainty = {"uncertainty": SUMMARY}, _write(tmp_path / "u.nii.gz", np.zeros((2, 3, 4)), volume.ijk)
    plans = [
        logic.runTask("tumor_seg", volume),
        logic.loadClassActivationMap("tumor_gate", volume),
        logic.loadUncertaintyMap("tumor_seg", volume),
        logic.submitClass("sequence", volume, "T1"),
        logic.nextSample("first"),
    ]
    for plan in plans:
        saved = module.slicer, module.qt, module.vtk
        module.slicer = module.qt = module.vtk = Forbidden()
        try:
            value = plan.work(lambda *a: None)
        finally:
            module.slicer, module.qt, module.vtk = saved
        plan.finish(value)
        plan.cleanup()


# --- row 4: a sample is loaded as a single file -------------------------------------------------------------------


def test_row4_next_sample_is_loaded_as_a_single_file(logic, server, util, tmp_path):
    path = _write(tmp_path / "case_0007.png", np.zeros((1, 4, 5)), PNG_IJK_TO_RAS)
    server.images.add("case_0007")
    server.sample = NextSample("case_0007", path, {})
    node = perform(logic.nextSample("first"))
    assert util.loads[-1][0] == path and util.loads[-1][1].get("singleFile") is True
    assert node.GetName() == "case_0007"


# --- row 5: results of 2D inputs land on the picture; RGB is converted; geometry compared with tolerance ----------


def test_row5_cam_of_a_2d_input_takes_the_pictures_geometry(logic, server, scene, tmp_path):
    picture = scene.add(FakeVolumeNode("photo", np.zeros((1, 4, 5)), PNG_IJK_TO_RAS))
    server.cam_path = _write(tmp_path / "cam.nii.gz", np.full((1, 4, 5), 0.5, np.float32))  # identity, as written
    cam, _ = perform(logic.loadClassActivationMap("tumor_gate", picture))
    np.testing.assert_allclose(cam.ijk, PNG_IJK_TO_RAS)


def test_row5_mask_of_a_2d_input_takes_the_pictures_geometry(module, logic, server, scene, tmp_path):
    picture = scene.add(FakeVolumeNode("photo", np.zeros((1, 4, 5)), PNG_IJK_TO_RAS))
    mask = np.zeros((1, 4, 5), np.uint8)
    mask[0, 1:3, 1:4] = 1
    server.answer = parse_segmentation({"label_names": {"tumor": 1}}, _write(tmp_path / "m.nii.gz", mask), "tumor_seg")
    perform(logic.runTask("tumor_seg", picture))
    ((_, _, imported_ijk, _),) = module.stubs["slicer"].modules.segmentations.logic().imports
    np.testing.assert_allclose(imported_ijk, PNG_IJK_TO_RAS)


def test_row5_rgb_pictures_are_sent_as_luminance(logic, server, scene, util, tmp_path):
    rgb = np.zeros((1, 4, 5, 3), np.uint8)
    rgb[..., 0] = 200  # pure red
    photo = scene.add(FakeVectorVolumeNode("photo", rgb, PNG_IJK_TO_RAS))
    server.cam_path = _write(tmp_path / "cam.nii.gz", np.full((1, 4, 5), 0.5, np.float32))
    cam, message = perform(logic.loadClassActivationMap("tumor_gate", photo))  # no technical shape error
    sent, _ = next(iter(server.seen_files.values()))
    assert sent.shape == (1, 4, 5)
    np.testing.assert_allclose(sent, 0.299 * 200, rtol=1e-5)
    assert [node for node, *_ in util.exports if node is photo] == []  # a scalar copy was sent, then removed
    assert all(not scene.IsNodePresent(node) for node, *_ in util.exports)
    assert cam is not None and "photo" in message


def test_row5_other_vector_volumes_are_refused_with_a_sentence(logic, scene):
    field = scene.add(FakeVectorVolumeNode("displacement", np.zeros((2, 3, 4, 2), np.float32)))
    with pytest.raises(ValueError) as caught:
        perform(logic.runTask("sequence", field))
    sentence = plain_sentence(caught.value)
    assert "2 values per voxel" in sentence and "Vector to Scalar Volume" in sentence


def test_row5_a_misplaced_map_is_refused_naming_what_differs(logic, server, scene, tmp_path):
    volume = scene.add(FakeVolumeNode("head", np.zeros((2, 3, 4)), np.diag([1.0, 1.0, 2.0, 1.0])))
    server.cam_path = _write(tmp_path / "cam.nii.gz", np.zeros((2, 3, 4), np.float32), np.diag([1.0, 1.0, 3.0, 1.0]))
    with pytest.raises(ValueError) as caught:
        perform(logic.loadClassActivationMap("tumor_gate", volume))
    sentence = plain_sentence(caught.value)
    assert sentence.startswith("The class-activation map does not line up with the image: its voxel size")


# --- row 6: results go under the volume's parent transform; the upload is in world coordinates -------------------


def test_row6_results_are_placed_under_the_parent_transform(module, logic, server, scene, util, tmp_path):
    to_world = translation(10, -4, 2)
    transform = scene.add(FakeTransformNode("acquisition", to_world))
    volume = scene.add(FakeVolumeNode("head", np.zeros((2, 3, 4)), np.diag([1.0, 1.0, 2.0, 1.0])))
    volume.SetAndObserveTransformNodeID(transform.GetID())
    mask = np.zeros((2, 3, 4), np.uint8)
    mask[1, 1, 1:3] = 1
    # the server answers in the coordinates of what it was sent: the world (hardened) geometry
    server.answer = parse_segmentation(
        {"label_names": {"tumor": 1}}, _write(tmp_path / "m.nii.gz", mask, to_world @ volume.ijk), "tumor_seg"
    )
    _, segmentation = perform(logic.runTask("tumor_seg", volume))
    assert util.exports[-1][3] is True  # exported with world=True
    assert segmentation.GetTransformNodeID() == transform.GetID()
    ((label, _, imported_ijk, label_transform),) = module.stubs["slicer"].modules.segmentations.logic().imports
    np.testing.assert_allclose(imported_ijk, volume.ijk)  # back in the volume's own coordinates ...
    assert label_transform == transform.GetID()  # ... under the same transform


def test_row6_cam_is_placed_under_the_parent_transform(logic, server, scene, tmp_path):
    to_world = translation(0, 7, 0)
    transform = scene.add(FakeTransformNode("registration", to_world))
    volume = scene.add(FakeVolumeNode("head", np.zeros((2, 3, 4))))
    volume.SetAndObserveTransformNodeID(transform.GetID())
    server.cam_path = _write(tmp_path / "cam.nii.gz", np.zeros((2, 3, 4), np.float32), to_world @ volume.ijk)
    cam, _ = perform(logic.loadClassActivationMap("tumor_gate", volume))
    assert cam.GetTransformNodeID() == transform.GetID()
    np.testing.assert_allclose(cam.ijk, volume.ijk)


# --- row 7: the image id follows origin, directions and the parent transform --------------------------------------


def test_row7_image_id_follows_origin_direction_and_transform(logic, scene):
    volume = scene.add(FakeVolumeNode("head", np.arange(24.0).reshape(2, 3, 4), np.diag([1.0, 1.0, 2.0, 1.0])))
    ids = {logic.imageIdForVolume(volume)}
    volume.ijk = translation(3, 0, 0) @ volume.ijk  # hardened translation: origin moved
    ids.add(logic.imageIdForVolume(volume))
    volume.ijk = np.diag([-1.0, -1.0, 2.0, 1.0]) @ np.diag([1.0, 1.0, 1.0, 1.0])  # axes flipped, spacing kept
    ids.add(logic.imageIdForVolume(volume))
    transform = scene.add(FakeTransformNode("moved", translation(0, 0, 9)))
    volume.SetAndObserveTransformNodeID(transform.GetID())
    ids.add(logic.imageIdForVolume(volume))
    assert len(ids) == 4 and all(re.fullmatch(r"slicer_[0-9a-f]{10}", i) for i in ids)


def test_row7_a_fetched_sample_changed_after_fetching_gets_a_new_id(logic, server, tmp_path):
    server.images.add("synth01_t1")
    server.sample = NextSample("synth01_t1", _write(tmp_path / "s.nii.gz", np.arange(24.0).reshape(2, 3, 4)), {})
    node = perform(logic.nextSample("first"))
    assert logic.imageIdForVolume(node) == "synth01_t1"
    node.ijk = translation(0, 2, 0) @ node.ijk
    assert logic.imageIdForVolume(node).startswith("slicer_")


# --- row 8: attributes exist before the base __init__ runs setup() ------------------------------------------------


def test_row8_parentless_widget_keeps_what_setup_made(module):
    widget = module.MRILabelWidget()  # Slicer's base __init__ runs setup() for a parentless widget
    assert isinstance(widget.logic, module.MRILabelLogic)
    assert widget.trainingTimer is not None and widget.ui is not None
    assert widget.Observations  # the scene observers setup() added are still known (removed in cleanup)


# --- row 9: Reload reloads MRILabelLib first --------------------------------------------------------------------


def _package_imports():
    """Package module -> the package modules it imports (``from .x import``)."""
    found = {}
    for path in (MODULE_DIR / "MRILabelLib").glob("*.py"):
        name = "MRILabelLib" if path.stem == "__init__" else f"MRILabelLib.{path.stem}"
        found[name] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    found[name].add(f"MRILabelLib.{node.module}")
                else:
                    found[name].update(f"MRILabelLib.{alias.name}" for alias in node.names)
    return found


def test_row9_reload_reloads_the_package_in_dependency_order_then_the_module(module, monkeypatch):
    widget = module.MRILabelWidget()
    order = []
    monkeypatch.setattr(importlib, "reload", lambda loaded: order.append(loaded.__name__) or loaded)
    widget.baseReloads = order  # the base class's reload appends the module name
    widget.onReload()
    imports = _package_imports()
    assert set(order[:-1]) == set(imports) and order[-1] == "MRILabel"
    for position, name in enumerate(order[:-1]):
        assert imports[name] <= set(order[:position]), f"{name} is reloaded before what it imports"


# --- row 10: the volume selector lists images only ----------------------------------------------------------------


def _ui_widgets():
    return {w.get("name"): w for w in ET.parse(UI_FILE).getroot().iter("widget")}


def _string_list(widget, prop):
    for p in widget.findall("property"):
        if p.get("name") == prop:
            return [s.text for s in p.iter("string")]
    return None


def test_row10_volume_selector_hides_label_maps_and_overlays(module, panel, logic, server, scene, tmp_path):
    selector = _ui_widgets()["volumeSelector"]
    assert _string_list(selector, "nodeTypes") == ["vtkMRMLScalarVolumeNode"]
    assert "vtkMRMLLabelMapVolumeNode" in _string_list(selector, "hideChildNodeTypes")
    volume = scene.add(FakeVolumeNode("head", np.zeros((2, 3, 4))))
    server.cam_path = _write(tmp_path / "cam.nii.gz", np.zeros((2, 3, 4), np.float32), volume.ijk)
    cam, _ = perform(logic.loadClassActivationMap("tumor_gate", volume))
    panel.logic = logic
    panel.refreshHiddenVolumes()
    assert panel.ui.volumeSelector.sortFilterProxyModel().hiddenNodeIDs == [cam.GetID()]


# --- row 11: the wait cursor is gone before the error box opens ---------------------------------------------------


def test_row11_cursor_is_restored_before_the_error_box(panel, events):
    class Failing:
        def runTask(self, *args):
            raise ValueError("volume must be selected first")

        def describeError(self, error):
            return plain_sentence(error)

    panel.logic = Failing()
    events.clear()
    panel.onRunTask()
    assert events == ["cursor on", "cursor off", "error box"]


# --- row 12: no system proxy for local servers; temporary files are removed ---------------------------------------


def test_row12_exported_files_are_removed_after_the_upload(logic, server, scene, util):
    volume = scene.add(FakeVolumeNode("head", np.arange(24.0).reshape(2, 3, 4)))
    server.answer = _classification()
    perform(logic.runTask("sequence", volume))
    ((_, path, *_),) = util.exports or util.saves
    assert not os.path.exists(path)


def test_row12_cleanup_and_scene_close_remove_the_work_folder(module, panel, scene):
    from MRILabelLib.jobs import Plan

    logic = panel.logic
    folder = logic.temporaryFolder()
    Path(folder, "left over.nii.gz").write_bytes(b"x")
    release = threading.Event()
    panel.logic.runTask = lambda task, volume, study: Plan("Running", lambda progress: release.wait(10))
    panel.onRunTask()
    job = panel.jobs.job
    panel.onSceneStartClose(None, None)  # a running job is cancelled, the folder emptied
    assert job.cancelled and panel.jobs.job is None and os.listdir(folder) == []
    release.set()
    panel.cleanup()
    assert not os.path.exists(folder)


# --- row 13: the self-test exercises the risky paths without a server and leaves nothing behind -----------------


def test_row13_self_test_runs_every_test_without_a_server_and_leaves_nothing(module, scene, monkeypatch):
    monkeypatch.delenv("MRILABEL_TEST_SERVER_URL", raising=False)
    views = _views(scene)  # a layout with slice views: the self-test goes to the most uncertain slice
    shown = {name: view.slice_to_ras.array.copy() for name, view in views.items()}
    selfTest = module.MRILabelTest
    names = sorted(n for n in dir(selfTest) if n.startswith("test_") and callable(getattr(selfTest, n)))
    assert {"test_mask_import_and_export", "test_cam_overlays", "test_uncertainty_overlay"} <= set(names)
    ran = []
    for name in names:  # each test method, recorded as it runs (and run as it is)
        method = getattr(selfTest, name)
        monkeypatch.setattr(selfTest, name, lambda self, _name=name, _method=method: ran.append(_name) or _method(self))
    made = []
    original = module.MRILabelLogic.temporaryFolder
    monkeypatch.setattr(module.MRILabelLogic, "temporaryFolder", lambda self: made.append(original(self)) or made[-1])
    selfTest().runTest()
    assert sorted(ran) == names  # runTest runs every test_* method, each once
    assert scene.cleared >= 2 * len(names)  # setUp and tearDown around each
    assert set(scene.nodes) == {view.GetID() for view in views.values()}  # only the slice views (singletons) stay
    assert made and not any(os.path.exists(folder) for folder in made)
    assert views["Red"].jumps  # it went to the uncertain slice ...
    for name, view in views.items():  # ... and left every view on the slice it showed before
        np.testing.assert_allclose(view.slice_to_ras.array, shown[name], err_msg=name)


# --- the template: .ui file, parameter node, scene observers, logic without widgets -------------------------------


def test_ui_file_has_every_widget_the_panel_uses():
    source = (MODULE_DIR / "MRILabel.py").read_text(encoding="utf-8")
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    widgets = _ui_widgets()
    assert used and used <= set(widgets), used - set(widgets)
    connections = ET.parse(UI_FILE).getroot().find("connections")
    scene_receivers = {
        c.findtext("receiver") for c in connections if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
    }
    mrml = {name for name, w in widgets.items() if w.get("class") == "qMRMLNodeComboBox"}
    assert mrml and mrml <= scene_receivers


def test_parameter_node_holds_the_panel_state_but_not_the_password(module):
    fields = set(module.MRILabelParameterNode.allParameters)
    assert {"serverUrl", "task", "inputVolume", "segmentation", "epochs", "strategy", "historyTask"} <= fields
    assert not [f for f in fields if "password" in f.lower()]
    bound = {}
    for name, widget in _ui_widgets().items():
        for p in widget.findall("property"):
            if p.get("name") == "SlicerParameterName":
                bound[name] = p.findtext("string")
    assert set(bound.values()) <= fields and bound["volumeSelector"] == "inputVolume"


def test_scene_close_drops_the_parameter_node_and_reopening_restores_the_panel(module, panel):
    panel._parameterNode.task = "tumor_seg"
    panel.onSceneStartClose(None, None)
    assert panel._parameterNode is None
    panel.onSceneEndClose(None, None)
    assert panel._parameterNode.task == "tumor_seg"  # the same scene node: a saved scene restores the choice
    panel.ui.taskCombo.addItem("sequence")
    panel.ui.taskCombo.addItem("tumor_seg")
    panel.updateGUIFromParameterNode()
    assert panel.ui.taskCombo.currentText == "tumor_seg"


def test_logic_never_touches_widgets():
    tree = ast.parse((MODULE_DIR / "MRILabel.py").read_text(encoding="utf-8"))
    logic = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MRILabelLogic")
    names = {n.id for n in ast.walk(logic) if isinstance(n, ast.Name)}
    attributes = {n.attr for n in ast.walk(logic) if isinstance(n, ast.Attribute)}
    assert not names & {"qt", "ctk"} and "ui" not in attributes


# --- issue 18 item 4: Show uncertainty -----------------------------------------------------------------------------

#: The server's summary (apps/mri_app/lib/uncertainty.py): slices along voxel axis K, most uncertain first.
SUMMARY = {
    "measure": "normalised predictive entropy H(p) / log K of the softmax",
    "mean": 0.05,
    "max": 0.93,
    "uncertain_fraction": 0.02,
    "uncertain_from": 0.5,
    "axis": 2,
    "slices": [{"slice": 1, "uncertain_voxels": 1203, "mean": 0.31}, {"slice": 0, "uncertain_voxels": 4, "mean": 0.2}],
}
UNCERTAINTY_BUTTONS = (*ACTION_BUTTONS, "uncertaintyButton")


def _views(scene, sagittal_red=False):
    """Slicer's three slice views (Red axial, Yellow sagittal, Green coronal: SliceToRAS columns x, y, normal)."""
    axial = np.array([[-1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    sagittal = np.array([[0, 0, 1.0, 0], [-1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    coronal = np.array([[-1.0, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    red = sagittal if sagittal_red else axial
    return {
        name: scene.add(FakeSliceNode(name, matrix))
        for name, matrix in (("Red", red), ("Yellow", sagittal), ("Green", coronal))
    }


class RecordingLogic:
    """The panel's logic stand-in for the uncertainty actions: records calls, answers with plans and values."""

    def __init__(self, scene, tmp_path, block=None):
        self.calls, self.block = [], block
        self.map = scene.add(FakeVolumeNode("head tumor_seg uncertainty", np.zeros((2, 3, 4))))
        self.answer = read_uncertainty({"uncertainty": SUMMARY}, str(tmp_path / "u.nii.gz"), "tumor_seg")

    def loadUncertaintyMap(self, task, volume):
        from MRILabelLib.jobs import Plan

        self.calls.append(("loadUncertaintyMap", task, volume))

        def work(progress):
            if self.block is not None:
                self.block.wait(10)
            return self.answer

        return Plan(f"Asking {task} for its uncertainty map", work, lambda answer: (self.map, answer))

    def jumpToSlice(self, map_id, axis, index):
        self.calls.append(("jumpToSlice", map_id, axis, index))
        return None, f"Slice {index} shown in the Red view."

    def overlayNodeIDs(self):
        return [self.map.GetID()]

    def describeError(self, error):
        return plain_sentence(error)


def _settle(widget):
    if widget.jobs.job is not None:
        assert widget.jobs.job.wait(10)
    widget.onJobTimer()


def test_uncertainty_button_and_slice_list_call_only_the_logic(panel, scene, tmp_path):
    panel.logic = RecordingLogic(scene, tmp_path)
    panel.ui.taskCombo = FakeCombo("tumor_seg")
    volume = panel.ui.volumeSelector.currentNode()
    panel.onShowUncertainty()
    _settle(panel)
    list_ = panel.ui.uncertaintyList
    assert list_.entries == ["slice 1: 1,203 uncertain voxels (mean 0.31)", "slice 0: 4 uncertain voxels (mean 0.20)"]
    assert list_.visible is True
    assert panel.ui.uncertaintyLabel.setText.calls[-1][0][0] == (
        "Correct first: slice 1 (1,203 uncertain voxels), slice 0 (4 uncertain voxels).\n"
        "Mean uncertainty 0.050, max 0.930; 2.0% of voxels uncertain (≥ 0.5)."
    )
    assert _status(panel) == "head tumor_seg uncertainty shown; click a slice in the list to show it."
    panel.onUncertainSliceClicked(list_.item(1))  # the second entry: slice 0
    assert panel.logic.calls == [
        ("loadUncertaintyMap", "tumor_seg", volume),
        ("jumpToSlice", panel.logic.map.GetID(), 2, 0),
    ]
    assert _status(panel) == "Slice 0 shown in the Red view."
    panel.onUncertainSliceClicked(None)  # a click beside the entries does nothing
    assert len(panel.logic.calls) == 2
    assert panel.ui.volumeSelector.sortFilterProxyModel().hiddenNodeIDs == [panel.logic.map.GetID()]


def test_uncertainty_job_disables_every_action_button(panel, scene, tmp_path):
    release = threading.Event()
    panel.logic = RecordingLogic(scene, tmp_path, block=release)
    panel._uncertaintyTasks = {"tumor_seg"}
    panel.ui.taskCombo = FakeCombo("tumor_seg")
    panel.onTaskChanged("tumor_seg")
    ui = panel.ui
    assert ui.uncertaintyButton.enabled is True
    panel.onShowUncertainty()
    assert [getattr(ui, name).enabled for name in UNCERTAINTY_BUTTONS] == [False] * len(UNCERTAINTY_BUTTONS)
    assert ui.cancelButton.visible is True
    panel.onShowUncertainty()  # a second click while it runs starts nothing
    assert len(panel.logic.calls) == 1
    release.set()
    _settle(panel)
    assert [getattr(ui, name).enabled for name in UNCERTAINTY_BUTTONS] == [True] * len(UNCERTAINTY_BUTTONS)


def test_uncertainty_button_is_offered_for_the_tasks_that_give_maps(module, panel):
    from MRILabelLib.jobs import Plan

    tasks = [
        TaskInfo("sequence", "classification", {"T1": 0}, "", True),
        TaskInfo("tumor_seg", "segmentation", {"tumor": 1}, "", True),  # /info says nothing: offered
        TaskInfo("old_seg", "segmentation", {"x": 1}, "", False, False),  # /info says no
    ]
    panel.logic.connect = lambda *args: Plan("Connecting", lambda progress: None, lambda answer: tasks)
    panel.logic.strategies = lambda: []
    panel.ui.serverUrlEdit.text, panel.ui.usernameEdit.text, panel.ui.passwordEdit.text = "http://x", "", ""
    panel.ui.maxUploadSpin.value = 512.0
    panel.onConnect()
    _settle(panel)
    offered = {}
    for task in ("sequence", "tumor_seg", "old_seg"):
        panel.ui.taskCombo.currentText = task
        panel.onTaskChanged(task)
        offered[task] = panel.ui.uncertaintyButton.enabled
    assert offered == {"sequence": False, "tumor_seg": True, "old_seg": False}


def test_uncertainty_map_lies_on_the_source_and_is_hidden_from_the_selector(
    module, panel, logic, server, scene, tmp_path
):
    to_world = translation(10, -4, 2)
    transform = scene.add(FakeTransformNode("acquisition", to_world))
    volume = scene.add(FakeVolumeNode("head", np.zeros((2, 3, 4)), np.diag([0.9, 0.9, 3.0, 1.0])))
    volume.SetAndObserveTransformNodeID(transform.GetID())
    values = np.full((2, 3, 4), 0.7, np.float32)
    values[0, 0, 0], values[0, 0, 1] = 0.05, np.nan
    # the server answers in the coordinates of what it was sent: the world (hardened) geometry
    server.uncertainty = {"uncertainty": SUMMARY}, _write(tmp_path / "u.nii.gz", values, to_world @ volume.ijk)
    node, answer = perform(logic.loadUncertaintyMap("tumor_seg", volume))
    assert ("uncertainty_map", "tumor_seg", logic.imageIdForVolume(volume)) in server.calls
    assert node.GetTransformNodeID() == transform.GetID()  # under the volume's parent transform ...
    np.testing.assert_allclose(node.ijk, volume.ijk)  # ... in its own coordinates
    assert node.GetAttribute(module.ROLE_ATTRIBUTE) == module.OVERLAY_ROLE and node.GetStorageNode() is None
    assert node.GetAttribute(module.TASK_ATTRIBUTE) == "tumor_seg" and answer.summary.slices[0].slice == 1
    assert node.array[0, 0, 0] == 0.0 and node.array[0, 0, 1] == 0.0  # below 0.1 and NaN: not coloured
    display = node.GetDisplayNode()
    assert display.SetWindowLevelMinMax.calls == [((0.0, 1.0), {})]
    heat = scene.GetFirstNodeByName("MRILabelHeat")
    assert display.SetAndObserveColorNodeID.calls == [((heat.GetID(),), {})] and heat.colors[0][3] == 0.0
    layers = module.stubs["slicer"].util.setSliceViewerLayers.calls[-1][1]
    assert layers == {"background": volume, "foreground": node, "foregroundOpacity": 0.5}
    panel.logic = logic
    panel.refreshHiddenVolumes()
    assert panel.ui.volumeSelector.sortFilterProxyModel().hiddenNodeIDs == [node.GetID()]


def test_uncertainty_map_of_a_2d_picture_takes_the_pictures_geometry(logic, server, scene, tmp_path):
    picture = scene.add(FakeVolumeNode("photo", np.zeros((1, 4, 5)), PNG_IJK_TO_RAS))
    flat = {**SUMMARY, "slices": [{"slice": 0, "uncertain_voxels": 3, "mean": 0.2}]}
    server.uncertainty = {"uncertainty": flat}, _write(tmp_path / "u.nii.gz", np.full((1, 4, 5), 0.5, np.float32))
    node, answer = perform(logic.loadUncertaintyMap("tumor_seg", picture))
    np.testing.assert_allclose(node.ijk, PNG_IJK_TO_RAS)
    assert answer.summary.sentence() == "Correct first: slice 0 (3 uncertain voxels)."


def test_a_misplaced_uncertainty_map_is_refused_and_not_left_in_the_scene(logic, server, scene, tmp_path):
    volume = scene.add(FakeVolumeNode("head", np.zeros((2, 3, 4)), np.diag([1.0, 1.0, 2.0, 1.0])))
    server.uncertainty = {"uncertainty": SUMMARY}, _write(tmp_path / "u.nii.gz", np.zeros((2, 3, 4)), np.eye(4))
    with pytest.raises(ValueError) as caught:
        perform(logic.loadUncertaintyMap("tumor_seg", volume))
    assert plain_sentence(caught.value).startswith(
        "The uncertainty map does not line up with the image: its voxel size is 1 × 1 × 1 mm"
    )
    assert logic.overlayNodeIDs() == []


def test_a_task_without_maps_is_refused_before_the_volume_is_sent(logic, server, scene, util):
    volume = scene.add(FakeVolumeNode("head", np.zeros((2, 3, 4))))
    with pytest.raises(ValueError, match="tumor_gate does not give uncertainty maps"):
        logic.loadUncertaintyMap("tumor_gate", volume)
    assert util.exports == [] and server.calls == [("require_uncertainty", "tumor_gate")]


@pytest.mark.parametrize("axis, index", [(2, 1), (2, 0), (1, 2), (0, 3)])
def test_clicking_a_listed_slice_moves_the_closest_view_onto_it(
    module, panel, logic, server, scene, tmp_path, axis, index
):
    views = _views(scene)
    to_world = translation(0, 7, -3)
    transform = scene.add(FakeTransformNode("registration", to_world))
    volume = scene.add(FakeVolumeNode("head", np.zeros((2, 3, 4)), np.diag([0.9, 1.1, 3.0, 1.0])))
    volume.SetAndObserveTransformNodeID(transform.GetID())
    listed = {**SUMMARY, "axis": axis, "slices": [{"slice": index, "uncertain_voxels": 5, "mean": 0.3}]}
    server.uncertainty = (
        {"uncertainty": listed},
        _write(tmp_path / "u.nii.gz", np.zeros((2, 3, 4)), to_world @ volume.ijk),
    )
    panel.logic = logic
    panel.ui.taskCombo = FakeCombo("tumor_seg")
    panel.ui.volumeSelector = FakeSelector(volume)
    panel.onShowUncertainty()
    _settle(panel)
    assert panel.ui.uncertaintyList.entries == [f"slice {index}: 5 uncertain voxels (mean 0.30)"]
    panel.onUncertainSliceClicked(panel.ui.uncertaintyList.item(0))
    expected = {2: "Red", 1: "Green", 0: "Yellow"}[axis]  # K: axial, J: coronal, I: sagittal for this grid
    moved = [name for name, view in views.items() if view.jumps]
    assert moved == [expected]
    plane = views[expected].slice_to_ras.array
    centre = slice_center(to_world @ volume.ijk, (2, 3, 4), axis, index)  # in world coordinates
    assert float((centre - plane[:3, 3]) @ plane[:3, 2]) == pytest.approx(0.0, abs=1e-9)
    assert _status(panel) == f"Slice {index} of head tumor_seg uncertainty shown in the {expected} view."


def test_going_to_a_slice_uses_the_view_parallel_to_the_slices_and_refuses_without_views(
    logic, server, scene, tmp_path
):
    volume = scene.add(FakeVolumeNode("head", np.zeros((2, 3, 4))))
    server.uncertainty = {"uncertainty": SUMMARY}, _write(tmp_path / "u.nii.gz", np.zeros((2, 3, 4)), volume.ijk)
    node, _ = perform(logic.loadUncertaintyMap("tumor_seg", volume))
    with pytest.raises(ValueError, match="No slice view is open to show slice 1 in"):
        logic.jumpToSlice(node.GetID(), 2, 1)
    views = _views(scene, sagittal_red=True)  # the user turned Red sagittal ...
    views["Yellow"].mapped = False  # ... Yellow is not in the layout ...
    views["Green"].slice_to_ras.array[:3, :3] = np.eye(3)  # ... and Green shows axial slices
    sliceNode, message = logic.jumpToSlice(node.GetID(), 2, 1)
    assert sliceNode is views["Green"] and message.endswith("shown in the Green view.")
    with pytest.raises(ValueError, match="slice 2 is not in the volume"):
        logic.jumpToSlice(node.GetID(), 2, 2)
    scene.RemoveNode(node)
    with pytest.raises(ValueError, match="The uncertainty map this list belongs to was removed"):
        logic.jumpToSlice(node.GetID(), 2, 1)


def test_closing_the_scene_empties_the_slice_list(panel, scene, tmp_path):
    panel.logic = RecordingLogic(scene, tmp_path)
    panel.logic.cleanTemporaryFiles = lambda removeFolder=False: None
    panel.onShowUncertainty()
    _settle(panel)
    panel.onSceneStartClose(None, None)
    assert panel.ui.uncertaintyList.entries == [] and panel.ui.uncertaintyList.visible is False
    assert panel._uncertainSlices is None
    panel.onUncertainSliceClicked(("item", panel.ui.uncertaintyList, 0))
    assert [call[0] for call in panel.logic.calls] == ["loadUncertaintyMap"]


def test_self_test_goes_to_the_uncertain_slice_where_there_are_slice_views(module, scene):
    views = _views(scene)
    views["Red"].SetSliceOffset(-12.5)  # the user's slice
    shown = views["Red"].slice_to_ras.array.copy()
    test = module.MRILabelTest()
    test.setUp()
    try:
        test.test_uncertainty_overlay()
    finally:
        test.tearDown()
    assert views["Red"].jumps and not views["Yellow"].jumps and not views["Green"].jumps
    np.testing.assert_allclose(views["Red"].slice_to_ras.array, shown)  # it went to the slice, then back
    assert views["Red"].GetSliceOffset() == pytest.approx(-12.5)
    assert set(scene.nodes) == {view.GetID() for view in views.values()}  # the slice views outlive Clear()
