"""MRI Label: a 3D Slicer panel for the mri-label MONAI Label server.

The widget only draws controls and calls :class:`MRILabelLogic`; the logic converts Slicer nodes to files
and arrays and delegates everything else to the Slicer-free package ``MRILabelLib``.
"""

import os

import ctk
import qt
import slicer
import vtk  # noqa: F401  (Slicer module convention)
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

from MRILabelLib import NO_CAM_SENTENCE, ServerLogic, plain_sentence
from MRILabelLib.errors import TrainingFailedError
from MRILabelLib.overlay import (
    cam_display_values,
    check_aligned,
    heat_color_table,
    merge_segments,
    safe_image_id,
    volume_fingerprint,
)
from MRILabelLib.results import label_info_for, parse_classification, parse_measurements

IMAGE_ID_ATTRIBUTE = "MRILabel.ImageId"
TASK_ATTRIBUTE = "MRILabel.Task"
SETTINGS_URL_KEY = "MRILabel/serverUrl"
SETTINGS_USER_KEY = "MRILabel/username"  # the password is never stored
DEFAULT_URL = "http://127.0.0.1:8000"


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
            "Submits class and segmentation corrections, starts trainings and fetches the next sample. "
            "Research use only; not for clinical decisions."
        )
        self.parent.acknowledgementText = "Built on MONAI Label and 3D Slicer."


class MRILabelWidget(ScriptedLoadableModuleWidget):
    """The panel: controls wired to :class:`MRILabelLogic`, nothing else."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.logic = None
        self.trainingRun = None
        self.trainingTimer = None
        self.lastResult = None

    # --- layout ----------------------------------------------------------------------------------------

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = MRILabelLogic()
        self._buildServerSection()
        self._buildTaskSection()
        self._buildCorrectionSection()
        self._buildTrainingSection()
        self._buildNextSampleSection()
        self.statusLabel = qt.QLabel("Not connected.")
        self.statusLabel.wordWrap = True
        self.layout.addWidget(self.statusLabel)
        self.layout.addStretch(1)
        self.trainingTimer = qt.QTimer()
        self.trainingTimer.setInterval(1000)
        self.trainingTimer.timeout.connect(self.onTrainingTimer)

    def _section(self, title):
        section = ctk.ctkCollapsibleButton()
        section.text = title
        self.layout.addWidget(section)
        return qt.QFormLayout(section)

    def _button(self, text, handler):
        button = qt.QPushButton(text)
        button.clicked.connect(handler)
        return button

    def _buildServerSection(self):
        form = self._section("Server")
        self.serverUrlEdit = qt.QLineEdit()
        self.serverUrlEdit.text = qt.QSettings().value(SETTINGS_URL_KEY, DEFAULT_URL)
        self.maxUploadSpin = qt.QDoubleSpinBox()
        self.maxUploadSpin.setRange(1, 100000)
        self.maxUploadSpin.value = 512
        self.maxUploadSpin.suffix = " MB"
        self.usernameEdit = qt.QLineEdit()
        self.usernameEdit.text = qt.QSettings().value(SETTINGS_USER_KEY, "")
        self.usernameEdit.placeholderText = "only where the server asks for a login"
        self.passwordEdit = qt.QLineEdit()
        self.passwordEdit.echoMode = qt.QLineEdit.Password
        self.connectButton = self._button("Connect", self.onConnect)
        form.addRow("Server URL:", self.serverUrlEdit)
        form.addRow("User name:", self.usernameEdit)
        form.addRow("Password:", self.passwordEdit)
        form.addRow("Upload limit:", self.maxUploadSpin)
        form.addRow(self.connectButton)

    def _buildTaskSection(self):
        form = self._section("Run a task")
        self.volumeSelector = slicer.qMRMLNodeComboBox()
        self.volumeSelector.nodeTypes = ["vtkMRMLScalarVolumeNode"]
        self.volumeSelector.addEnabled = False
        self.volumeSelector.removeEnabled = False
        self.volumeSelector.setMRMLScene(slicer.mrmlScene)
        self.taskCombo = qt.QComboBox()
        self.runButton = self._button("Run", self.onRunTask)
        self.camButton = self._button("Show class-activation map", self.onShowCam)
        self.resultSummaryLabel = qt.QLabel("")
        self.resultSummaryLabel.wordWrap = True
        self.resultTable = qt.QTableWidget()
        self.resultTable.setColumnCount(3)
        self.resultTable.setHorizontalHeaderLabels(["Class", "Probability", "Predicted"])
        self.measurementsLabel = qt.QLabel("")
        self.measurementsLabel.wordWrap = True
        form.addRow("Volume:", self.volumeSelector)
        form.addRow("Task:", self.taskCombo)
        form.addRow(self.runButton)
        form.addRow(self.camButton)
        form.addRow(self.resultSummaryLabel)
        form.addRow(self.resultTable)
        form.addRow("Measurements:", self.measurementsLabel)

    def _buildCorrectionSection(self):
        form = self._section("Corrections")
        self.classCombo = qt.QComboBox()
        self.submitClassButton = self._button("Submit class", self.onSubmitClass)
        self.segmentationSelector = slicer.qMRMLNodeComboBox()
        self.segmentationSelector.nodeTypes = ["vtkMRMLSegmentationNode"]
        self.segmentationSelector.addEnabled = False
        self.segmentationSelector.removeEnabled = False
        self.segmentationSelector.setMRMLScene(slicer.mrmlScene)
        self.submitSegmentationButton = self._button("Submit segmentation as final", self.onSubmitSegmentation)
        form.addRow("Correct class:", self.classCombo)
        form.addRow(self.submitClassButton)
        form.addRow("Edited segmentation:", self.segmentationSelector)
        form.addRow(self.submitSegmentationButton)

    def _buildTrainingSection(self):
        form = self._section("Training")
        self.trainTaskCombo = qt.QComboBox()
        self.epochsSpin = qt.QSpinBox()
        self.epochsSpin.setRange(1, 1000)
        self.epochsSpin.value = 10
        self.trainButton = self._button("Start training", self.onStartTraining)
        self.trainingProgressBar = qt.QProgressBar()
        self.trainingProgressBar.setRange(0, 100)
        self.trainingLabel = qt.QLabel("")
        self.trainingLabel.wordWrap = True
        form.addRow("Task:", self.trainTaskCombo)
        form.addRow("Epochs:", self.epochsSpin)
        form.addRow(self.trainButton)
        form.addRow(self.trainingProgressBar)
        form.addRow(self.trainingLabel)

    def _buildNextSampleSection(self):
        form = self._section("Next sample")
        self.strategyCombo = qt.QComboBox()
        self.nextSampleButton = self._button("Fetch next sample", self.onNextSample)
        form.addRow("Strategy:", self.strategyCombo)
        form.addRow(self.nextSampleButton)

    # --- feedback --------------------------------------------------------------------------------------

    def _showStatus(self, text):
        self.statusLabel.setText(text)

    def _showError(self, error):
        sentence = self.logic.describeError(error)
        self._showStatus(sentence)
        slicer.util.errorDisplay(sentence, windowTitle="MRI Label")

    def _progress(self, message, fraction=None, detail=None):
        self._showStatus(message)
        slicer.app.processEvents()

    def _guarded(self, action, *args):
        """Run ``action``; show any failure as one plain sentence. Returns the action's value or None."""
        qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
        try:
            return action(*args)
        except Exception as error:  # every failure becomes a sentence, never a traceback
            self._showError(error)
            return None
        finally:
            qt.QApplication.restoreOverrideCursor()

    @staticmethod
    def _fillCombo(combo, names, current=None):
        combo.clear()
        for name in names:
            combo.addItem(name)
        if current in names:
            combo.setCurrentIndex(list(names).index(current))

    # --- handlers --------------------------------------------------------------------------------------

    def onConnect(self):
        url, username = self.serverUrlEdit.text.strip(), self.usernameEdit.text.strip()
        tasks = self._guarded(
            self.logic.connect, url, float(self.maxUploadSpin.value), username, self.passwordEdit.text
        )
        if tasks is None:
            return
        qt.QSettings().setValue(SETTINGS_URL_KEY, url)
        qt.QSettings().setValue(SETTINGS_USER_KEY, username)
        self._fillCombo(self.taskCombo, [t.name for t in tasks])
        self._fillCombo(self.trainTaskCombo, [t.name for t in tasks if t.trainable])
        self._fillCombo(self.strategyCombo, self.logic.strategies())
        self._showStatus(f"Connected to {url}: {len(tasks)} tasks.")

    def onRunTask(self):
        task, volume = self.taskCombo.currentText, self.volumeSelector.currentNode()
        answer = self._guarded(self.logic.runTask, task, volume, self._progress)
        if answer is None:
            return
        result, segmentationNode = answer
        self.lastResult = result
        self.resultSummaryLabel.setText(result.summary())
        rows = getattr(result, "rows", [])
        self.resultTable.setRowCount(len(rows))
        for index, row in enumerate(rows):
            self.resultTable.setItem(index, 0, qt.QTableWidgetItem(row.name))
            self.resultTable.setItem(index, 1, qt.QTableWidgetItem(f"{row.probability:.3f}"))
            self.resultTable.setItem(index, 2, qt.QTableWidgetItem("yes" if row.predicted else ""))
        measurements = getattr(result, "measurements", None)
        self.measurementsLabel.setText(measurements.text() if measurements else "")
        if rows:
            self._fillCombo(self.classCombo, self.logic.classesOf(task), current=result.label)
        if segmentationNode is not None:
            self.segmentationSelector.setCurrentNode(segmentationNode)
        self._showStatus(f"{task} finished.")

    def onShowCam(self):
        task, volume = self.taskCombo.currentText, self.volumeSelector.currentNode()
        answer = self._guarded(self.logic.loadClassActivationMap, task, volume, self._progress)
        if answer is not None:
            self._showStatus(answer[1])

    def onSubmitClass(self):
        task, volume, label = self.taskCombo.currentText, self.volumeSelector.currentNode(), self.classCombo.currentText
        if self._guarded(self.logic.submitClass, task, volume, label) is not None:
            self._showStatus(f"Recorded class {label} for {task}.")

    def onSubmitSegmentation(self):
        task, volume = self.taskCombo.currentText, self.volumeSelector.currentNode()
        segmentation = self.segmentationSelector.currentNode()
        if self._guarded(self.logic.submitSegmentation, task, segmentation, volume) is not None:
            self._showStatus("Segmentation saved on the server as the final label.")

    def onStartTraining(self):
        task, epochs = self.trainTaskCombo.currentText, int(self.epochsSpin.value)
        run = self._guarded(self.logic.startTraining, task, epochs)
        if run is None:
            return
        self.trainingRun = run
        self.trainingProgressBar.setValue(0)
        self.trainingLabel.setText(f"{task}: training submitted.")
        self.trainingTimer.start()

    def onTrainingTimer(self):
        if self.trainingRun is None:
            self.trainingTimer.stop()
            return
        try:
            state = self.logic.trainingProgress(self.trainingRun)
        except Exception as error:
            self.trainingTimer.stop()
            self.trainingRun = None
            self._showError(error)
            return
        self.trainingProgressBar.setValue(int(round(100 * state.fraction)))
        self.trainingLabel.setText(state.message())
        if state.finished:
            self.trainingTimer.stop()
            self.trainingRun = None
            if state.status != "DONE":
                self._showError(self.logic.trainingFailure(state))

    def onNextSample(self):
        node = self._guarded(self.logic.nextSample, self.strategyCombo.currentText, self._progress)
        if node is False:
            self._showStatus("The strategy found no image left to label.")
        elif node is not None:
            self.volumeSelector.setCurrentNode(node)
            self._showStatus(f"Loaded next sample {node.GetName()}.")

    def cleanup(self):
        if self.trainingTimer is not None:
            self.trainingTimer.stop()


class MRILabelLogic(ScriptedLoadableModuleLogic):
    """Converts Slicer nodes to files and arrays, and delegates to :class:`MRILabelLib.ServerLogic`."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.server = None
        self.camOpacity = 0.5
        self.camThreshold = 0.2

    # --- server ----------------------------------------------------------------------------------------

    def connect(self, serverUrl, maxUploadMB=512.0, username="", password=""):
        """Point the module at ``serverUrl``, log in where the server asks for it; return the server's tasks."""
        server = ServerLogic(serverUrl, max_upload_mb=maxUploadMB)
        server.sign_in(username, password)
        self.server = server
        return self.server.tasks(refresh=True)

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

    # --- nodes <-> server images -----------------------------------------------------------------------

    @staticmethod
    def _requireNode(node, what):
        if node is None:
            raise ValueError(f"{what} must be selected first.")
        return node

    def imageIdForVolume(self, volumeNode):
        """The datastore id of a volume: the id it was fetched with, else ``slicer_<content fingerprint>``. Not the
        volume's name: names loaded from DICOM often carry the patient's name, and ids are stored and logged."""
        known = volumeNode.GetAttribute(IMAGE_ID_ATTRIBUTE)
        if known:
            return known
        fingerprint = volume_fingerprint(slicer.util.arrayFromVolume(volumeNode), volumeNode.GetSpacing())
        return safe_image_id("slicer", fingerprint)

    def _ensureOnServer(self, volumeNode, progress=None):
        """Upload the volume (saved to a temporary NIfTI) unless the server has it; return its image id."""
        server = self._server()
        volumeNode = self._requireNode(volumeNode, "A volume")
        imageId = self.imageIdForVolume(volumeNode)
        if not server.has_image(imageId):
            path = os.path.join(server.work_dir, f"{imageId}.nii.gz")
            if not slicer.util.saveNode(volumeNode, path):
                raise ValueError(f"volume {volumeNode.GetName()!r} could not be saved to {path}")
            server.ensure_image(imageId, path, progress)
        return imageId

    # --- actions ---------------------------------------------------------------------------------------

    def runTask(self, task, volumeNode, progress=None):
        """Run ``task`` on the volume; return ``(result, segmentation node or None)``."""
        imageId = self._ensureOnServer(volumeNode, progress)
        result = self._server().run_task(task, imageId, progress=progress)
        if not hasattr(result, "mask_path"):
            return result, None
        return result, self._loadMaskAsSegmentation(result, volumeNode, imageId)

    def _loadMaskAsSegmentation(self, result, volumeNode, imageId):
        labelNode = slicer.util.loadLabelVolume(result.mask_path, {"show": False})
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass(
            "vtkMRMLSegmentationNode", f"{volumeNode.GetName()} {result.task}"
        )
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelNode, segmentationNode)
        namesByValue = {value: name for name, value in result.label_names.items()}
        segmentation = segmentationNode.GetSegmentation()
        for index in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(index)
            segment.SetName(namesByValue.get(segment.GetLabelValue(), segment.GetName()))
        segmentationNode.SetAttribute(TASK_ATTRIBUTE, result.task)
        segmentationNode.SetAttribute(IMAGE_ID_ATTRIBUTE, imageId)
        slicer.mrmlScene.RemoveNode(labelNode)
        return segmentationNode

    def loadClassActivationMap(self, task, volumeNode, progress=None):
        """Show the classifier's class-activation map over the volume; return ``(node or None, message)``."""
        imageId = self._ensureOnServer(volumeNode, progress)
        path = self._server().class_activation_map(task, imageId, progress=progress)
        if path is None:
            return None, NO_CAM_SENTENCE
        camNode = slicer.util.loadVolume(path, {"name": f"{volumeNode.GetName()} {task} CAM", "show": False})
        values = slicer.util.arrayFromVolume(camNode)
        check_aligned(values.shape, slicer.util.arrayFromVolume(volumeNode).shape)
        slicer.util.updateVolumeFromArray(camNode, cam_display_values(values, self.camThreshold))
        camNode.CreateDefaultDisplayNodes()
        display = camNode.GetDisplayNode()
        display.SetAndObserveColorNodeID(self._heatColorNode().GetID())
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, 1.0)
        slicer.util.setSliceViewerLayers(background=volumeNode, foreground=camNode, foregroundOpacity=self.camOpacity)
        return camNode, f"Class-activation map of {task} shown over {volumeNode.GetName()}."

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
        """Record ``label`` as the correct class of the volume for ``task``."""
        imageId = self._ensureOnServer(volumeNode)
        return self._server().submit_class(task, imageId, label)

    def submitSegmentation(self, task, segmentationNode, volumeNode):
        """Save the edited segmentation as the volume's ``final`` label (segment names = task labels)."""
        segmentationNode = self._requireNode(segmentationNode, "A segmentation")
        task = segmentationNode.GetAttribute(TASK_ATTRIBUTE) or task
        imageId = self._ensureOnServer(volumeNode)
        labels = self._server().task(task).labels
        segmentation = segmentationNode.GetSegmentation()
        masks = {}
        for index in range(segmentation.GetNumberOfSegments()):
            segmentId = segmentation.GetNthSegmentID(index)
            name = segmentation.GetNthSegment(index).GetName()
            masks[name] = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode)
        label_info_for(masks, labels)  # plain ValueError before any work when a segment is misnamed
        labelNode = slicer.modules.volumes.logic().CreateAndAddLabelVolume(
            slicer.mrmlScene, volumeNode, "MRILabel final"
        )
        try:
            slicer.util.updateVolumeFromArray(labelNode, merge_segments(masks, labels))
            path = os.path.join(self._server().work_dir, f"{imageId}_final.nii.gz")
            if not slicer.util.saveNode(labelNode, path):
                raise ValueError(f"the label map could not be saved to {path}")
        finally:
            slicer.mrmlScene.RemoveNode(labelNode)
        return self._server().submit_segmentation(task, imageId, path, list(masks))

    def startTraining(self, task, epochs):
        return self._server().start_training(task, max_epochs=int(epochs))

    def trainingProgress(self, run):
        return self._server().training_progress(run)

    @staticmethod
    def trainingFailure(state):
        """The error describing a training that ended without DONE."""
        return TrainingFailedError(state.task, state.status, state.line)

    def nextSample(self, strategy, progress=None):
        """Load the next image picked by ``strategy``; False when the strategy found none."""
        sample = self._server().next_sample(strategy, progress)
        if sample is None:
            return False
        node = slicer.util.loadVolume(sample.path, {"name": sample.image_id})
        node.SetAttribute(IMAGE_ID_ATTRIBUTE, sample.image_id)
        slicer.util.setSliceViewerLayers(background=node, fit=True)
        return node


class MRILabelTest(ScriptedLoadableModuleTest):
    """Runs in Slicer (Reload and Test). The server round trip runs when MRILABEL_TEST_SERVER_URL is set."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_results_and_overlay()
        self.test_server_round_trip()

    def test_results_and_overlay(self):
        result = parse_classification({"label": "T2", "probabilities": {"T1": 0.25, "T2": 0.75}})
        self.assertEqual([row.name for row in result.rows if row.predicted], ["T2"])
        measurements = parse_measurements({"mm3": {"a": 2.0}, "total_mm3": 2.0})
        self.assertIn("Total: 2.0 mm³", measurements.text())
        self.assertEqual(safe_image_id("My volume 1"), "My_volume_1")
        self.delayDisplay("Results and overlay arithmetic passed")

    def test_server_round_trip(self):
        url = os.environ.get("MRILABEL_TEST_SERVER_URL")
        if not url:
            self.delayDisplay("MRILABEL_TEST_SERVER_URL not set: server round trip skipped")
            return
        import numpy as np

        logic = MRILabelLogic()
        tasks = logic.connect(url)
        self.assertTrue(tasks)
        volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "MRILabel test volume")
        slicer.util.updateVolumeFromArray(volume, np.random.default_rng(0).normal(size=(16, 96, 96)).astype("float32"))
        logic._ensureOnServer(volume)
        self.assertTrue(logic.server.has_image(logic.imageIdForVolume(volume)))
        self.delayDisplay("Server round trip passed")
