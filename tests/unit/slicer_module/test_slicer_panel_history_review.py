"""Issue 18 item 4 (panel side): the *Model history* and *Review* sections on the fake Slicer of ``fake_slicer.py``.

The handlers call only the logic; every call runs as a job (all action buttons disabled meanwhile); the table and
the list are filled from the answers; a declined confirmation sends no rollback; the logic's plans check what they
can before anything is sent, talk to the server only in the worker, and load an image with its final label through
the next-sample and mask-import paths.
"""

import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from fake_slicer import FILES, FakeCombo, FakeList, FakeSelector, FakeTable, FakeTextEdit, FakeVolumeNode

from MRILabelLib import ReviewSample, TaskInfo, plain_sentence
from MRILabelLib.errors import ServerHTTPError
from MRILabelLib.history import COLUMNS, parse_history, parse_rollback, rollback_question
from MRILabelLib.jobs import Plan, run_plan
from MRILabelLib.review import ReviewDecision, ReviewList, parse_review, parse_reviews, review_state

MODULE_DIR = Path(__file__).resolve().parents[3] / "slicer_module" / "MRILabel"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "MRILabel.ui"
ACTION_BUTTONS = (
    "connectButton",
    "runButton",
    "camButton",
    "uncertaintyButton",
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
SERVED = {"name": "model/tumor_seg/model.pt", "modified": "2025-01-31T13:00:00", "mtime": 1.0}
RESTORED = {"name": "model/tumor_seg/model.pt", "modified": "2025-02-01T08:30:00", "mtime": 2.0}
PROMOTED = {
    "event": "promoted",
    "time": "2025-01-31T12:00:00Z",
    "metric": "val_mean_dice",
    "metric_before": 0.41,
    "metric_after": 0.44,
    "reason": "validation metric 0.4400 >= served checkpoint's 0.4100",
    "archive": "20250131T120000.000001Z",
}
ROLLED_BACK = {
    "event": "rolled back",
    "time": "2025-02-01T08:30:00Z",
    "by": "adam.admin",
    "restored": "20250131T120000.000001Z",
    "archive": "20250201T083000.000002Z",
}
HISTORY = parse_history({"task": "tumor_seg", "served": SERVED, "entries": [PROMOTED]})
AFTER_ROLLBACK = parse_history({"task": "tumor_seg", "served": RESTORED, "entries": [ROLLED_BACK, PROMOTED]})
ROLLBACK = parse_rollback({"task": "tumor_seg", "served": RESTORED, "entry": ROLLED_BACK})
APPROVED = {"status": "approved", "comment": "clean margins", "reviewer": "rita.reviewer", "time": "2025-02-01T10:00Z"}
PENDING = parse_reviews(
    {
        "images": [
            {"image": "synth01_flair", "task": "tumor_seg", "status": "pending", "review": None},
            {"image": "synth_hippo01_t1", "task": "hippocampus", "status": "pending", "review": None},
        ]
    }
)


def settle(widget):
    """Let the running job end, then deliver it as the panel's timer would."""
    if widget.jobs.job is not None:
        assert widget.jobs.job.wait(10)
    widget.onJobTimer()


def _status(widget):
    return widget.ui.statusLabel.setText.calls[-1][0][0]


class RecordingLogic:
    """The panel's logic stand-in: records calls, answers with plans (``block``: an Event the work waits for)."""

    def __init__(self, scene, block=None, fail=None):
        self.calls, self.block, self.fail = [], block, fail
        self.history, self.after = HISTORY, AFTER_ROLLBACK
        self.listing = ReviewList("pending", PENDING)
        self.volume = scene.add(FakeVolumeNode("synth01_flair"))
        self.segmentation = scene.add(FakeVolumeNode("synth01_flair final label (tumor_seg)"))

    def _plan(self, title, answer):
        def work(progress):
            if self.block is not None:
                self.block.wait(10)
            if self.fail is not None:
                raise self.fail
            return answer

        return Plan(title, work)

    def modelHistory(self, task):
        self.calls.append(("modelHistory", task))
        return self._plan("History", self.history)

    def rollbackQuestion(self, task, history=None):
        self.calls.append(("rollbackQuestion", task, history))
        return rollback_question(task, history)

    def rollBack(self, task):
        self.calls.append(("rollBack", task))
        return self._plan("Rolling back", (ROLLBACK, self.after))

    def reviewList(self, status):
        self.calls.append(("reviewList", status))
        return self._plan("Review list", ReviewList(review_state(status), self.listing.items))

    def submitReview(self, imageId, status, comment, listStatus):
        self.calls.append(("submitReview", imageId, status, comment, listStatus))
        remaining = ReviewList(review_state(listStatus), [i for i in self.listing.items if i.image != imageId])
        review = parse_review(dict(APPROVED, status=status, comment=comment))
        return self._plan("Review", ReviewDecision(imageId, review, remaining))

    def loadForReview(self, imageId, task=None):
        self.calls.append(("loadForReview", imageId, task))
        return self._plan("Loading", (self.volume, self.segmentation))

    def overlayNodeIDs(self):
        return []

    def cleanTemporaryFiles(self, removeFolder=False):
        pass

    def describeError(self, error):
        return plain_sentence(error)


def _dress(widget):
    ui = widget.ui
    ui.historyTaskCombo = FakeCombo("tumor_seg")
    ui.historyTaskCombo.items = ["hippocampus", "tumor_seg"]
    ui.historyTable = FakeTable(len(COLUMNS))
    ui.reviewStatusCombo = FakeCombo("pending")
    ui.reviewStatusCombo.items = ["pending", "approved", "needs changes"]
    ui.reviewList, ui.reviewCommentEdit = FakeList(), FakeTextEdit()
    ui.volumeSelector, ui.segmentationSelector = FakeSelector(), FakeSelector()
    ui.taskCombo, ui.trainTaskCombo, ui.strategyCombo = FakeCombo(), FakeCombo(), FakeCombo()
    return widget


@pytest.fixture
def panel(module, scene):
    widget = _dress(module.MRILabelWidget())
    widget.logic = RecordingLogic(scene)
    return widget


@pytest.fixture
def scene(module):
    return module.stubs["slicer"].mrmlScene


@pytest.fixture
def util(module):
    return module.stubs["slicer"].util


# --- Model history ----------------------------------------------------------------------------------------------------


def test_refresh_fills_the_table_and_the_served_line(panel):
    panel.onRefreshHistory()
    settle(panel)
    assert panel.logic.calls == [("modelHistory", "tumor_seg")]
    assert panel.ui.historyTable.texts() == [
        [
            "2025-01-31 12:00:00 UTC",
            "promoted",
            "val_mean_dice: 0.4100 → 0.4400",
            "validation metric 0.4400 >= served checkpoint's 0.4100; the checkpoint it replaced is archived as "
            "20250131T120000.000001Z",
        ]
    ]
    assert panel.ui.servedLabel.setText.calls[-1][0][0] == (
        "tumor_seg serves model/tumor_seg/model.pt (written 2025-01-31 13:00:00)."
    )
    assert _status(panel) == "Model history of tumor_seg: 1 entry, newest first."


def test_another_task_empties_the_table(panel):
    panel.onRefreshHistory()
    settle(panel)
    panel.onHistoryTaskChanged("hippocampus")
    assert panel.ui.historyTable.texts() == [] and panel._history is None
    assert panel._parameterNode.historyTask == "hippocampus"  # kept with the scene


def test_a_declined_confirmation_sends_no_rollback(panel, util, events):
    panel.onRefreshHistory()
    settle(panel)
    util.confirmOkCancelDisplay.answer = False
    events.clear()
    panel.onRollBack()
    assert [c[0] for c in panel.logic.calls] == ["modelHistory", "rollbackQuestion"]
    ((question,), options) = util.confirmOkCancelDisplay.calls[-1]
    assert question.startswith(
        "Roll tumor_seg back: serve the checkpoint archived as 20250131T120000.000001Z again instead of "
        "model/tumor_seg/model.pt (written 2025-01-31 13:00:00)?"
    )
    assert options["windowTitle"] == "MRI Label"
    assert panel.jobs.job is None and _status(panel) == "Rollback of tumor_seg cancelled; nothing was sent."
    assert events == ["cursor on", "cursor off", "confirm box"]  # the wait cursor is gone before the question


def test_a_confirmed_rollback_runs_in_the_worker_and_refreshes_the_table(panel, scene, util):
    release = threading.Event()
    panel.logic = RecordingLogic(scene, block=release)
    util.confirmOkCancelDisplay.answer = True
    panel.onRollBack()
    assert panel.logic.calls[-1] == ("rollBack", "tumor_seg")
    ui = panel.ui
    assert [getattr(ui, name).enabled for name in ACTION_BUTTONS] == [False] * len(ACTION_BUTTONS)
    asked = len(util.confirmOkCancelDisplay.calls)
    panel.onRollBack()  # a click while the rollback runs asks nothing and sends nothing
    assert len(util.confirmOkCancelDisplay.calls) == asked and panel.logic.calls.count(("rollBack", "tumor_seg")) == 1
    release.set()
    settle(panel)
    assert [getattr(ui, name).enabled for name in ACTION_BUTTONS[:3]] == [True] * 3
    assert [row[1] for row in ui.historyTable.texts()] == ["rolled back", "promoted"]
    assert ui.servedLabel.setText.calls[-1][0][0].startswith(
        "tumor_seg serves model/tumor_seg/model.pt (written 2025-02"
    )
    assert _status(panel) == ROLLBACK.sentence()


def test_a_refused_rollback_shows_the_servers_sentence(panel, scene, util, module):
    detail = 'Role "monailabel-admin" (or a higher one) is required to perform this action'
    panel.logic = RecordingLogic(scene, fail=ServerHTTPError(403, detail, "POST", "/mri/rollback/tumor_seg"))
    util.confirmOkCancelDisplay.answer = True
    panel.onRollBack()
    settle(panel)
    sentence = f"Your account may not do this: {detail}; ask an administrator for the role."
    assert _status(panel) == sentence
    assert util.errorDisplay.calls[-1] == ((sentence,), {"windowTitle": "MRI Label"})
    assert panel.ui.historyTable.texts() == []


def test_no_task_to_roll_back_is_a_sentence_and_asks_nothing(panel, util):
    panel.ui.historyTaskCombo = FakeCombo("")
    panel.onRollBack()
    assert util.confirmOkCancelDisplay.calls == [] and not [c for c in panel.logic.calls if c[0] == "rollBack"]
    assert _status(panel) == "Choose the task to roll back in Model history first."


# --- Review -----------------------------------------------------------------------------------------------------------


def test_the_list_load_and_a_decision_call_only_the_logic(panel):
    panel.onRefreshReviews()
    settle(panel)
    ui = panel.ui
    assert ui.reviewList.entries == ["synth01_flair — tumor_seg", "synth_hippo01_t1 — hippocampus"]
    assert _status(panel) == "2 final labels pending; select one and press Load to see it."
    ui.reviewList.setCurrentRow(0)
    panel.onLoadForReview()
    settle(panel)
    assert ui.volumeSelector.currentNode() is panel.logic.volume
    assert ui.segmentationSelector.currentNode() is panel.logic.segmentation
    assert (
        _status(panel) == 'Loaded synth01_flair for review; its final label is "synth01_flair final label (tumor_seg)".'
    )
    ui.reviewCommentEdit.setPlainText("clean margins")
    panel.onApprove()
    settle(panel)
    assert ui.reviewList.entries == ["synth_hippo01_t1 — hippocampus"]  # read again after the decision
    assert ui.reviewCommentEdit.toPlainText() == ""
    assert _status(panel) == "synth01_flair: approved by rita.reviewer; the list is up to date."
    ui.reviewList.setCurrentRow(0)
    ui.reviewCommentEdit.setPlainText("left tail missing")
    panel.onNeedsChanges()
    settle(panel)
    assert panel.logic.calls == [
        ("reviewList", "pending"),
        ("loadForReview", "synth01_flair", "tumor_seg"),
        ("submitReview", "synth01_flair", "approved", "clean margins", "pending"),
        ("submitReview", "synth_hippo01_t1", "needs_changes", "left tail missing", "pending"),
    ]


def test_review_jobs_disable_every_action_button(panel, scene):
    release = threading.Event()
    panel.logic = RecordingLogic(scene, block=release)
    ui = panel.ui
    for start in (panel.onRefreshReviews, panel.onLoadForReview, panel.onApprove, panel.onRefreshHistory):
        ui.reviewList.setCurrentRow(0)
        start()
        assert [getattr(ui, name).enabled for name in ACTION_BUTTONS] == [False] * len(ACTION_BUTTONS), start
        assert ui.cancelButton.visible is True
        count = len(panel.logic.calls)
        panel.onNeedsChanges()  # a second action while one runs starts nothing
        assert len(panel.logic.calls) == count
        release.set()
        settle(panel)
        release.clear()
        assert ui.refreshReviewsButton.enabled is True and ui.approveButton.enabled is True


def test_another_filter_reads_the_list_once_connected(panel):
    panel.onReviewStatusChanged("approved")
    assert panel.logic.calls == [] and panel.ui.reviewList.entries == []  # not connected yet: nothing is asked
    panel._connected = True
    panel.ui.reviewStatusCombo.currentText = "needs changes"
    panel.onReviewStatusChanged("needs changes")
    settle(panel)
    assert panel.logic.calls == [("reviewList", "needs changes")]


def test_connect_fills_the_history_tasks_with_the_trainable_ones(panel, module):
    tasks = [
        TaskInfo("tumor_seg", "segmentation", {"tumor": 1}, "", True),
        TaskInfo("tumor_pipeline", "segmentation", {"tumor": 1}, "", False),
        TaskInfo("hippocampus", "segmentation", {"anterior": 1, "posterior": 2}, "", True),
    ]
    panel.logic.connect = lambda *args: Plan("Connecting", lambda progress: None, lambda answer: tasks)
    panel.logic.strategies = lambda: []
    panel.ui.serverUrlEdit.text, panel.ui.usernameEdit.text, panel.ui.passwordEdit.text = "http://x", "", ""
    panel.ui.maxUploadSpin.value = 512.0
    panel.ui.historyTaskCombo = FakeCombo()
    panel.onConnect()
    settle(panel)
    assert panel.ui.historyTaskCombo.items == ["tumor_seg", "hippocampus"] and panel._connected is True


# --- the real logic: checks before sending, worker without Slicer, loading an image with its final label -------------


class ReviewServer:
    """MRILabelLib.ServerLogic stand-in for the review and history plans: records what reaches "the server"."""

    def __init__(self, work_dir):
        self.work_dir, self.calls, self.sample, self.images = str(work_dir), [], None, set()
        self.history_error = None

    def model_history(self, task):
        self.calls.append(("model_history", task))
        if self.history_error is not None:
            raise self.history_error
        return AFTER_ROLLBACK

    def roll_back(self, task):
        self.calls.append(("roll_back", task))
        return ROLLBACK

    def reviews(self, status="pending"):
        self.calls.append(("reviews", status))
        return PENDING

    def review(self, image_id, status, comment=""):
        self.calls.append(("review", image_id, status, comment))
        return parse_review(dict(APPROVED, status=status, comment=comment))

    def fetch_for_review(self, image_id, task=None, progress=None, folder=None):
        self.calls.append(("fetch_for_review", image_id, task))
        return self.sample

    def has_image(self, image_id):
        self.calls.append(("has_image", image_id))
        return image_id in self.images

    def task(self, name):
        return TaskInfo(name, "segmentation", {"tumor": 1}, "", True)

    def submit_segmentation(self, task, image_id, label_path, segment_names, tag="final"):
        self.calls.append(("submit_segmentation", task, image_id, sorted(segment_names)))
        self.final = FILES.get(label_path)
        return {}


@pytest.fixture
def server(tmp_path):
    return ReviewServer(tmp_path / "server")


@pytest.fixture
def logic(module, server):
    logic = module.MRILabelLogic()
    logic.server = server
    yield logic
    logic.cleanTemporaryFiles(removeFolder=True)


def _write(path, array, ijk):
    FILES[str(path)] = (np.asarray(array), np.asarray(ijk, dtype=float))
    Path(path).write_bytes(b"fake")
    return str(path)


def _sample(tmp_path, label_ijk=None, task="tumor_seg"):
    ijk = np.diag([0.9, 0.9, 3.0, 1.0])
    ijk[:3, 3] = (-20.0, 5.0, 2.0)
    image = _write(tmp_path / "synth01_flair.nii.gz", np.arange(24.0).reshape(2, 3, 4), ijk)
    label = np.zeros((2, 3, 4), np.uint8)
    label[1, 1:3, 1:3] = 1
    label_path = _write(tmp_path / "final_label_synth01_flair.nii.gz", label, ijk if label_ijk is None else label_ijk)
    names = {"tumor": 1} if task else {}
    return ReviewSample("synth01_flair", task, image, label_path, names), label, ijk


def test_too_long_a_comment_or_no_selection_sends_nothing(module, panel, logic, server, util):
    panel.logic = logic
    panel._reviewItems = list(PENDING)
    panel.ui.reviewList.entries = [i.text() for i in PENDING]
    panel.onApprove()  # nothing selected
    assert _status(panel) == "Select an image in the review list first."
    panel.ui.reviewList.setCurrentRow(0)
    panel.ui.reviewCommentEdit.setPlainText("x" * 2001)
    panel.onNeedsChanges()
    assert _status(panel) == (
        "the review comment is 2,001 characters long; the server takes at most 2,000, so shorten it and send the "
        "decision again."
    )
    assert util.errorDisplay.calls[-1][0][0] == _status(panel)
    panel.ui.reviewList.setCurrentRow(-1)
    panel.onLoadForReview()
    assert _status(panel) == "Select an image in the review list first."
    assert server.calls == [] and panel.jobs.job is None
    panel.ui.reviewList.setCurrentRow(0)
    panel.ui.reviewCommentEdit.setPlainText("x" * 2000)
    panel.onNeedsChanges()
    settle(panel)
    assert server.calls == [("review", "synth01_flair", "needs_changes", "x" * 2000), ("reviews", "pending")]


def test_the_plans_talk_to_the_server_in_the_worker_only(module, logic, server, tmp_path):
    class Forbidden:
        def __getattr__(self, name):
            raise AssertionError(f"the worker touched {name}")

    server.sample, _, _ = _sample(tmp_path)
    plans = [
        logic.modelHistory("tumor_seg"),
        logic.rollBack("tumor_seg"),
        logic.reviewList("pending"),
        logic.submitReview("synth01_flair", "approved", "ok", "approved"),
        logic.loadForReview("synth01_flair", "tumor_seg"),
    ]
    assert server.calls == []  # building a plan sends nothing
    values = []
    for plan in plans:
        saved = module.slicer, module.qt, module.vtk
        module.slicer = module.qt = module.vtk = Forbidden()
        try:
            value = plan.work(lambda *a: None)
        finally:
            module.slicer, module.qt, module.vtk = saved
        values.append(plan.finish(value))
        plan.cleanup()
    assert server.calls == [
        ("model_history", "tumor_seg"),
        ("roll_back", "tumor_seg"),
        ("model_history", "tumor_seg"),  # the table is read again after a rollback
        ("reviews", "pending"),
        ("review", "synth01_flair", "approved", "ok"),
        ("reviews", "approved"),  # the list is read again after a decision
        ("fetch_for_review", "synth01_flair", "tumor_seg"),
    ]
    assert values[1] == (ROLLBACK, AFTER_ROLLBACK) and values[2] == ReviewList("pending", PENDING)


def test_a_rollback_whose_history_cannot_be_read_still_reports_the_rollback(panel, logic, server, util):
    server.history_error = ServerHTTPError(503, "busy")
    assert run_plan(logic.rollBack("tumor_seg")) == (ROLLBACK, None)
    panel.logic = logic
    util.confirmOkCancelDisplay.answer = True
    panel.onRollBack()
    settle(panel)
    assert _status(panel) == ROLLBACK.sentence() and panel.ui.historyTable.texts() == []


def test_bad_filters_are_refused_before_sending(logic, server):
    with pytest.raises(ValueError) as caught:
        logic.reviewList("done")
    assert plain_sentence(caught.value) == (
        "the review status must be one of pending, approved, needs changes, got 'done'."
    )
    with pytest.raises(ValueError):
        logic.submitReview("synth01_flair", "pending", "", "pending")
    assert server.calls == []


def test_load_puts_the_image_and_its_final_label_in_the_scene(module, logic, server, scene, util, tmp_path):
    server.sample, label, ijk = _sample(tmp_path)
    volume, segmentation = run_plan(logic.loadForReview("synth01_flair", "tumor_seg"))
    # the image as next sample loads one: one file, its datastore id and fingerprint, shown
    assert util.loads[0][0] == server.sample.image_path and util.loads[0][1]["singleFile"] is True
    assert volume.GetName() == "synth01_flair" and volume.GetStorageNode() is None
    assert volume.GetAttribute(module.IMAGE_ID_ATTRIBUTE) == "synth01_flair"
    assert logic.imageIdForVolume(volume) == "synth01_flair"
    # the label as a mask is imported: on the image's grid, segments named by the task's labels
    assert segmentation.GetName() == "synth01_flair final label (tumor_seg)"
    assert segmentation.GetAttribute(module.TASK_ATTRIBUTE) == "tumor_seg"
    assert segmentation.GetAttribute(module.IMAGE_ID_ATTRIBUTE) == "synth01_flair"
    assert logic.sourceVolumeOf(segmentation) is volume
    (segment_id, segment), *_ = segmentation.GetSegmentation().segments
    assert segment.GetName() == "tumor"
    np.testing.assert_array_equal(segmentation.masks[segment_id], label == 1)
    ((_, _, imported_ijk, _),) = module.stubs["slicer"].modules.segmentations.logic().imports
    np.testing.assert_allclose(imported_ijk, ijk)
    assert not [n for n in scene.nodes.values() if n.IsA("vtkMRMLLabelMapVolumeNode")]  # the label map is gone
    # corrected and submitted again: saved as that image's final label, nothing uploaded
    server.images.add("synth01_flair")
    run_plan(logic.submitSegmentation("hippocampus", segmentation))
    assert server.calls[-1] == ("submit_segmentation", "tumor_seg", "synth01_flair", ["tumor"])
    assert util.exports[-1][0].GetName() == "MRILabel final"  # only the merged label map was written


def test_a_label_of_no_served_task_takes_the_panels_task_on_submit(module, logic, server, tmp_path):
    server.sample, _, _ = _sample(tmp_path, task=None)
    volume, segmentation = run_plan(logic.loadForReview("synth01_flair"))
    assert segmentation.GetName() == "synth01_flair final label"
    assert not segmentation.GetAttribute(module.TASK_ATTRIBUTE)
    assert segmentation.GetSegmentation().segments[0][1].GetName() == "Label_1"


def test_a_label_off_the_images_grid_is_refused_with_a_sentence(logic, server, scene, tmp_path):
    server.sample, _, _ = _sample(tmp_path, label_ijk=np.eye(4))
    with pytest.raises(ValueError) as caught:
        run_plan(logic.loadForReview("synth01_flair", "tumor_seg"))
    assert plain_sentence(caught.value).startswith("The mask does not line up with the image: its voxel size is")
    assert not [n for n in scene.nodes.values() if n.IsA("vtkMRMLSegmentationNode")]


# --- the .ui ----------------------------------------------------------------------------------------------------------


def _widgets():
    return {w.get("name"): w for w in ET.parse(UI_FILE).getroot().iter("widget")}


def test_the_ui_has_both_sections_with_the_filter_and_the_columns():
    widgets = _widgets()
    combo = widgets["reviewStatusCombo"]
    items = [i.findtext("property/string") for i in combo.findall("item")]
    assert items == ["pending", "approved", "needs changes"]  # pending first: the default
    assert [review_state(i) for i in items] == ["pending", "approved", "needs_changes"]
    table = widgets["historyTable"]
    assert [c.findtext("property/string") for c in table.findall("column")] == list(COLUMNS)
    assert widgets["reviewCommentEdit"].get("class") == "QPlainTextEdit"
    assert widgets["reviewList"].get("class") == "QListWidget"
    for name in ("historyCollapsibleButton", "reviewCollapsibleButton"):
        assert widgets[name].get("class") == "ctkCollapsibleButton"
