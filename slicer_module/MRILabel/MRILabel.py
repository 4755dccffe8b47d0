"""MRI Label: a 3D Slicer panel for the mri-label MONAI Label server.

Built on Slicer's scripted-module template: the panel is ``Resources/UI/MRILabel.ui`` (Qt Designer), its state a
``@parameterNodeWrapper`` parameter node (saved with the scene), its handlers wrapped in
``slicer.util.tryWithErrorDisplay``. The widget only shows things and calls :class:`MRILabelLogic`; the logic
converts Slicer nodes to files and arrays and never touches a widget; everything else is in the Slicer-free
package ``MRILabelLib``.

Every action is a :class:`MRILabelLib.jobs.Plan`: the logic prepares files on the GUI thread, the server calls
run in a worker thread (never touching Qt or MRML), the answer becomes nodes on the GUI thread again, after the
panel's ``qt.QTimer`` saw the job end. While an action runs every action button is disabled and Cancel is shown.
"""

import importlib
import logging
import os
import shutil
import tempfile
from typing import Annotated

import ctk  # noqa: F401  (Slicer module convention)
import numpy as np
import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from MRILabelLib import NO_CAM_SENTENCE, NextSample, ReviewSample, ServerLogic, plain_sentence
from MRILabelLib.errors import Cancelled, TrainingFailedError
from MRILabelLib.geometry import (
    closest_view,
    geometry,
    is_single_slice,
    scalar_for_upload,
    slice_center,
    slice_normal,
    world_to_local,
)
from MRILabelLib.history import rollback_question
from MRILabelLib.jobs import JobRunner, Plan, run_plan
from MRILabelLib.measurements import NOTHING_MEASURED, measurement_view
from MRILabelLib.overlay import (
    cam_display_values,
    check_aligned,
    heat_color_table,
    merge_segments,
    safe_image_id,
    volume_fingerprint,
)
from MRILabelLib.report import study_params
from MRILabelLib.results import (
    SegmentationResult,
    label_info_for,
    parse_classification,
    parse_measurements,
    read_uncertainty,
)
from MRILabelLib.review import (
    DECISIONS,
    REVIEW_STATES,
    ReviewDecision,
    ReviewList,
    check_comment,
    review_state,
)

IMAGE_ID_ATTRIBUTE = "MRILabel.ImageId"
TASK_ATTRIBUTE = "MRILabel.Task"
#: On a segmentation the panel made: the node ID of the volume it was made for (row 1 of issue 18).
SOURCE_VOLUME_ATTRIBUTE = "MRILabel.SourceVolumeID"
#: The same as a node reference (node references follow ID changes when a scene is imported).
SOURCE_VOLUME_REFERENCE = "MRILabelSourceVolume"
#: On a fetched sample: the fingerprint it had when fetched (a changed volume is sent as a new image).
FINGERPRINT_ATTRIBUTE = "MRILabel.Fingerprint"
#: On a class-activation map or uncertainty volume: hides it from the panel's volume selector.
ROLE_ATTRIBUTE = "MRILabel.Role"
OVERLAY_ROLE = "overlay"
SETTINGS_URL_KEY = "MRILabel/serverUrl"
SETTINGS_USER_KEY = "MRILabel/username"  # the password is never stored (neither in the settings nor in the scene)
DEFAULT_URL = "http://127.0.0.1:8000"
WINDOW_TITLE = "MRI Label"
#: MRILabelLib's modules, each after the ones it imports: Reload reloads them in this order, then the package.
LIB_MODULES = (
    "errors",
    "multipart",
    "progress",
    "results",
    "measurements",
    "report",
    "history",
    "review",
    "geometry",
    "overlay",
    "client",
    "jobs",
    "logic",
)
JOB_POLL_MS = 100
TRAINING_POLL_MS = 1000


class MRILabel(ScriptedLoadableModule):
    """Module description shown by Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MRI Label"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["mri-label developers"]
        self.parent.helpText = (
            "Runs the mri-label MONAI Label server's brain-MRI tasks on the current volume: sequence, dementia "
            "stage and tumor gate classification, tumor segmentation, tumor pipeline and hippocampus volumes. "
            "Shows the measurements (hippocampal volumes and eTIV, tumor volume and diameters, the change since the "
            "previous study) and opens the server's one-page report. "
            "Submits class and segmentation corrections, starts trainings and fetches the next sample; shows a "
            "task's model history (admins roll it back) and lets reviewers approve final labels. "
            "Research use only; not for clinical decisions."
        )
        self.parent.acknowledgementText = "Built on MONAI Label and 3D Slicer."


@parameterNodeWrapper
class MRILabelParameterNode:
    """The panel's state, saved with the scene (the password is not part of it)."""

    serverUrl: str = ""
    maxUploadMB: Annotated[float, WithinRange(1.0, 100000.0)] = 512.0
    inputVolume: vtkMRMLScalarVolumeNode
    task: str = ""
    segmentation: vtkMRMLSegmentationNode
    trainTask: str = ""
    epochs: Annotated[int, WithinRange(1, 1000)] = 10
    strategy: str = ""
    historyTask: str = ""


class MRILabelWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: shows things and calls :class:`MRILabelLogic`, nothing else."""

    def __init__(self, parent=None):
        # Everything setup() uses or sets exists before the base __init__, which itself runs setup() when the widget
        # has no parent; nothing is reset after it.
        self.logic = None
        self.ui = None
        self.jobs = JobRunner()  # the actions: one at a time
        self.trainingJobs = JobRunner()  # training progress polls, beside the actions
        self.trainingRun = None
        self.trainingTimer = None
        self.jobTimer = None
        self.lastResult = None
        self._measurements = None  # (task, volume node, MeasurementsView) of the measurements shown, or None
        self._uncertaintyTasks = set()  # the server's tasks that offer Show uncertainty (after Connect)
        self._uncertainSlices = None  # (map node ID, axis, [slice index of each list entry]) of the last map
        self._history = None  # the model history last shown (MRILabelLib.history.ModelHistory)
        self._reviewItems = []  # the review list's entries (MRILabelLib.review.ReviewItem), in list order
        self._connected = False
        self._plan = None
        self._then = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._updatingGUI = False
        VTKObservationMixin.__init__(self)
        ScriptedLoadableModuleWidget.__init__(self, parent)

    # --- layout ------------------------------------------------------------------------------------------------

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MRILabel.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        # the .ui connects the top-level widget's mrmlSceneChanged signal to every MRML widget's setMRMLScene
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MRILabelLogic()

        self.ui.usernameEdit.text = qt.QSettings().value(SETTINGS_USER_KEY, "")
        buttons = {
            "connectButton": self.onConnect,
            "runButton": self.onRunTask,
            "camButton": self.onShowCam,
            "uncertaintyButton": self.onShowUncertainty,
            "submitClassButton": self.onSubmitClass,
            "submitSegmentationButton": self.onSubmitSegmentation,
            "trainButton": self.onStartTraining,
            "nextSampleButton": self.onNextSample,
            "refreshHistoryButton": self.onRefreshHistory,
            "rollbackButton": self.onRollBack,
            "refreshReviewsButton": self.onRefreshReviews,
            "loadReviewButton": self.onLoadForReview,
            "approveButton": self.onApprove,
            "needsChangesButton": self.onNeedsChanges,
            "reportButton": self.onReport,
            "cancelButton": self.onCancel,
        }
        for name, handler in buttons.items():
            getattr(self.ui, name).clicked.connect(handler)
        # task and strategy lists come from the server, so these combo boxes are kept in the parameter node here
        # (the wrapper binds a QComboBox only to a fixed list of choices)
        self.ui.taskCombo.currentTextChanged.connect(self.onTaskChanged)
        # another volume: the measurements shown and the study fields belonged to the previous one
        self.ui.volumeSelector.currentNodeChanged.connect(self.onVolumeChanged)
        self.ui.trainTaskCombo.currentTextChanged.connect(lambda text: self._remember("trainTask", text))
        self.ui.strategyCombo.currentTextChanged.connect(lambda text: self._remember("strategy", text))
        self.ui.historyTaskCombo.currentTextChanged.connect(self.onHistoryTaskChanged)
        self.ui.reviewStatusCombo.currentTextChanged.connect(self.onReviewStatusChanged)
        # a click (or Enter) on an entry of the uncertain-slice list shows that slice
        self.ui.uncertaintyList.itemClicked.connect(self.onUncertainSliceClicked)
        self.ui.uncertaintyList.itemActivated.connect(self.onUncertainSliceClicked)

        self.jobTimer = qt.QTimer()
        self.jobTimer.setInterval(JOB_POLL_MS)
        self.jobTimer.timeout.connect(self.onJobTimer)
        self.trainingTimer = qt.QTimer()
        self.trainingTimer.setInterval(TRAINING_POLL_MS)
        self.trainingTimer.timeout.connect(self.onTrainingTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAddedEvent, self.onNodeAdded)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onNodeAdded)

        self.initializeParameterNode()
        self._clearUncertainty()
        self._clearMeasurements()
        self._setBusy(False)

    def cleanup(self):
        """Called when the application closes or the module is reloaded."""
        self._abortJob(None)
        self.trainingJobs.cancel()
        for timer in (self.jobTimer, self.trainingTimer):
            if timer is not None:
                timer.stop()
        self.removeObservers()
        if self.logic is not None:
            self.logic.cleanTemporaryFiles(removeFolder=True)

    def onReload(self):
        """Reload MRILabelLib's modules (each after those it imports), then this module, as Slicer's modules with
        a Lib package do: otherwise Reload would re-run MRILabel.py against the old package."""
        for name in LIB_MODULES:
            module = importlib.import_module(f"MRILabelLib.{name}")
            importlib.reload(module)
        importlib.reload(importlib.import_module("MRILabelLib"))
        ScriptedLoadableModuleWidget.onReload(self)

    # --- parameter node ----------------------------------------------------------------------------------------

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)

    def onSceneStartClose(self, caller, event):
        """The scene closes: cancel the running action (its nodes are going), empty the work folder, and drop the
        parameter node (it is reset with the scene)."""
        self._abortJob(None)
        self.logic.cleanTemporaryFiles()
        self._clearUncertainty()
        self._clearMeasurements()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.serverUrl:
            self._parameterNode.serverUrl = str(qt.QSettings().value(SETTINGS_URL_KEY, DEFAULT_URL) or DEFAULT_URL)

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = inputParameterNode
        if self._parameterNode is not None:
            # widgets with a SlicerParameterName property in the .ui (URL, upload limit, volume, segmentation,
            # epochs) follow the parameter node both ways
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
            self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None):
        """Select the stored task, training task and strategy where the lists (from the server) hold them."""
        if self._parameterNode is None or self._updatingGUI:
            return
        self._updatingGUI = True
        try:
            for combo, name in (
                (self.ui.taskCombo, "task"),
                (self.ui.trainTaskCombo, "trainTask"),
                (self.ui.strategyCombo, "strategy"),
                (self.ui.historyTaskCombo, "historyTask"),
            ):
                self._select(combo, getattr(self._parameterNode, name))
        finally:
            self._updatingGUI = False

    def _remember(self, name, value):
        if self._parameterNode is not None and not self._updatingGUI and value:
            setattr(self._parameterNode, name, value)

    @staticmethod
    def _select(combo, value):
        if not value:
            return
        index = combo.findText(value)
        if isinstance(index, int) and index >= 0:
            combo.setCurrentIndex(index)

    def _fillCombo(self, combo, names, current=None):
        self._updatingGUI = True
        try:
            combo.clear()
            for name in names:
                combo.addItem(name)
            if current in names:
                combo.setCurrentIndex(list(names).index(current))
        finally:
            self._updatingGUI = False

    # --- feedback ----------------------------------------------------------------------------------------------

    def _showStatus(self, text):
        self.ui.statusLabel.setText(text)

    def _showError(self, error):
        sentence = self.logic.describeError(error)
        self._showStatus(sentence)
        slicer.util.errorDisplay(sentence, windowTitle=WINDOW_TITLE)

    def _guarded(self, action, *args):
        """Run a GUI-thread step (preparing files, loading results) under slicer.util.tryWithErrorDisplay with the
        wait cursor, which restores the cursor before the error box opens; a failure becomes one plain sentence
        in the status line and the box. Returns the step's value, or None after a failure."""
        try:
            with slicer.util.tryWithErrorDisplay(show=False, waitCursor=True):
                return action(*args)
        except Exception as error:  # every failure becomes a sentence, never a traceback
            logging.debug("MRI Label: %s failed", getattr(action, "__name__", action), exc_info=True)
            self._showError(error)
            return None

    def _actionButtons(self):
        return [
            self.ui.connectButton,
            self.ui.runButton,
            self.ui.camButton,
            self.ui.uncertaintyButton,
            self.ui.submitClassButton,
            self.ui.submitSegmentationButton,
            self.ui.trainButton,
            self.ui.nextSampleButton,
            self.ui.refreshHistoryButton,
            self.ui.rollbackButton,
            self.ui.refreshReviewsButton,
            self.ui.loadReviewButton,
            self.ui.approveButton,
            self.ui.needsChangesButton,
            self.ui.reportButton,
        ]

    def _setBusy(self, busy):
        for button in self._actionButtons():
            button.enabled = not busy
        self.ui.cancelButton.enabled = busy
        self.ui.cancelButton.visible = busy
        self.ui.jobProgressBar.visible = busy
        if not busy:
            self._updateUncertaintyButton()
            self._updateReportButton()

    def _updateUncertaintyButton(self):
        """*Show uncertainty* is offered for the tasks whose server info allows it (segmentation tasks where it says
        nothing), while no action runs."""
        task = self.ui.taskCombo.currentText
        self.ui.uncertaintyButton.enabled = not self.jobs.busy and task in self._uncertaintyTasks

    # --- running actions ---------------------------------------------------------------------------------------

    def _start(self, plan, then=None):
        """Run a plan's server work in the worker; ``then(value)`` shows what its finish step returned."""
        if plan is None:
            return
        if self.jobs.busy:  # a click that reached us while a run is active starts nothing
            plan.cleanup()
            return
        self._plan, self._then = plan, then
        self.jobs.start(plan.title, plan.work)
        self._setBusy(True)
        self.ui.jobProgressBar.setRange(0, 0)  # busy indicator until the work reports a fraction
        self._showStatus(f"{plan.title} ...")
        self.jobTimer.start()

    def _launch(self, build, *args, then=None):
        """Build a plan on the GUI thread (the logic prepares files there) and run it, unless an action runs."""
        if self.jobs.busy:
            return
        self._start(self._guarded(build, *args), then)

    def onJobTimer(self):
        """Show the running job's progress; once it ended, load its answer (GUI thread) and show it."""
        running = self.jobs.job
        if running is not None and not running.done:
            message, fraction = running.snapshot()
            self._showStatus(message)
            if fraction is not None:
                self.ui.jobProgressBar.setRange(0, 100)
                self.ui.jobProgressBar.setValue(int(round(100 * fraction)))
            return
        job = self.jobs.poll()
        if self.jobTimer is not None:
            self.jobTimer.stop()
        plan, then, self._plan, self._then = self._plan, self._then, None, None
        if job is None or plan is None:
            return
        try:
            if job.error is not None:
                self._showError(job.error)
                return
            value = self._guarded(plan.finish, job.result)
            if value is not None and then is not None:
                then(value)
        finally:
            plan.cleanup()
            self._setBusy(False)
            self.refreshHiddenVolumes()

    def _abortJob(self, message):
        """Cancel and detach the running job (its late answer is dropped), clean its files, free the buttons."""
        job = self.jobs.cancel()
        plan, self._plan, self._then = self._plan, None, None
        if self.jobTimer is not None:
            self.jobTimer.stop()
        if plan is not None:
            plan.cleanup()
        if self.ui is not None:
            self._setBusy(False)
            if job is not None and message is not None:
                self._showStatus(message)
        return job

    def onCancel(self):
        job = self.jobs.job
        if job is not None:
            self._abortJob(plain_sentence(Cancelled(job.title)))

    def onNodeAdded(self, caller=None, event=None):
        self.refreshHiddenVolumes()

    def refreshHiddenVolumes(self):
        """Keep class-activation maps and other overlays out of the volume selector (label maps are hidden by
        type in the .ui)."""
        if self.ui is None or self.logic is None:
            return
        self.ui.volumeSelector.sortFilterProxyModel().hiddenNodeIDs = self.logic.overlayNodeIDs()

    # --- handlers ----------------------------------------------------------------------------------------------

    def onConnect(self):
        url, username = self.ui.serverUrlEdit.text.strip(), self.ui.usernameEdit.text.strip()
        password = self.ui.passwordEdit.text

        def connected(tasks):
            qt.QSettings().setValue(SETTINGS_URL_KEY, url)
            qt.QSettings().setValue(SETTINGS_USER_KEY, username)
            stored = self._parameterNode
            self._fillCombo(self.ui.taskCombo, [t.name for t in tasks], stored.task if stored else None)
            self._uncertaintyTasks = {t.name for t in tasks if t.offers_uncertainty}
            trainable = [t.name for t in tasks if t.trainable]
            self._fillCombo(self.ui.trainTaskCombo, trainable, stored.trainTask if stored else None)
            self._fillCombo(self.ui.strategyCombo, self.logic.strategies(), stored.strategy if stored else None)
            self._fillCombo(self.ui.historyTaskCombo, trainable, stored.historyTask if stored else None)
            self._connected = True
            self._clearHistory()
            self._clearReviews()
            self._updateUncertaintyButton()
            self._showStatus(f"Connected to {url}: {len(tasks)} tasks.")

        self._launch(self.logic.connect, url, float(self.ui.maxUploadSpin.value), username, password, then=connected)

    def onRunTask(self):
        task, volume = self.ui.taskCombo.currentText, self.ui.volumeSelector.currentNode()

        def show(answer):
            result, segmentationNode = answer
            self.lastResult = result
            self.ui.resultSummaryLabel.setText(result.summary())
            rows = getattr(result, "rows", [])
            self.ui.resultTable.setRowCount(len(rows))
            for index, row in enumerate(rows):
                self.ui.resultTable.setItem(index, 0, qt.QTableWidgetItem(row.name))
                self.ui.resultTable.setItem(index, 1, qt.QTableWidgetItem(f"{row.probability:.3f}"))
                self.ui.resultTable.setItem(index, 2, qt.QTableWidgetItem("yes" if row.predicted else ""))
            self._showMeasurements(measurement_view(getattr(result, "raw", None), task), task, volume)
            if rows:
                self._fillCombo(self.ui.classCombo, self.logic.classesOf(task), current=result.label)
            if segmentationNode is not None:
                self.ui.segmentationSelector.setCurrentNode(segmentationNode)
            self._showStatus(f"{task} finished.")

        self._launch(self.logic.runTask, task, volume, self._studyFields(), then=show)

    def onTaskChanged(self, text):
        self._remember("task", text)
        self._updateUncertaintyButton()

    def onShowUncertainty(self):
        task, volume = self.ui.taskCombo.currentText, self.ui.volumeSelector.currentNode()
        self._launch(self.logic.loadUncertaintyMap, task, volume, then=self._showUncertainty)

    def _showUncertainty(self, answer):
        """List the slices to correct first (each entry shows its slice when clicked) under the summary text."""
        node, uncertainty = answer
        summary = uncertainty.summary
        self.ui.uncertaintyLabel.setText(uncertainty.message())
        self.ui.uncertaintyList.clear()
        rows = summary.rows() if summary is not None else []
        for row in rows:
            self.ui.uncertaintyList.addItem(row)
        self.ui.uncertaintyList.visible = bool(rows)
        self._uncertainSlices = (
            (node.GetID(), summary.axis, [s.slice for s in summary.slices]) if summary is not None else None
        )
        hint = "; click a slice in the list to show it" if rows else ""
        self._showStatus(f"{node.GetName()} shown{hint}.")

    def _clearUncertainty(self):
        self._uncertainSlices = None
        self.ui.uncertaintyLabel.setText("")
        self.ui.uncertaintyList.clear()
        self.ui.uncertaintyList.visible = False

    def onUncertainSliceClicked(self, item):
        if self._uncertainSlices is None:
            return
        mapNodeId, axis, indices = self._uncertainSlices
        row = self.ui.uncertaintyList.row(item)
        if not isinstance(row, int) or not 0 <= row < len(indices):
            return
        answer = self._guarded(self.logic.jumpToSlice, mapNodeId, axis, indices[row])
        if answer is not None:
            self._showStatus(answer[1])

    def onShowCam(self):
        task, volume = self.ui.taskCombo.currentText, self.ui.volumeSelector.currentNode()
        self._launch(self.logic.loadClassActivationMap, task, volume, then=lambda answer: self._showStatus(answer[1]))

    def onSubmitClass(self):
        task, volume = self.ui.taskCombo.currentText, self.ui.volumeSelector.currentNode()
        label = self.ui.classCombo.currentText
        self._launch(
            self.logic.submitClass,
            task,
            volume,
            label,
            then=lambda answer: self._showStatus(f"Recorded class {label} for {task}."),
        )

    def onSubmitSegmentation(self):
        task, segmentation = self.ui.taskCombo.currentText, self.ui.segmentationSelector.currentNode()
        self._launch(
            self.logic.submitSegmentation,
            task,
            segmentation,
            then=lambda answer: self._showStatus("Segmentation saved on the server as the final label."),
        )

    def onStartTraining(self):
        task, epochs = self.ui.trainTaskCombo.currentText, int(self.ui.epochsSpin.value)

        def started(run):
            self.trainingRun = run
            self.ui.trainingProgressBar.setValue(0)
            self.ui.trainingLabel.setText(f"{task}: training submitted.")
            self.trainingTimer.start()

        self._launch(self.logic.startTraining, task, epochs, then=started)

    def onTrainingTimer(self):
        """Each tick: show the last progress answer, then ask for the next one in the worker (one at a time)."""
        finished = self.trainingJobs.poll()
        if finished is not None:
            if finished.error is not None:
                self.trainingTimer.stop()
                self.trainingRun = None
                self._showError(finished.error)
                return
            state = finished.result
            self.ui.trainingProgressBar.setValue(int(round(100 * state.fraction)))
            self.ui.trainingLabel.setText(state.message())
            if state.finished:
                self.trainingTimer.stop()
                self.trainingRun = None
                if state.status != "DONE":
                    self._showError(self.logic.trainingFailure(state))
                return
        if self.trainingRun is None:
            self.trainingTimer.stop()
            return
        if not self.trainingJobs.busy:
            try:
                plan = self.logic.trainingProgress(self.trainingRun)
            except Exception as error:
                self.trainingTimer.stop()
                self.trainingRun = None
                self._showError(error)
                return
            self.trainingJobs.start(plan.title, plan.work)

    def onNextSample(self):
        def show(node):
            if node is False:
                self._showStatus("The strategy found no image left to label.")
                return
            self.ui.volumeSelector.setCurrentNode(node)
            self._showStatus(f"Loaded next sample {node.GetName()}.")

        self._launch(self.logic.nextSample, self.ui.strategyCombo.currentText, then=show)

    # --- measurements and the report ------------------------------------------------------------------------------

    def _studyFields(self):
        """The study fields as typed (checked by the logic): subject and study date go with every run, age and sex
        with the report too."""
        return {
            "subject": self.ui.subjectEdit.text,
            "study_date": self.ui.studyDateEdit.text,
            "age": self.ui.ageEdit.text,
            "sex": self.ui.sexCombo.currentText,
        }

    def _clearStudyFields(self):
        for edit in (self.ui.subjectEdit, self.ui.studyDateEdit, self.ui.ageEdit):
            edit.setText("")
        self.ui.sexCombo.setCurrentIndex(0)  # "not given"

    def _showMeasurements(self, view, task=None, volume=None):
        """Fill the Measurements section with a :class:`MRILabelLib.measurements.MeasurementsView` (None: empty it);
        Report is offered where the task makes one."""
        self._measurements = (task, volume, view) if view is not None else None
        rows = view.rows if view is not None else []
        self.ui.measurementsTable.setRowCount(len(rows))
        for index, row in enumerate(rows):
            self.ui.measurementsTable.setItem(index, 0, qt.QTableWidgetItem(row.label))
            self.ui.measurementsTable.setItem(index, 1, qt.QTableWidgetItem(("⚠ " if row.flagged else "") + row.value))
        # the labels' column fits them, the values' column takes the rest (.ui) and long values wrap onto more lines
        self.ui.measurementsTable.resizeColumnToContents(0)
        self.ui.measurementsTable.resizeRowsToContents()
        if view is None:
            title = NOTHING_MEASURED
        else:
            title = f"{task} on {volume.GetName() if volume is not None else 'the volume'}"
            if not view.reportable:
                title += f" ({task} makes no one-page report)"
        self.ui.measurementsTitleLabel.setText(title)
        self.ui.measurementsNotesLabel.setText("\n".join(view.notes) if view is not None else "")
        self._updateReportButton()

    def _clearMeasurements(self):
        self._showMeasurements(None)

    def _updateReportButton(self):
        """*Open report* is offered after a result of a task that makes one, while no action runs."""
        shown = self._measurements
        self.ui.reportButton.enabled = not self.jobs.busy and shown is not None and shown[2].reportable

    def onVolumeChanged(self, node):
        """Another volume is selected: the measurements shown and the study fields (subject, study date, age, sex)
        were the previous volume's; both are cleared, so they are never sent with another patient's image."""
        shown = self._measurements[1] if self._measurements is not None else None
        if node is not None and shown is not None and node.GetID() == shown.GetID():
            return
        self._clearMeasurements()
        self._clearStudyFields()

    def onReport(self):
        """The one-page report of the task and volume whose measurements are shown (the study fields as params),
        asked in the worker, saved in the module's work folder and opened with the system's PDF viewer."""
        task, volume, _ = self._measurements or ("", None, None)
        self._launch(
            self.logic.requestReport,
            task,
            volume,
            self._studyFields(),
            then=lambda path: self._guarded(self._openReport, path),
        )

    def _openReport(self, path):
        """Open the saved PDF with the system's viewer (``QDesktopServices.openUrl`` on a file URL)."""
        if qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(path)):
            self._showStatus(f"The report is open in the system's PDF viewer ({path}; removed when the scene closes).")
        else:
            self._showStatus(
                f"The report was saved as {path}, but no PDF viewer opened it; open that file yourself (it is removed "
                "when the scene closes)."
            )

    # --- model history -------------------------------------------------------------------------------------------

    def onHistoryTaskChanged(self, text):
        self._remember("historyTask", text)
        if self._history is not None and self._history.task != text:
            self._clearHistory()

    def _clearHistory(self):
        self._history = None
        self.ui.historyTable.setRowCount(0)
        self.ui.servedLabel.setText("")

    def onRefreshHistory(self):
        self._launch(self.logic.modelHistory, self.ui.historyTaskCombo.currentText, then=self._showHistory)

    def _showHistory(self, history):
        """Fill the table (newest first) and the served checkpoint's line."""
        self._history = history
        rows = history.rows
        self.ui.historyTable.setRowCount(len(rows))
        for index, row in enumerate(rows):
            for column, text in enumerate(row.cells()):
                self.ui.historyTable.setItem(index, column, qt.QTableWidgetItem(text))
        self.ui.servedLabel.setText(history.served_line())
        self._showStatus(history.sentence())

    def onRollBack(self):
        """Ask first (slicer.util.confirmOkCancelDisplay); only an OK sends the rollback."""
        if self.jobs.busy:
            return
        task = self.ui.historyTaskCombo.currentText
        question = self._guarded(self.logic.rollbackQuestion, task, self._history)
        if question is None:
            return
        if not slicer.util.confirmOkCancelDisplay(question, windowTitle=WINDOW_TITLE):
            self._showStatus(f"Rollback of {task} cancelled; nothing was sent.")
            return

        def rolledBack(answer):
            result, history = answer
            if history is not None:
                self._showHistory(history)
            else:
                self._clearHistory()
            self._showStatus(result.sentence())

        self._launch(self.logic.rollBack, task, then=rolledBack)

    # --- review --------------------------------------------------------------------------------------------------

    def _clearReviews(self):
        self._reviewItems = []
        self.ui.reviewList.clear()

    def onReviewStatusChanged(self, text):
        """Another filter: the list is read again (once connected)."""
        self._clearReviews()
        if self._connected and not self.jobs.busy:
            self.onRefreshReviews()

    def onRefreshReviews(self):
        self._launch(self.logic.reviewList, self.ui.reviewStatusCombo.currentText, then=self._showReviews)

    def _showReviews(self, listing):
        self._fillReviews(listing)
        self._showStatus(listing.sentence())

    def _fillReviews(self, listing):
        self._reviewItems = list(listing.items)
        self.ui.reviewList.clear()
        for item in self._reviewItems:
            self.ui.reviewList.addItem(item.text())

    def _selectedReview(self):
        """The review list's selected entry (``QListWidget.currentRow``), or None."""
        row = self.ui.reviewList.currentRow
        if isinstance(row, int) and 0 <= row < len(self._reviewItems):
            return self._reviewItems[row]
        return None

    def onLoadForReview(self):
        item = self._selectedReview()

        def loaded(answer):
            volume, segmentation = answer
            self.ui.volumeSelector.setCurrentNode(volume)
            self.ui.segmentationSelector.setCurrentNode(segmentation)
            self._showStatus(f'Loaded {volume.GetName()} for review; its final label is "{segmentation.GetName()}".')

        self._launch(self.logic.loadForReview, item.image if item else "", item.task if item else None, then=loaded)

    def onApprove(self):
        self._decide("approved")

    def onNeedsChanges(self):
        self._decide("needs_changes")

    def _decide(self, status):
        item = self._selectedReview()

        def decided(decision):
            self.ui.reviewCommentEdit.setPlainText("")
            self._fillReviews(decision.listing)
            self._showStatus(decision.sentence())

        self._launch(
            self.logic.submitReview,
            item.image if item else "",
            status,
            self.ui.reviewCommentEdit.toPlainText(),
            self.ui.reviewStatusCombo.currentText,
            then=decided,
        )


class MRILabelLogic(ScriptedLoadableModuleLogic):
    """Converts Slicer nodes to files and arrays, and delegates to :class:`MRILabelLib.ServerLogic`.

    Every action returns a :class:`~MRILabelLib.jobs.Plan`. Building it runs on the GUI thread (nodes are read,
    files written); ``plan.work`` only talks to the server (no Qt, no MRML); ``plan.finish`` loads the answer into
    nodes on the GUI thread; ``plan.cleanup`` removes the action's temporary files. ``run_plan(plan)`` runs the three
    in turn (scripts, the self-test).
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.server = None
        self.camOpacity = 0.5
        self.camThreshold = 0.2
        self.uncertaintyOpacity = 0.5
        self.uncertaintyThreshold = 0.1  # nearly certain voxels (most of the image) stay uncoloured
        self._workDir = None
        self._onServer = set()  # image ids the server was seen holding (uploaded or fetched) this session
        self._lost = set()  # image ids it was expected to hold but did not: sent again next time

    def getParameterNode(self):
        return MRILabelParameterNode(super().getParameterNode())

    # --- server ------------------------------------------------------------------------------------------------

    def connect(self, serverUrl, maxUploadMB=512.0, username="", password=""):
        """A plan: point the module at ``serverUrl``, log in where the server asks for it; its value is the tasks."""
        folder = self.temporaryFolder()

        def work(progress):
            progress(f"Connecting to {serverUrl}")
            server = ServerLogic(serverUrl, max_upload_mb=maxUploadMB, work_dir=folder)
            server.sign_in(username, password)
            return server, server.tasks(refresh=True)

        def finish(answer):
            self.server, tasks = answer
            self._onServer.clear()
            self._lost.clear()
            return tasks

        return Plan(f"Connecting to {serverUrl}", work, finish)

    def _server(self):
        if self.server is None:
            raise ValueError("serverUrl is not set: enter the server URL and press Connect first.")
        return self.server

    def strategies(self):
        return self._server().strategies()

    def classesOf(self, task):
        return self._server().task(task).classes

    @staticmethod
    def describeError(error):
        """The one plain sentence shown for ``error``."""
        return plain_sentence(error)

    # --- temporary files ---------------------------------------------------------------------------------------

    def temporaryFolder(self):
        """The module's work folder (created when missing); each action works in a subfolder it removes after."""
        if not self._workDir or not os.path.isdir(self._workDir):
            self._workDir = tempfile.mkdtemp(prefix="mrilabel_")
            if self.server is not None:
                self.server.work_dir = self._workDir
        return self._workDir

    def _actionFolder(self):
        return tempfile.mkdtemp(prefix="action_", dir=self.temporaryFolder())

    def cleanTemporaryFiles(self, removeFolder=False):
        """Empty the work folder (scene close), or remove it (module cleanup)."""
        folder = self._workDir
        if not folder or not os.path.isdir(folder):
            return
        if removeFolder:
            shutil.rmtree(folder, ignore_errors=True)
            self._workDir = None
            return
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.remove(path)
                except OSError:
                    pass

    @staticmethod
    def _removeFolder(folder):
        return lambda: shutil.rmtree(folder, ignore_errors=True)

    # --- geometry ----------------------------------------------------------------------------------------------

    @staticmethod
    def _requireNode(node, what):
        if node is None:
            raise ValueError(f"{what} must be selected first.")
        return node

    @staticmethod
    def _ijkToRas(volumeNode):
        matrix = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(matrix)
        return slicer.util.arrayFromVTKMatrix(matrix)

    @staticmethod
    def _voxelShape(volumeNode):
        """The voxel array's shape (K, J, I), components of a vector volume left out."""
        return tuple(reversed(volumeNode.GetImageData().GetDimensions()))

    def _geometry(self, volumeNode):
        return geometry(self._voxelShape(volumeNode), self._ijkToRas(volumeNode))

    @staticmethod
    def _parentToWorld(node):
        """The node's parent transform as a matrix to world, a text for a non-linear one, or None without one."""
        parent = node.GetParentTransformNode()
        if parent is None:
            return None
        if not parent.IsTransformToWorldLinear():
            return f"non-linear:{parent.GetID()}:{parent.GetMTime()}"
        matrix = vtk.vtkMatrix4x4()
        parent.GetMatrixTransformToWorld(matrix)
        return slicer.util.arrayFromVTKMatrix(matrix)

    def placeLikeSource(self, resultNode, sourceNode):
        """Put a result loaded from the server where its source volume is.

        A one-slice input (PNG/JPG, which Slicer loads with IJK->RAS diag(-1, -1, 1)) comes back with the identity
        the server writes: the result takes the source's IJK->RAS. A volume input was sent in world coordinates
        (hardened), so its result is converted back into the source's own coordinates. Either way the result goes
        under the source's parent transform, so it follows the volume. (Under a non-linear transform the upload was
        resampled in world space: the result stays in world coordinates, under no transform.)

        Returns:
            True when the result is now in the source's own coordinates (so the grids can be compared).
        """
        parentToWorld = self._parentToWorld(sourceNode)
        sourceShape = self._voxelShape(sourceNode)
        if is_single_slice(sourceShape) and self._voxelShape(resultNode) == sourceShape:
            resultNode.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(self._ijkToRas(sourceNode)))
        elif isinstance(parentToWorld, str):
            return False
        elif parentToWorld is not None:
            local = world_to_local(self._ijkToRas(resultNode), parentToWorld)
            resultNode.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(local))
        if parentToWorld is not None:
            resultNode.SetAndObserveTransformNodeID(sourceNode.GetTransformNodeID())
        return True

    @staticmethod
    def _detachFromFile(node):
        """Forget the temporary file a node was loaded from (it is deleted): a saved scene writes the node's data
        instead of referring to a file that no longer exists."""
        storage = node.GetStorageNode()
        if storage is not None:
            slicer.mrmlScene.RemoveNode(storage)

    @staticmethod
    def _removeWithHelpers(node):
        """Remove a temporary node and its storage and display nodes."""
        if node is None:
            return
        helpers = [node.GetStorageNode(), node.GetDisplayNode()]
        slicer.mrmlScene.RemoveNode(node)
        for helper in helpers:
            if helper is not None and slicer.mrmlScene.IsNodePresent(helper):
                slicer.mrmlScene.RemoveNode(helper)

    # --- nodes <-> server images -------------------------------------------------------------------------------

    def volumeFingerprint(self, volumeNode):
        """Voxels, spacing, IJK->RAS (origin and axis directions) and the parent transform's place, hashed."""
        return volume_fingerprint(
            slicer.util.arrayFromVolume(volumeNode),
            volumeNode.GetSpacing(),
            self._ijkToRas(volumeNode),
            self._parentToWorld(volumeNode),
        )

    def imageIdForVolume(self, volumeNode):
        """The datastore id of a volume: the id it was fetched with (while it is unchanged), else
        ``slicer_<fingerprint>``. Not the volume's name: names loaded from DICOM often carry the patient's name,
        and ids are stored and logged. The fingerprint covers where the voxels are, so a volume whose transform was
        hardened is a new image for the server."""
        known = volumeNode.GetAttribute(IMAGE_ID_ATTRIBUTE)
        stored = volumeNode.GetAttribute(FINGERPRINT_ATTRIBUTE)
        if known and not stored:
            return known
        fingerprint = self.volumeFingerprint(volumeNode)
        if known and stored == fingerprint:
            return known
        return safe_image_id("slicer", fingerprint)

    def exportForUpload(self, volumeNode, folder, imageId):
        """Write the volume as a NIfTI in world coordinates (``slicer.util.exportNode(world=True)``: the user's node
        and its storage node stay as they are). A vector volume is sent as a scalar copy (RGB: luminance)."""
        path = os.path.join(folder, f"{imageId}.nii.gz")
        imageData = volumeNode.GetImageData()
        if imageData is None:
            raise ValueError(f"The volume {volumeNode.GetName()!r} holds no image.")
        vector = volumeNode.IsA("vtkMRMLVectorVolumeNode") or imageData.GetNumberOfScalarComponents() > 1
        source, scalarCopy = volumeNode, None
        if vector:
            voxels = scalar_for_upload(slicer.util.arrayFromVolume(volumeNode), vector=True)
            scalarCopy = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"{imageId} (sent)")
            scalarCopy.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(self._ijkToRas(volumeNode)))
            slicer.util.updateVolumeFromArray(scalarCopy, np.ascontiguousarray(voxels))
            scalarCopy.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
            source = scalarCopy
        try:
            self._exportNode(source, path)
        finally:
            self._removeWithHelpers(scalarCopy)
        return path

    def _exportNode(self, node, path):
        exportNode = getattr(slicer.util, "exportNode", None)
        if callable(exportNode):  # exportNode(node, filename, properties={}, world=False) in Base/Python/slicer/util.py
            written = exportNode(node, path, {}, world=True)
        else:  # a Slicer without exportNode: save a hardened clone, never the user's node
            clone = slicer.modules.volumes.logic().CloneVolume(slicer.mrmlScene, node, f"{node.GetName()} (export)")
            try:
                clone.SetAndObserveTransformNodeID(node.GetTransformNodeID())
                if clone.GetParentTransformNode() is not None:
                    slicer.vtkSlicerTransformLogic().hardenTransform(clone)
                written = slicer.util.saveNode(clone, path)
            finally:
                self._removeWithHelpers(clone)
        if not written or not os.path.isfile(path):
            raise ValueError(f"The volume {node.GetName()!r} could not be written to a temporary file for sending.")

    def _prepareUpload(self, volumeNode, folder):
        """(GUI thread) The volume's image id and, unless the server is known to hold it, the file to send."""
        imageId = self.imageIdForVolume(volumeNode)
        known = imageId in self._onServer or imageId == volumeNode.GetAttribute(IMAGE_ID_ATTRIBUTE)
        if known and imageId not in self._lost:
            return imageId, None
        return imageId, self.exportForUpload(volumeNode, folder, imageId)

    def _stageUpload(self, volumeNode):
        """(GUI thread) A fresh action folder and :meth:`_prepareUpload`'s ``(image id, file or None)`` in it, as
        ``(folder, image id, file)``; the folder is removed again when preparing fails."""
        folder = self._actionFolder()
        try:
            imageId, path = self._prepareUpload(volumeNode, folder)
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return folder, imageId, path

    def _ensureOnServer(self, server, imageId, path, progress):
        """(worker) Send the file unless the server holds the image; with no file, check that it does."""
        if path is None:
            if not server.has_image(imageId):
                self._lost.add(imageId)
                raise ValueError(
                    f"The server does not hold the image {imageId!r} this volume stands for; press the button again "
                    "to send the volume itself"
                )
        else:
            server.ensure_image(imageId, path, progress)
            self._lost.discard(imageId)
        self._onServer.add(imageId)

    def _nodeById(self, nodeId, what):
        node = slicer.mrmlScene.GetNodeByID(nodeId)
        if node is None:
            raise ValueError(f"The {what} was removed from the scene while the server was working.")
        return node

    # --- actions -----------------------------------------------------------------------------------------------

    def runTask(self, task, volumeNode, study=None):
        """A plan: run ``task`` on the volume; its value is ``(result, segmentation node or None)``. ``study``: the
        panel's study fields (:func:`MRILabelLib.report.study_params`; subject and study date are sent, checked
        first)."""
        server = self._server()
        volumeNode = self._requireNode(volumeNode, "A volume")
        params = study_params(**(study or {}))
        folder, imageId, path = self._stageUpload(volumeNode)
        volumeId = volumeNode.GetID()

        def work(progress):
            self._ensureOnServer(server, imageId, path, progress)
            return server.run_task(task, imageId, params=params, progress=progress, folder=folder)

        def finish(result):
            if not isinstance(result, SegmentationResult) or not result.mask_path:
                return result, None
            source = self._nodeById(volumeId, "volume")
            return result, self.loadMaskAsSegmentation(result, source, imageId)

        return Plan(f"Running {task}", work, finish, self._removeFolder(folder))

    def requestReport(self, task, volumeNode, study=None):
        """A plan: the server's one-page report (PDF) of ``task`` on the volume, with the study fields as params
        (:func:`MRILabelLib.report.study_params`, checked before anything is sent); its value is the PDF's path, in
        a folder of the module's work folder (emptied when the scene closes, removed with the module)."""
        server = self._server()
        if not task:
            raise ValueError("Run hippocampus or tumor_seg on a volume first: the report is of the measured result")
        volumeNode = self._requireNode(volumeNode, "The measured volume")
        if not slicer.mrmlScene.IsNodePresent(volumeNode):
            raise ValueError("The measured volume was removed from the scene; select a volume and run the task again")
        params = study_params(**(study or {}), report=True)
        folder, imageId, path = self._stageUpload(volumeNode)
        reports = tempfile.mkdtemp(prefix="report_", dir=self.temporaryFolder())

        def work(progress):
            self._ensureOnServer(server, imageId, path, progress)
            return server.report(task, imageId, params=params, progress=progress, folder=reports)

        def cleanup():
            shutil.rmtree(folder, ignore_errors=True)
            if os.path.isdir(reports) and not os.listdir(reports):  # no report came: no empty folder is left
                os.rmdir(reports)

        return Plan(f"Asking {task} for its report", work, cleanup=cleanup)

    def loadMaskAsSegmentation(self, result, volumeNode, imageId):
        """Import a server mask as a segmentation made for ``volumeNode`` (its image id, task and node ID recorded
        on it, placed under the volume's parent transform)."""
        labelNode = slicer.util.loadLabelVolume(result.mask_path, {"show": False, "singleFile": True})
        try:
            if self.placeLikeSource(labelNode, volumeNode):
                check_aligned(self._geometry(labelNode), self._geometry(volumeNode), what="The mask")
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", f"{volumeNode.GetName()} {result.task}"
            )
            segmentationNode.CreateDefaultDisplayNodes()
            segmentationNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
            segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
            slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelNode, segmentationNode)
        finally:
            self._removeWithHelpers(labelNode)
        namesByValue = {value: name for name, value in result.label_names.items()}
        segmentation = segmentationNode.GetSegmentation()
        for index in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(index)
            segment.SetName(namesByValue.get(segment.GetLabelValue(), segment.GetName()))
        segmentationNode.SetAttribute(TASK_ATTRIBUTE, result.task)
        segmentationNode.SetAttribute(IMAGE_ID_ATTRIBUTE, imageId)
        segmentationNode.SetAttribute(SOURCE_VOLUME_ATTRIBUTE, volumeNode.GetID())
        segmentationNode.SetNodeReferenceID(SOURCE_VOLUME_REFERENCE, volumeNode.GetID())
        return segmentationNode

    def loadClassActivationMap(self, task, volumeNode):
        """A plan: show the classifier's class-activation map over the volume; its value is
        ``(node or None, message)``."""
        server = self._server()
        volumeNode = self._requireNode(volumeNode, "A volume")
        folder, imageId, path = self._stageUpload(volumeNode)
        volumeId = volumeNode.GetID()

        def work(progress):
            self._ensureOnServer(server, imageId, path, progress)
            return server.class_activation_map(task, imageId, progress=progress, folder=folder)

        def finish(mapPath):
            if mapPath is None:
                return None, NO_CAM_SENTENCE
            return self.showClassActivationMap(mapPath, self._nodeById(volumeId, "volume"), task)

        return Plan(f"Asking {task} for its class-activation map", work, finish, self._removeFolder(folder))

    def showClassActivationMap(self, path, volumeNode, task):
        """Load a map file, put it on the volume's grid, check that it lines up, and overlay it in the views."""
        camNode = self._showOverlay(
            path,
            volumeNode,
            f"{volumeNode.GetName()} {task} CAM",
            "The class-activation map",
            self.camThreshold,
            self.camOpacity,
        )
        return camNode, f"Class-activation map of {task} shown over {volumeNode.GetName()}."

    def _showOverlay(self, path, volumeNode, name, what, threshold, opacity):
        """Load a 0..1 map file as a scalar volume over ``volumeNode``: on the volume's grid (its geometry for a 2D
        input, under its parent transform), checked to line up (removed again otherwise, ``what`` naming it in the
        sentence), kept out of the volume selector, values below ``threshold`` hidden, heat colours, window 0..1,
        shown as the foreground with ``opacity``."""
        node = slicer.util.loadVolume(path, {"name": name, "show": False, "singleFile": True})
        try:
            if self.placeLikeSource(node, volumeNode):
                check_aligned(self._geometry(node), self._geometry(volumeNode), what=what)
        except Exception:
            self._removeWithHelpers(node)
            raise
        self._detachFromFile(node)
        node.SetAttribute(ROLE_ATTRIBUTE, OVERLAY_ROLE)
        node.SetNodeReferenceID(SOURCE_VOLUME_REFERENCE, volumeNode.GetID())
        values = slicer.util.arrayFromVolume(node)
        slicer.util.updateVolumeFromArray(node, cam_display_values(values, threshold))
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        display.SetAndObserveColorNodeID(self._heatColorNode().GetID())
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, 1.0)
        slicer.util.setSliceViewerLayers(background=volumeNode, foreground=node, foregroundOpacity=opacity)
        return node

    def loadUncertaintyMap(self, task, volumeNode):
        """A plan: show a segmentation task's voxel uncertainty map over the volume; its value is
        ``(node, UncertaintyMap)`` (the summary lists the slices to correct first)."""
        server = self._server()
        volumeNode = self._requireNode(volumeNode, "A volume")
        server.require_uncertainty(task)  # before anything is sent (from the cached server info)
        folder, imageId, path = self._stageUpload(volumeNode)
        volumeId = volumeNode.GetID()

        def work(progress):
            self._ensureOnServer(server, imageId, path, progress)
            return server.uncertainty_map(task, imageId, progress=progress, folder=folder)

        def finish(answer):
            return self.showUncertaintyMap(answer, self._nodeById(volumeId, "volume"))

        return Plan(f"Asking {task} for its uncertainty map", work, finish, self._removeFolder(folder))

    def showUncertaintyMap(self, answer, volumeNode):
        """Overlay an :class:`~MRILabelLib.results.UncertaintyMap`'s file on the volume (as a class-activation map:
        heat colours, window 0..1, values below ``uncertaintyThreshold`` hidden); returns ``(node, answer)``."""
        node = self._showOverlay(
            answer.path,
            volumeNode,
            f"{volumeNode.GetName()} {answer.task} uncertainty",
            "The uncertainty map",
            self.uncertaintyThreshold,
            self.uncertaintyOpacity,
        )
        node.SetAttribute(TASK_ATTRIBUTE, answer.task)
        return node, answer

    def _ijkToWorld(self, node):
        """The node's IJK->RAS in world coordinates (its linear parent transform applied; a result under a
        non-linear transform is never made: those stay in world coordinates)."""
        parentToWorld = self._parentToWorld(node)
        ijkToRas = self._ijkToRas(node)
        return ijkToRas if parentToWorld is None or isinstance(parentToWorld, str) else parentToWorld @ ijkToRas

    @staticmethod
    def _sliceViews():
        """``(layout name, slice node)`` of the slice views shown in the layout (all of them where none says so),
        Red, Yellow and Green first."""
        nodes = list(slicer.util.getNodesByClass("vtkMRMLSliceNode"))
        mapped = [n for n in nodes if not hasattr(n, "IsMappedInLayout") or n.IsMappedInLayout()]
        order = {"Red": 0, "Yellow": 1, "Green": 2}
        named = [(n.GetLayoutName() or n.GetName(), n) for n in (mapped or nodes)]
        return sorted(named, key=lambda item: order.get(item[0], len(order)))

    def jumpToSlice(self, mapNodeId, axis, sliceIndex):
        """Move the slice view whose plane is closest to the map's slices (normally Red, axial) onto voxel slice
        ``sliceIndex`` along voxel ``axis`` of the map (the server's numbering), keeping the view's orientation and
        pan (``vtkMRMLSliceNode.JumpSliceByOffsetting``). Returns ``(slice node, message)``."""
        node = slicer.mrmlScene.GetNodeByID(mapNodeId or "")
        if node is None:
            raise ValueError("The uncertainty map this list belongs to was removed; press Show uncertainty again")
        ijkToWorld = self._ijkToWorld(node)
        point = slice_center(ijkToWorld, self._voxelShape(node), axis, sliceIndex)
        views = self._sliceViews()
        if not views:
            raise ValueError(f"No slice view is open to show slice {sliceIndex} in; choose a layout with slice views")
        normals = [(name, slicer.util.arrayFromVTKMatrix(view.GetSliceToRAS())[:3, 2]) for name, view in views]
        name = closest_view(normals, slice_normal(ijkToWorld, axis))
        sliceNode = dict(views)[name]
        sliceNode.JumpSliceByOffsetting(*(float(v) for v in point))
        return sliceNode, f"Slice {sliceIndex} of {node.GetName()} shown in the {name} view."

    def overlayNodeIDs(self):
        """IDs of the volumes that are overlays (class-activation maps, uncertainty), not images."""
        return [
            node.GetID()
            for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
            if node.GetAttribute(ROLE_ATTRIBUTE) == OVERLAY_ROLE
        ]

    def _heatColorNode(self):
        name = "MRILabelHeat"
        existing = slicer.mrmlScene.GetFirstNodeByName(name)
        if existing is not None:
            return existing
        table = heat_color_table(256)
        colorNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
        colorNode.SetTypeToUser()
        colorNode.SetNumberOfColors(len(table))
        for index, (red, green, blue, alpha) in enumerate(table):
            colorNode.SetColor(index, str(index), red, green, blue, alpha)
        return colorNode

    def submitClass(self, task, volumeNode, label):
        """A plan: record ``label`` as the correct class of the volume for ``task``."""
        server = self._server()
        volumeNode = self._requireNode(volumeNode, "A volume")
        folder, imageId, path = self._stageUpload(volumeNode)

        def work(progress):
            self._ensureOnServer(server, imageId, path, progress)
            return server.submit_class(task, imageId, label)

        return Plan(f"Recording class {label}", work, cleanup=self._removeFolder(folder))

    def sourceVolumeOf(self, segmentationNode):
        """The volume a segmentation belongs to: the one the panel made it for, else its reference geometry volume
        (the source volume Segment Editor used)."""
        candidates = [
            segmentationNode.GetNodeReference(SOURCE_VOLUME_REFERENCE),
            slicer.mrmlScene.GetNodeByID(segmentationNode.GetAttribute(SOURCE_VOLUME_ATTRIBUTE) or ""),
            segmentationNode.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()),
        ]
        for node in candidates:
            if node is not None:
                return node
        raise ValueError(
            f"The segmentation {segmentationNode.GetName()!r} has no source volume; select its volume as the "
            "source volume in Segment Editor, then submit again"
        )

    def writeFinalLabel(self, segmentationNode, referenceNode, labels, path):
        """Merge the segments into one label map on the reference volume's grid and write it (world coordinates,
        like the image that was sent); returns the segment names."""
        segmentation = segmentationNode.GetSegmentation()
        masks = {}
        for index in range(segmentation.GetNumberOfSegments()):
            segmentId = segmentation.GetNthSegmentID(index)
            name = segmentation.GetNthSegment(index).GetName()
            masks[name] = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, referenceNode)
        label_info_for(masks, labels)  # plain ValueError before any work when a segment is misnamed
        labelNode = slicer.modules.volumes.logic().CreateAndAddLabelVolume(
            slicer.mrmlScene, referenceNode, "MRILabel final"
        )
        try:
            labelNode.SetAndObserveTransformNodeID(referenceNode.GetTransformNodeID())
            slicer.util.updateVolumeFromArray(labelNode, merge_segments(masks, labels))
            self._exportNode(labelNode, path)
        finally:
            self._removeWithHelpers(labelNode)
        return list(masks)

    def submitSegmentation(self, task, segmentationNode):
        """A plan: save the edited segmentation as its own image's ``final`` label (segment names = task labels).

        The image and the grid come from the segmentation, not from the volume selector: a segmentation the panel
        made carries its image id and source volume; one made in Segment Editor uses its reference geometry volume.
        """
        server = self._server()
        segmentationNode = self._requireNode(segmentationNode, "A segmentation")
        task = segmentationNode.GetAttribute(TASK_ATTRIBUTE) or task
        reference = self.sourceVolumeOf(segmentationNode)
        labels = server.task(task).labels
        folder = self._actionFolder()
        try:
            knownId = segmentationNode.GetAttribute(IMAGE_ID_ATTRIBUTE)
            if knownId and knownId not in self._lost:
                imageId, imagePath = knownId, None  # the image the mask was computed on
            else:
                imageId, imagePath = self._prepareUpload(reference, folder)
            labelPath = os.path.join(folder, f"{imageId}_final.nii.gz")
            names = self.writeFinalLabel(segmentationNode, reference, labels, labelPath)
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise

        def work(progress):
            self._ensureOnServer(server, imageId, imagePath, progress)
            progress(f"Saving the segmentation of {imageId} as its final label")
            return server.submit_segmentation(task, imageId, labelPath, names)

        return Plan("Saving the segmentation", work, cleanup=self._removeFolder(folder))

    def startTraining(self, task, epochs):
        server = self._server()
        return Plan(
            f"Starting training of {task}", lambda progress: server.start_training(task, max_epochs=int(epochs))
        )

    def trainingProgress(self, run):
        server = self._server()
        return Plan(f"Training of {run.task}", lambda progress: server.training_progress(run))

    @staticmethod
    def trainingFailure(state):
        """The error describing a training that ended without DONE."""
        return TrainingFailedError(state.task, state.status, state.line)

    def nextSample(self, strategy):
        """A plan: fetch the image ``strategy`` picks; its value is the loaded volume, or False when none is left."""
        server = self._server()
        folder = self._actionFolder()

        def work(progress):
            return server.next_sample(strategy, progress, folder=folder)

        def finish(sample):
            if sample is None:
                return False
            return self.loadSample(sample)

        return Plan(f"Fetching the next sample ({strategy})", work, finish, self._removeFolder(folder))

    def loadSample(self, sample):
        """Load a downloaded sample as one file (not a series of numbered files beside it), mark it with its id and
        fingerprint, and show it."""
        node = slicer.util.loadVolume(sample.path, {"name": sample.image_id, "singleFile": True})
        self._detachFromFile(node)
        node.SetAttribute(IMAGE_ID_ATTRIBUTE, sample.image_id)
        node.SetAttribute(FINGERPRINT_ATTRIBUTE, self.volumeFingerprint(node))
        self._onServer.add(sample.image_id)
        slicer.util.setSliceViewerLayers(background=node, fit=True)
        return node

    # --- model history -----------------------------------------------------------------------------------------

    def modelHistory(self, task):
        """A plan: read the task's model history; its value is a :class:`MRILabelLib.history.ModelHistory`."""
        server = self._server()
        return Plan(f"Reading the model history of {task}", lambda progress: server.model_history(task))

    @staticmethod
    def rollbackQuestion(task, history=None):
        """What the panel asks before rolling ``task`` back (``history``: the task's last history read, or None)."""
        return rollback_question(task, history)

    def rollBack(self, task):
        """A plan: serve the task's newest archived checkpoint again (admin), then read its history again; its value
        is ``(RollbackResult, ModelHistory or None)`` (None when the history could not be read after the rollback)."""
        server = self._server()
        rollback_question(task)  # a sentence before anything is sent when no task is chosen

        def work(progress):
            result = server.roll_back(task)
            progress(f"Reading the model history of {task}")
            try:
                history = server.model_history(task)
            except Cancelled:
                raise
            except Exception:  # the rollback happened: its sentence is shown without the table
                logging.debug("MRI Label: history after the rollback not read", exc_info=True)
                history = None
            return result, history

        return Plan(f"Rolling {task} back", work)

    # --- review ------------------------------------------------------------------------------------------------

    def reviewList(self, status):
        """A plan: the final labels in review state ``status`` (``pending``, ``approved``, ``needs changes``); its
        value is a :class:`MRILabelLib.review.ReviewList`."""
        server = self._server()
        state = review_state(status, REVIEW_STATES)  # a sentence before anything is sent
        return Plan(f"Reading the {status} final labels", lambda progress: ReviewList(state, server.reviews(state)))

    def submitReview(self, imageId, status, comment, listStatus):
        """A plan: approve the image's final label or ask for changes, then read the review list (state
        ``listStatus``) again; its value is a :class:`MRILabelLib.review.ReviewDecision`. The image, the decision and
        the comment (at most 2,000 characters) are checked before anything is sent."""
        server = self._server()
        if not imageId:
            raise ValueError("Select an image in the review list first")
        decision = review_state(status, DECISIONS)
        comment = check_comment(comment)
        listed = review_state(listStatus, REVIEW_STATES)

        def work(progress):
            review = server.review(imageId, decision, comment)
            progress("Reading the review list again")
            return ReviewDecision(imageId, review, ReviewList(listed, server.reviews(listed)))

        return Plan(f"Sending the review of {imageId}", work)

    def loadForReview(self, imageId, task=None):
        """A plan: fetch an image and its final label; its value is ``(volume, segmentation)`` (see
        :meth:`loadReviewSample`)."""
        server = self._server()
        if not imageId:
            raise ValueError("Select an image in the review list first")
        folder = self._actionFolder()

        def work(progress):
            return server.fetch_for_review(imageId, task, progress, folder=folder)

        return Plan(f"Loading {imageId} for review", work, self.loadReviewSample, self._removeFolder(folder))

    def loadReviewSample(self, sample):
        """Load a downloaded image as a fetched sample is loaded (:meth:`loadSample`: one file, its datastore id and
        fingerprint) and its final label as a segmentation made for it (:meth:`loadMaskAsSegmentation`: the label
        checked against the image's grid, segments named by the task's labels); returns ``(volume, segmentation)``.
        The segmentation can be edited and submitted again as the image's final label (which makes it pending)."""
        volume = self.loadSample(NextSample(sample.image_id, sample.image_path, {}))
        result = SegmentationResult(sample.task or "", sample.label_path, sample.label_names, None, {})
        segmentation = self.loadMaskAsSegmentation(result, volume, sample.image_id)
        segmentation.SetName(f"{sample.image_id} final label" + (f" ({sample.task})" if sample.task else ""))
        if not sample.task:  # a label of no served task: Submit uses the task chosen in the panel
            segmentation.SetAttribute(TASK_ATTRIBUTE, "")
        return volume, segmentation


class MRILabelTest(ScriptedLoadableModuleTest):
    """Runs in Slicer (Reload and Test), without a server: mask import into a segmentation, export of a corrected
    segment, class-activation maps and uncertainty maps over a volume and over a one-slice picture, a jump to the
    most uncertain slice (where the layout has slice views; the views' slice offsets are restored afterwards), an
    image and its final label loaded for review, and the geometry checks (voxel size, origin and axis directions
    refused with a sentence naming what differs, a result placed under the source's parent transform, RGB sent as
    grey). It leaves nothing behind (scene cleared, temporary files removed, slice views where they were). With
    MRILABEL_TEST_SERVER_URL set it also connects and lists the server's tasks (nothing is sent)."""

    def setUp(self):
        slicer.mrmlScene.Clear()
        self.logic = MRILabelLogic()

    def tearDown(self):
        slicer.mrmlScene.Clear()
        self.logic.cleanTemporaryFiles(removeFolder=True)

    def runTest(self):
        for test in (
            self.test_results_and_overlay,
            self.test_mask_import_and_export,
            self.test_cam_overlays,
            self.test_uncertainty_overlay,
            self.test_review_loading,
            self.test_geometry_checks,
            self.test_server_connection,
        ):
            self.setUp()
            try:
                test()
            finally:
                self.tearDown()

    # helpers: volumes made in memory, "server files" written with the same exporter the uploads use

    def _volume(self, name, array, ijkToRas=None, className="vtkMRMLScalarVolumeNode"):
        node = slicer.mrmlScene.AddNewNodeByClass(className, name)
        node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(np.eye(4) if ijkToRas is None else ijkToRas))
        slicer.util.updateVolumeFromArray(node, array)
        return node

    def _serverFile(self, name, array, ijkToRas, className="vtkMRMLScalarVolumeNode"):
        """Write ``array`` as the server would answer it; the node used for writing is removed again."""
        node = self._volume(name, array, ijkToRas, className)
        path = os.path.join(self.logic.temporaryFolder(), f"{name}.nii.gz")
        self.logic._exportNode(node, path)
        self.logic._removeWithHelpers(node)
        return path

    def _uncertaintyAnswer(self, name, values, ijkToRas):
        """The server's answer for the normalised-entropy map ``values`` (numpy order K, J, I): the map file (see
        :meth:`_serverFile`) and its summary along K, each slice with voxels at or over 0.5 listed, most first."""
        path = self._serverFile(name, values, ijkToRas)
        counts, means = (values >= 0.5).sum(axis=(1, 2)), values.mean(axis=(1, 2))
        listed = sorted((k for k in range(values.shape[0]) if counts[k]), key=lambda k: -int(counts[k]))
        summary = {
            "axis": 2,
            "mean": float(values.mean()),
            "max": float(values.max()),
            "uncertain_from": 0.5,
            "slices": [{"slice": k, "uncertain_voxels": int(counts[k]), "mean": float(means[k])} for k in listed],
        }
        return read_uncertainty({"uncertainty": summary}, path, "selftest")

    def test_results_and_overlay(self):
        result = parse_classification({"label": "T2", "probabilities": {"T1": 0.25, "T2": 0.75}})
        self.assertEqual([row.name for row in result.rows if row.predicted], ["T2"])
        measurements = parse_measurements({"mm3": {"a": 2.0}, "total_mm3": 2.0})
        self.assertIn("Total: 2.0 mm³", measurements.text())
        view = measurement_view(
            {"measurements": {"lesions": {"volume_ml": 1.5, "components": 1}}, "change_over_time": {"computed": False}}
        )
        self.assertEqual(view.rows[0].value, "1.50 mL")
        self.assertTrue(view.reportable)
        self.assertEqual(safe_image_id("My volume 1"), "My_volume_1")
        self.delayDisplay("Results and overlay arithmetic passed")

    def test_mask_import_and_export(self):
        ijkToRas = np.diag([0.9, 0.9, 3.0, 1.0])
        ijkToRas[:3, 3] = (-40.0, 12.0, 5.0)
        volume = self._volume("MRILabel self-test volume", np.random.default_rng(0).normal(size=(8, 24, 32)), ijkToRas)
        mask = np.zeros((8, 24, 32), np.uint8)
        mask[3:5, 8:14, 10:20] = 1
        maskPath = self._serverFile("MRILabel self-test mask", mask, ijkToRas, "vtkMRMLLabelMapVolumeNode")
        result = SegmentationResult("selftest", maskPath, {"tumor": 1}, None, {})
        segmentationNode = self.logic.loadMaskAsSegmentation(result, volume, "selftest_image")
        segmentation = segmentationNode.GetSegmentation()
        self.assertEqual(segmentation.GetNumberOfSegments(), 1)
        self.assertEqual(segmentation.GetNthSegment(0).GetName(), "tumor")
        self.assertIs(self.logic.sourceVolumeOf(segmentationNode), volume)
        segmentId = segmentation.GetNthSegmentID(0)
        imported = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volume)
        np.testing.assert_array_equal(imported > 0, mask > 0)
        self.delayDisplay("Mask imported into a segmentation on the volume's grid")

        corrected = mask.copy()
        corrected[3:5, 8:14, 20:24] = 1  # the "correction": the tumor grows by a few voxels
        slicer.util.updateSegmentBinaryLabelmapFromArray(corrected, segmentationNode, segmentId, volume)
        finalPath = os.path.join(self.logic.temporaryFolder(), "final.nii.gz")
        names = self.logic.writeFinalLabel(segmentationNode, volume, {"tumor": 1}, finalPath)
        self.assertEqual(names, ["tumor"])
        final = slicer.util.loadLabelVolume(finalPath, {"show": False, "singleFile": True})
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(final), corrected)
        check_aligned(self.logic._geometry(final), self.logic._geometry(volume), what="The exported label map")
        self.delayDisplay("Corrected segment exported as a label map on the volume's grid")

    def test_cam_overlays(self):
        ijkToRas = np.diag([1.0, 1.0, 2.0, 1.0])
        volume = self._volume("MRILabel self-test head", np.zeros((6, 16, 16), np.float32), ijkToRas)
        camPath = self._serverFile("MRILabel self-test cam", np.full((6, 16, 16), 0.6, np.float32), ijkToRas)
        camNode, _ = self.logic.showClassActivationMap(camPath, volume, "selftest")
        self.assertEqual(camNode.GetAttribute(ROLE_ATTRIBUTE), OVERLAY_ROLE)
        self.assertIn(camNode.GetID(), self.logic.overlayNodeIDs())
        self.assertIsNone(camNode.GetStorageNode())
        self.delayDisplay("Class-activation map shown over a volume")

        pictureIjkToRas = np.diag([-1.0, -1.0, 1.0, 1.0])  # how Slicer loads a PNG or JPG
        picture = self._volume("MRILabel self-test picture", np.zeros((1, 12, 20), np.float32), pictureIjkToRas)
        flatPath = self._serverFile("MRILabel self-test 2D cam", np.full((1, 12, 20), 0.6, np.float32), np.eye(4))
        flatNode, _ = self.logic.showClassActivationMap(flatPath, picture, "selftest")
        np.testing.assert_allclose(self.logic._ijkToRas(flatNode), pictureIjkToRas)
        self.delayDisplay("Class-activation map of a 2D picture lands on the picture")

    def test_uncertainty_overlay(self):
        ijkToRas = np.diag([0.8, 0.8, 3.0, 1.0])
        ijkToRas[:3, 3] = (-30.0, 10.0, -5.0)
        volume = self._volume("MRILabel self-test scan", np.zeros((6, 16, 20), np.float32), ijkToRas)
        values = np.zeros((6, 16, 20), np.float32)
        values[4, 5:9, 6:12] = 0.8  # numpy order (K, J, I): 24 uncertain voxels on slice K = 4
        answer = self._uncertaintyAnswer("MRILabel self-test uncertainty", values, ijkToRas)
        self.assertEqual(answer.summary.sentence(), "Correct first: slice 4 (24 uncertain voxels).")
        node, _ = self.logic.showUncertaintyMap(answer, volume)
        self.assertEqual(node.GetAttribute(ROLE_ATTRIBUTE), OVERLAY_ROLE)
        self.assertIn(node.GetID(), self.logic.overlayNodeIDs())
        self.assertIsNone(node.GetStorageNode())
        self.delayDisplay("Uncertainty map shown over a volume")
        views = self.logic._sliceViews()
        if not views:
            self.delayDisplay("No slice view in this layout: going to a slice not tried")
        else:
            offsets = [(view, view.GetSliceOffset()) for _, view in views]
            try:
                sliceNode, _ = self.logic.jumpToSlice(node.GetID(), 2, 4)
                sliceToRas = slicer.util.arrayFromVTKMatrix(sliceNode.GetSliceToRAS())
                centre = slice_center(ijkToRas, (6, 16, 20), 2, 4)
                self.assertAlmostEqual(float(sliceToRas[:3, 2] @ (centre - sliceToRas[:3, 3])), 0.0, places=3)
                self.delayDisplay(f"Slice 4 shown in the {sliceNode.GetLayoutName()} view")
            finally:  # the views go back to the slices they showed
                for view, offset in offsets:
                    view.SetSliceOffset(offset)

        pictureIjkToRas = np.diag([-1.0, -1.0, 1.0, 1.0])  # how Slicer loads a PNG or JPG
        picture = self._volume("MRILabel self-test 2D scan", np.zeros((1, 12, 20), np.float32), pictureIjkToRas)
        flat = np.zeros((1, 12, 20), np.float32)
        flat[0, 3:6, 4:10] = 0.9  # 18 uncertain pixels
        # the server writes a 2D picture's map with an identity geometry
        flatAnswer = self._uncertaintyAnswer("MRILabel self-test 2D uncertainty", flat, np.eye(4))
        flatNode, _ = self.logic.showUncertaintyMap(flatAnswer, picture)
        self.assertEqual(flatNode.GetAttribute(ROLE_ATTRIBUTE), OVERLAY_ROLE)
        overlayGrid, pictureGrid = self.logic._geometry(flatNode), self.logic._geometry(picture)
        self.assertEqual(overlayGrid.shape, pictureGrid.shape)
        np.testing.assert_allclose(overlayGrid.ijk_to_ras, pictureGrid.ijk_to_ras)
        self.assertEqual(int(np.count_nonzero(slicer.util.arrayFromVolume(flatNode) >= 0.5)), 18)
        self.delayDisplay("Uncertainty map of a 2D picture lands on the picture")

    def test_review_loading(self):
        ijkToRas = np.diag([0.9, 0.9, 3.0, 1.0])
        ijkToRas[:3, 3] = (-20.0, 5.0, 2.0)
        image = np.random.default_rng(1).normal(size=(6, 16, 20)).astype(np.float32)
        imagePath = self._serverFile("MRILabel self-test review image", image, ijkToRas)
        label = np.zeros((6, 16, 20), np.uint8)
        label[2:4, 4:9, 5:12] = 1
        labelPath = self._serverFile("MRILabel self-test review label", label, ijkToRas, "vtkMRMLLabelMapVolumeNode")
        sample = ReviewSample("selftest_review", "selftest", imagePath, labelPath, {"tumor": 1})
        volume, segmentationNode = self.logic.loadReviewSample(sample)
        self.assertEqual(volume.GetAttribute(IMAGE_ID_ATTRIBUTE), "selftest_review")
        self.assertEqual(segmentationNode.GetAttribute(IMAGE_ID_ATTRIBUTE), "selftest_review")
        self.assertIs(self.logic.sourceVolumeOf(segmentationNode), volume)
        segmentation = segmentationNode.GetSegmentation()
        self.assertEqual(segmentation.GetNthSegment(0).GetName(), "tumor")
        loaded = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentation.GetNthSegmentID(0), volume)
        np.testing.assert_array_equal(loaded > 0, label > 0)
        self.delayDisplay("An image and its final label loaded for review, the label on the image's grid")

    def test_geometry_checks(self):
        shape = (4, 8, 8)
        ijkToRas = np.diag([1.0, 1.0, 3.0, 1.0])
        ijkToRas[:3, 3] = (-20.0, 10.0, 4.0)
        volume = self._volume("MRILabel self-test grid", np.zeros(shape, np.float32), ijkToRas)
        thinner = ijkToRas.copy()
        thinner[2, 2] = 2.0
        shifted = ijkToRas.copy()
        shifted[:3, 3] = (-15.0, 10.0, 4.0)
        turned = ijkToRas.copy()
        turned[:3, :2] = [[0.0, -1.0], [1.0, 0.0], [0.0, 0.0]]  # I and J turned 90° about S: same size and origin
        for what, wrongIjkToRas, difference in (
            ("voxel size", thinner, "its voxel size is 1 × 1 × 2 mm but the image's is 1 × 1 × 3 mm"),
            ("origin", shifted, "its origin is (-15, 10, 4) mm but the image's is (-20, 10, 4) mm"),
            ("direction", turned, "its axis directions differ from the image's"),
        ):
            wrongPath = self._serverFile(f"MRILabel self-test wrong {what}", np.zeros(shape, np.float32), wrongIjkToRas)
            with self.assertRaises(ValueError) as caught:
                self.logic.showClassActivationMap(wrongPath, volume, "selftest")
            self.assertEqual(
                str(caught.exception), f"The class-activation map does not line up with the image: {difference}"
            )
            self.assertEqual(self.logic.overlayNodeIDs(), [])  # the refused map is not left in the scene
        self.delayDisplay("Maps of another voxel size, origin or axis directions refused, naming what differs")

        toParent = np.array([[0.0, -1.0, 0.0, 12.0], [1.0, 0.0, 0.0, -7.0], [0.0, 0.0, 1.0, 30.0], [0, 0, 0, 1]])
        transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "MRILabel self-test transform")
        transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(toParent))
        volume.SetAndObserveTransformNodeID(transform.GetID())
        # the server answers in the coordinates of what it was sent: the world (hardened) geometry
        placedPath = self._serverFile("MRILabel self-test placed", np.full(shape, 0.6, np.float32), toParent @ ijkToRas)
        placed, _ = self.logic.showClassActivationMap(placedPath, volume, "selftest")
        self.assertEqual(placed.GetTransformNodeID(), transform.GetID())
        np.testing.assert_allclose(self.logic._ijkToRas(placed), ijkToRas, atol=1e-4)
        np.testing.assert_allclose(self.logic._ijkToWorld(placed), toParent @ ijkToRas, atol=1e-4)
        self.delayDisplay("A result placed under the source's parent transform, on the source's own grid")

        rgb = np.zeros((1, 4, 6, 3), np.uint8)
        rgb[..., 1] = 100
        photo = self._volume(
            "MRILabel self-test photo", rgb, np.diag([-1.0, -1.0, 1.0, 1.0]), "vtkMRMLVectorVolumeNode"
        )
        sentPath = self.logic.exportForUpload(photo, self.logic.temporaryFolder(), "selftest_photo")
        sent = slicer.util.loadVolume(sentPath, {"show": False, "singleFile": True})
        np.testing.assert_allclose(slicer.util.arrayFromVolume(sent), 0.587 * 100, rtol=1e-4)
        self.delayDisplay("An RGB picture is sent as its grey values")

    def test_server_connection(self):
        url = os.environ.get("MRILABEL_TEST_SERVER_URL")
        if not url:
            self.delayDisplay("MRILABEL_TEST_SERVER_URL not set: server connection skipped")
            return
        tasks = run_plan(self.logic.connect(url))
        self.assertTrue(tasks)
        self.delayDisplay("Server connection passed")
