"""Issue 18's "done when": uncertainty, model history with rollback, and review, end to end through the panel's logic
(``MRILabelLogic`` of MRILabel.py, loaded over the fake Slicer of ``tests/unit/slicer_module/fake_slicer.py`` as the
panel's unit tests load it) against a real mri-label server. The plain library alone against a real server:
test_slicer_history_review_server.py and test_slicer_logic.py.

Each plan runs as the panel runs it: its server work in a worker thread, its finish step (nodes) here, then its
cleanup. Volumes are generated in memory and sent as NIfTI files, as the panel sends them; the server's answers are
read back from its NIfTI files.

One server for the whole file serving tumor_seg only (64-pixel slices), auth off (every call is the anonymous admin
and reviewer); tumor_seg is fine-tuned once for 1 epoch from nothing (promoted: no checkpoint was served yet).
"""

import hashlib
import json
import time

import numpy as np
import pytest
from fake_slicer import FakeVolumeNode, load_mrilabel

from MRILabelLib.jobs import JobRunner
from tests.helpers.app import plant_archive

TASK = "tumor_seg"
SHAPE = (12, 40, 48)  # numpy order (K, J, I): 12 axial slices
#: A parent transform: turned 90° about S and moved (the volume's axial slices stay axial).
TURNED_AND_MOVED = np.array([[0.0, -1.0, 0.0, 15.0], [1.0, 0.0, 0.0, -6.0], [0.0, 0.0, 1.0, 20.0], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def server(tumor_seg_server):
    return tumor_seg_server


@pytest.fixture(scope="module")
def module(tmp_path_factory):
    """MRILabel.py over the fake Slicer, for the whole file (as one panel session: connect once, then act)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield load_mrilabel(monkeypatch, [], tmp_path_factory.mktemp("panel_work"))


@pytest.fixture(scope="module")
def scene(module):
    return module.stubs["slicer"].mrmlScene


def perform(plan, timeout_s=300.0):
    """Run a plan as the panel does: ``plan.work`` in a worker thread (a :class:`JobRunner` job, as the panel's),
    ``plan.finish`` with its answer here (the GUI thread), then ``plan.cleanup``; the work's error is raised here."""
    runner = JobRunner()
    job = runner.start(plan.title, plan.work)
    try:
        assert job.wait(timeout_s), f"{plan.title} did not end within {timeout_s} s"
        assert runner.poll() is job
        if job.error is not None:
            raise job.error
        return plan.finish(job.result)
    finally:
        plan.cleanup()


@pytest.fixture(scope="module")
def logic(module, server):
    """The panel's logic, connected to the server (the Connect button's plan)."""
    logic = module.MRILabelLogic()
    tasks = perform(logic.connect(server["url"]))
    assert [t.name for t in tasks] == [TASK] and tasks[0].offers_uncertainty
    yield logic
    logic.cleanTemporaryFiles(removeFolder=True)


@pytest.fixture(scope="module")
def finetuned(logic):
    """tumor_seg fine-tuned for 1 epoch (``{"finetune": true}``, what auto-retrain sends; the panel's Train button
    sends none), its progress read with the panel's poll plan until it ends."""
    run = logic.server.start_training(TASK, max_epochs=1, params={"name": "panel_finetune", "finetune": True})
    deadline = time.monotonic() + 600
    while True:
        state = perform(logic.trainingProgress(run))
        if state.finished:
            break
        assert time.monotonic() < deadline, state.message()
        time.sleep(0.5)
    assert state.status == "DONE", logic.describeError(logic.trainingFailure(state))
    return state


def _scan(scene, name, seed, ijk):
    """A generated head-like scan: noise with a bright blob, as a volume node on grid ``ijk``."""
    rng = np.random.default_rng(seed)
    k, j, i = np.indices(SHAPE)
    blob = ((k - 6) / 3.0) ** 2 + ((j - 18) / 8.0) ** 2 + ((i - 26) / 9.0) ** 2 < 1.0
    voxels = (100.0 + 10.0 * rng.standard_normal(SHAPE) + 150.0 * blob).astype(np.float32)
    return scene.add(FakeVolumeNode(name, voxels, ijk))


def _grid(spacing, origin, flip=False):
    ijk = np.diag([*spacing, 1.0])
    if flip:  # as a volume stored in LPS order loads: I and J point to the right and anterior's opposites
        ijk[:2, :2] *= -1
    ijk[:3, 3] = origin
    return ijk


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- (a) uncertainty -------------------------------------------------------------------------------------------


def test_uncertainty_of_an_uploaded_volume_lies_on_it_and_lists_the_slices_to_correct(module, logic, finetuned, scene):
    util = module.stubs["slicer"].util
    volume = _scan(scene, "panel scan", 0, _grid((0.9, 0.9, 3.0), (30.0, -12.0, -8.0), flip=True))
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "acquisition")  # as DICOM import may add
    transform.SetMatrixTransformToParent(util.vtkMatrixFromArray(TURNED_AND_MOVED))
    volume.SetAndObserveTransformNodeID(transform.GetID())
    node, answer = perform(logic.loadUncertaintyMap(TASK, volume))
    imageId = logic.imageIdForVolume(volume)
    assert logic.server.has_image(imageId)  # the volume was uploaded under its fingerprint id

    # the overlay: on the volume's own grid under its transform, a hidden overlay of the map the server wrote
    assert node.array.shape == volume.array.shape
    np.testing.assert_allclose(node.ijk, volume.ijk, atol=1e-4)
    assert node.GetTransformNodeID() == transform.GetID() and node.GetStorageNode() is None
    assert node.GetAttribute(module.ROLE_ATTRIBUTE) == module.OVERLAY_ROLE and node.GetID() in logic.overlayNodeIDs()
    assert node.GetAttribute(module.TASK_ATTRIBUTE) == TASK and node.GetName() == f"panel scan {TASK} uncertainty"

    # the slices to correct first: listed, on the volume, and counted from the voxels the overlay shows
    summary = answer.summary
    assert answer.problem is None and summary is not None
    rows = summary.rows()  # what the panel's list shows
    assert rows and len(rows) == len(summary.slices)
    assert summary.axis == 2  # voxel axis K: the axial slices of this grid
    counts = [int(np.count_nonzero(node.array[s.slice] >= summary.uncertain_from)) for s in summary.slices]
    assert counts == [s.uncertain_voxels for s in summary.slices]
    for listed in summary.slices:  # each listed mean is its slice's in the overlay (values under 0.1 shown as 0)
        values = node.array[listed.slice]
        shown, hidden = float(values.mean()), float(np.mean(values == 0))
        assert shown - 1e-4 <= listed.mean <= shown + 0.1 * hidden + 1e-4, (listed, shown)
    assert 0 <= min(s.slice for s in summary.slices) and max(s.slice for s in summary.slices) < SHAPE[0]
    assert float(node.array.max()) == pytest.approx(summary.max, abs=1e-3)


# --- (b) model history and rollback ------------------------------------------------------------------------------


def test_model_history_after_a_finetune_and_a_rollback_through_the_panel_logic(logic, finetuned, server, scene):
    task_dir = server["models"] / TASK
    history = perform(logic.modelHistory(TASK))
    (row,) = history.rows
    entry = json.loads((task_dir / "history.json").read_text())[-1]
    assert row.event == entry["event"] == "promoted" and row.reason.startswith("no checkpoint was served yet")
    assert history.served is not None and history.served.name == f"model/{TASK}/model.pt"
    assert logic.rollbackQuestion(TASK, history).startswith(
        f"Roll {TASK} back: serve its newest archived checkpoint again instead of model/{TASK}/model.pt"
    )

    previous = plant_archive(task_dir)  # nothing was served before the fine-tune, so nothing was archived
    expected, replaced = _sha(previous / "model.pt"), _sha(task_dir / "model.pt")
    assert expected != replaced
    result, after = perform(logic.rollBack(TASK))
    assert _sha(task_dir / "model.pt") == expected  # the archived checkpoint is served again
    assert result.restored == previous.name and result.served.mtime > history.served.mtime
    assert result.sentence().startswith(f"{TASK} was rolled back: it serves the checkpoint archived as {previous.name}")
    assert after is not None and [r.event for r in after.rows] == ["rolled back", "promoted"]
    assert after.rows[0].reason.startswith(f"served the checkpoint archived as {previous.name} again (by anonymous)")
    assert after.served == result.served

    volume = _scan(scene, "panel scan after rollback", 1, _grid((1.0, 1.0, 3.0), (0.0, 0.0, 0.0)))
    answer, _ = perform(logic.runTask(TASK, volume))
    assert answer.raw["checkpoint"]["mtime"] == result.served.mtime  # the next inference uses the restored one


# --- (c) review ----------------------------------------------------------------------------------------------------


def _listed(logic, status):
    listing = perform(logic.reviewList(status))
    assert listing.status == status.replace(" ", "_")
    return {item.image: item for item in listing.items}


def test_a_submitted_segmentation_is_pending_then_approved_through_the_panel_logic(module, logic, scene):
    volume = _scan(scene, "panel review scan", 2, _grid((0.9, 0.9, 3.0), (-20.0, 5.0, 2.0)))
    mask = np.zeros(SHAPE, np.uint8)
    mask[4:8, 12:24, 18:34] = 1
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "panel review segmentation")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)  # as Segment Editor's source volume
    segmentation.add_segment("tumor", mask)
    imageId = logic.imageIdForVolume(volume)
    assert imageId not in _listed(logic, "pending")

    perform(logic.submitSegmentation(TASK, segmentation))
    pending = _listed(logic, "pending")
    assert pending[imageId].task == TASK and pending[imageId].review is None
    assert imageId not in _listed(logic, "approved")

    # Load in Review: the image and the label the server holds, the label on the image's grid
    loaded, label = perform(logic.loadForReview(imageId, TASK))
    np.testing.assert_array_equal(loaded.array, volume.array)
    np.testing.assert_allclose(loaded.ijk, volume.ijk, atol=1e-4)
    segments = label.GetSegmentation()
    assert segments.GetNumberOfSegments() == 1 and segments.GetNthSegment(0).GetName() == "tumor"
    assert logic.sourceVolumeOf(label) is loaded
    held = module.stubs["slicer"].util.arrayFromSegmentBinaryLabelmap(label, segments.GetNthSegmentID(0), loaded)
    np.testing.assert_array_equal(held > 0, mask > 0)

    decision = perform(logic.submitReview(imageId, "approved", "clean margins", "approved"))
    assert (decision.image, decision.review.status, decision.review.comment) == (imageId, "approved", "clean margins")
    assert imageId in {item.image for item in decision.listing.items}  # the list read again after the decision
    approved = _listed(logic, "approved")
    assert approved[imageId].review.comment == "clean margins" and approved[imageId].review.reviewer == "anonymous"
    assert imageId not in _listed(logic, "pending")
