"""The Slicer module's plain logic (MRILabelLib) against a real mri-label server on the sample data.

One server for the whole file; tumor_gate, tumor_seg, tumor_type and hippocampus are trained once, 1 epoch each.
"""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from MRILabelLib import NO_CAM_SENTENCE, ServerLogic, plain_sentence
from MRILabelLib.client import ServerClient
from MRILabelLib.errors import ImageTooLargeError, ServerHTTPError, ServerUnreachableError
from MRILabelLib.results import ClassificationResult, SegmentationResult
from tests.helpers.live_server import free_port, running_server

TRAINED = ("tumor_gate", "tumor_seg", "tumor_type", "hippocampus")


@pytest.fixture(scope="module")
def server(tmp_path_factory, sample_template):
    with running_server(tmp_path_factory.mktemp("slicer_live"), sample_template) as live:
        yield live


@pytest.fixture(scope="module")
def logic(server, tmp_path_factory):
    return ServerLogic(server["url"], poll_interval_s=0.5, work_dir=str(tmp_path_factory.mktemp("slicer_work")))


@pytest.fixture(scope="module")
def trainings(logic):
    """Train each task for 1 epoch, recording every progress report: task -> (final state, reports)."""
    done = {}
    for task in TRAINED:
        reports = []
        final = logic.train(
            task, max_epochs=1, progress=lambda message, fraction, detail: reports.append((message, fraction, detail))
        )
        done[task] = (final, reports)
    return done


def _messages():
    messages = []
    return messages, (lambda message, fraction=None, detail=None: messages.append(message))


def test_tasks_and_strategies_come_from_info(logic):
    tasks = {t.name: t for t in logic.tasks()}
    assert set(tasks) == {
        "sequence",
        "dementia_stage",
        "tumor_gate",
        "tumor_seg",
        "hippocampus",
        "tumor_pipeline",
        "tumor_type",
    }
    assert {n for n, t in tasks.items() if t.kind == "classification"} == {
        "sequence",
        "dementia_stage",
        "tumor_gate",
        "tumor_type",
    }
    assert (
        tasks["tumor_type"].classes == ["glioma", "meningioma", "pituitary", "no_tumor"]
        and tasks["tumor_type"].trainable
    )
    assert tasks["sequence"].classes == ["T1", "T2", "FLAIR"]
    assert tasks["hippocampus"].labels == {"anterior": 1, "posterior": 2}
    assert not tasks["tumor_pipeline"].trainable and tasks["tumor_seg"].trainable
    assert logic.strategies() == ["entropy", "epistemic", "first", "random"]


@pytest.mark.parametrize("action", ["run", "cam"])
def test_untrained_model_gives_the_not_trained_sentence(logic, action):
    call = logic.run_task if action == "run" else logic.class_activation_map
    with pytest.raises(ServerHTTPError) as caught:
        call("sequence", "synth01_t2")
    assert caught.value.status == 409
    assert plain_sentence(caught.value) == (
        "The model 'sequence' is not trained yet; start a training for it (Training section) or ask for a trained "
        "checkpoint."
    )


@pytest.mark.parametrize("task", TRAINED)
def test_training_reports_increasing_progress_until_done(trainings, server, task):
    final, reports = trainings[task]
    assert final.status == "DONE" and final.fraction == 1.0
    fractions = [fraction for _, fraction, _ in reports]
    assert len(reports) >= 2 and fractions == sorted(fractions) and fractions[-1] == 1.0
    states = [detail for _, _, detail in reports]
    assert states[0].status in ("SUBMITTED", "RUNNING") and states[-1].status == "DONE"
    assert any(s.epoch is not None for s in states), [m for m, _, _ in reports]
    assert states[-1].epoch == states[-1].total_epochs == 1
    assert reports[-1][0].startswith(f"{task}: DONE, epoch 1/1")
    assert (server["models"] / task / "model.pt").exists()


def test_training_log_is_text(logic, trainings):
    assert "Epoch" in logic.training_log(2000) or logic.training_log(5)


def test_classification_table_rows(logic, trainings):
    result = logic.run_task("tumor_gate", "synth01_flair")
    assert isinstance(result, ClassificationResult)
    assert [row.name for row in result.rows] == ["no_tumor", "tumor"]
    assert sum(row.probability for row in result.rows) == pytest.approx(1.0, abs=1e-4)
    assert [row.name for row in result.rows if row.predicted] == [result.label]
    assert result.threshold == 0.5
    assert "threshold 0.50" in result.summary()


def test_gate_threshold_override_is_reported(logic, trainings):
    result = logic.run_task("tumor_gate", "synth01_flair", params={"threshold": 0.3})
    assert result.threshold == 0.3 and "threshold 0.30" in result.summary()


def test_tumor_pipeline_mask_has_the_image_shape(logic, server, trainings):
    result = logic.run_task("tumor_pipeline", "synth02_flair")
    assert isinstance(result, SegmentationResult)
    mask = nib.load(result.mask_path)
    assert mask.shape == nib.load(server["studies"] / "synth02_flair.nii.gz").shape == (96, 96, 16)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
    assert result.label_names == {"tumor": 1}
    assert "Total: " in result.measurements.text() and "threshold 0.50" in result.summary()
    fired = logic.run_task("tumor_pipeline", "synth02_flair", params={"threshold": 0.0})
    assert f"tumor type: {fired.raw['tumor_type']['label']} (p = " in fired.summary()


def test_hippocampus_measurements_text(logic, trainings):
    result = logic.run_task("hippocampus", "synth_hippo01_t1")
    raw = result.raw["measurements"]
    text = result.measurements.text()
    assert f"anterior: {raw['mm3']['anterior']:,.1f} mm³" in text
    assert f"posterior: {raw['mm3']['posterior']:,.1f} mm³" in text
    assert f"Total: {raw['total_mm3']:,.1f} mm³" in text
    assert "Left:" not in text and result.measurements.left is None  # a crop: one hippocampus, side unknown
    check = raw["volume_check"]
    if check["status"] == "check the segmentation":
        assert f"CHECK THE SEGMENTATION: {check['reason']}" in text
    assert nib.load(result.mask_path).shape == (64, 48, 40)


def test_volume_the_server_lacks_is_uploaded_then_classified(logic, server, trainings, tmp_path):
    source = nib.load(server["studies"] / "synth04_flair.nii.gz")
    path = tmp_path / "new_flair.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(source.dataobj)[::-1].copy(), source.affine), path)
    assert not logic.has_image("slicer_upload_01")
    messages, progress = _messages()
    result = logic.run_task("tumor_gate", "slicer_upload_01", image_path=str(path), progress=progress)
    assert sum(row.probability for row in result.rows) == pytest.approx(1.0, abs=1e-4)
    assert any(m.startswith("Uploading new_flair.nii.gz") for m in messages)
    assert logic.has_image("slicer_upload_01") and (server["studies"] / "slicer_upload_01.nii.gz").exists()
    messages.clear()
    logic.run_task("tumor_gate", "slicer_upload_01", image_path=str(path), progress=progress)
    assert not any(m.startswith("Uploading") for m in messages)  # the server has it now


def test_image_over_the_upload_limit_is_not_sent(server, tmp_path):
    small_limit = ServerLogic(server["url"], max_upload_mb=0.01, work_dir=str(tmp_path))
    path = tmp_path / "big.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(64, 64, 16)).astype(np.float32), np.eye(4)), path)
    with pytest.raises(ImageTooLargeError) as caught:
        small_limit.ensure_image("slicer_too_big", str(path))
    assert plain_sentence(caught.value).startswith("The image is too large to send (")
    assert "the limit is 10 kB" in plain_sentence(caught.value)
    assert not small_limit.has_image("slicer_too_big")


def test_class_activation_map_is_what_the_server_provides(logic, server, trainings):
    messages, progress = _messages()
    path = logic.class_activation_map("tumor_gate", "synth01_flair", progress=progress)
    if path is None:  # this server answers without a map file
        assert messages[-1] == NO_CAM_SENTENCE == "This server does not provide class-activation maps."
    else:
        cam = np.asarray(nib.load(path).dataobj, dtype=np.float32)
        assert cam.shape == nib.load(server["studies"] / "synth01_flair.nii.gz").shape
        assert np.isfinite(cam).all() and cam.min() >= 0.0 and cam.max() <= 1.0 + 1e-6
        assert NO_CAM_SENTENCE not in messages


def test_uncertainty_map_of_tumor_seg_lies_on_the_volume(logic, server, trainings, tmp_path):
    """Issue 18 item 4: the client's one request answers the map and its summary; the summary's slices are the map's
    most uncertain ones, in the server's order."""
    result, path = logic.client.uncertainty_map("tumor_seg", "synth01_flair", folder=str(tmp_path))
    source = nib.load(server["studies"] / "synth01_flair.nii.gz")
    answer = nib.load(path)
    values = np.asarray(answer.dataobj)
    assert values.shape == source.shape == (96, 96, 16) and answer.get_data_dtype() == np.float32
    assert np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0 and values.max() > 0.0
    np.testing.assert_allclose(answer.affine, source.affine, atol=1e-4)  # the volume's own grid
    summary = result["uncertainty"]
    axis, listed = summary["axis"], summary["slices"]
    assert len(listed) == min(5, values.shape[axis])
    order = [(-s["uncertain_voxels"], -s["mean"]) for s in listed]
    assert order == sorted(order)  # most uncertain voxels first, then the higher mean
    others = tuple(a for a in range(3) if a != axis)
    counts = (values >= summary["uncertain_from"]).sum(axis=others)
    means = values.mean(axis=others)
    for entry in listed:
        assert entry["uncertain_voxels"] == int(counts[entry["slice"]])
        assert entry["mean"] == pytest.approx(float(means[entry["slice"]]), abs=1e-3)
    unlisted = set(range(values.shape[axis])) - {s["slice"] for s in listed}
    assert all(counts[k] <= listed[-1]["uncertain_voxels"] for k in unlisted)
    read = logic.uncertainty_map("tumor_seg", "synth01_flair")
    assert read.summary is not None and [s.slice for s in read.summary.slices] == [s["slice"] for s in listed]
    assert read.message().startswith(("Correct first: slice ", "No voxel is uncertain"))


def test_uncertainty_of_a_task_without_maps_is_a_sentence(logic, trainings):
    # the server refuses the option for a task without maps, naming those with one (an older server answered its
    # usual result, which MRILabelLib turns into "... answered without an uncertainty summary": unit-tested)
    with pytest.raises(ServerHTTPError) as refused:
        logic.uncertainty_map("tumor_pipeline", "synth02_flair")
    assert refused.value.status == 422
    assert plain_sentence(refused.value) == (
        "The server refused the request: params uncertainty: tumor_pipeline answers no uncertainty map; tasks that "
        "do: ['hippocampus', 'tumor_seg']."
    )
    with pytest.raises(ValueError) as caught:
        logic.uncertainty_map("tumor_gate", "synth01_flair")  # a classifier: refused before anything is sent
    assert plain_sentence(caught.value).startswith("tumor_gate does not give uncertainty maps")
    with pytest.raises(ServerHTTPError) as caught:
        logic.client.infer("tumor_seg", "synth01_flair", {"uncertainty": "yes"}, output="json")
    assert caught.value.status == 422
    assert plain_sentence(caught.value) == (
        "The server refused the request: params uncertainty must be true or false, got 'yes'."
    )


def test_class_correction_reaches_the_datastore(logic):
    answer = logic.submit_class("sequence", "synth_slice03", "T2")
    assert answer["label"] == "T2"
    info = logic.client.datastore()["objects"]["synth_slice03"]["image"]["info"]
    assert info["class_labels"]["sequence"]["label"] == "T2" and info["class_labels"]["sequence"]["source"] == "user"


def test_segmentation_correction_is_saved_as_final(logic, server, tmp_path):
    image = nib.load(server["studies"] / "synth05_flair.nii.gz")
    mask = np.zeros(image.shape, np.uint8)
    mask[30:41, 50:57, 5:8] = 1
    path = tmp_path / "edited.nii.gz"
    nib.save(nib.Nifti1Image(mask, image.affine), path)
    logic.submit_segmentation("tumor_seg", "synth05_flair", str(path), ["tumor"])
    saved = nib.load(server["studies"] / "labels" / "final" / "synth05_flair.nii.gz")
    assert np.array_equal(np.asarray(saved.dataobj), mask)
    labels = logic.client.datastore()["objects"]["synth05_flair"]["labels"]["final"]["info"]
    assert labels["label_info"] == [{"name": "tumor", "idx": 1}]


def test_misnamed_segment_is_refused_before_sending(logic, tmp_path):
    path = tmp_path / "x.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((96, 96, 16), np.uint8), np.eye(4)), path)
    with pytest.raises(ValueError) as caught:
        logic.submit_segmentation("tumor_seg", "synth05_flair", str(path), ["Segment_1"])
    assert (
        plain_sentence(caught.value)
        == "segment_names ['Segment_1'] are not labels of this task; rename them to one of ['tumor']."
    )


@pytest.mark.parametrize("strategy", ["first", "random"])
def test_next_sample_is_downloaded(logic, server, strategy):
    sample = logic.next_sample(strategy)
    assert sample.image_id in logic.client.datastore()["objects"]
    assert Path(sample.path).read_bytes() == (server["studies"] / sample.info["name"]).read_bytes()


def test_unknown_strategy_is_refused_with_the_offered_ones(logic):
    with pytest.raises(ValueError) as caught:
        logic.next_sample("cleverest")
    assert plain_sentence(caught.value) == (
        "strategy 'cleverest' is not offered by this server; strategies: ['entropy', 'epistemic', 'first', 'random']."
    )


def test_unreachable_server_sentence():
    url = f"http://127.0.0.1:{free_port()}"
    closed = ServerLogic(client=ServerClient(url, retries=1, backoff_s=0.01))
    with pytest.raises(ServerUnreachableError) as caught:
        closed.tasks()
    assert plain_sentence(caught.value) == (
        f"The MONAI Label server at {url} cannot be reached; check that it is running and that the address is right."
    )


def test_unknown_model_sentence(logic):
    with pytest.raises(ServerHTTPError) as caught:
        logic.run_task("no_such_model", "synth01_flair")
    assert caught.value.status == 404
    assert plain_sentence(caught.value).startswith(
        "The server refused the request: model 'no_such_model' is not served here;"
    )


def test_bad_class_sentence(logic):
    with pytest.raises(ServerHTTPError) as caught:
        logic.submit_class("sequence", "synth01_t2", "T5")
    assert caught.value.status == 422
    assert plain_sentence(caught.value) == (
        "The server refused the request: class 'T5' is not a class of sequence; valid classes: ['T1', 'T2', 'FLAIR']."
    )


def test_unknown_image_without_a_file_to_upload(logic):
    with pytest.raises(ValueError) as caught:
        logic.run_task("tumor_gate", "no_such_image")
    assert "no_such_image" in plain_sentence(caught.value) and "\n" not in plain_sentence(caught.value)


def test_class_activation_map_needs_a_classifier(logic):
    with pytest.raises(ValueError) as caught:
        logic.class_activation_map("tumor_seg", "synth01_flair")
    assert plain_sentence(caught.value) == "task must be a classifier to give a class-activation map, got 'tumor_seg'."


def test_signing_in_is_a_no_op_where_auth_is_off(logic):
    assert logic.sign_in("anyone", "anything") is False and not logic.client.logged_in
