"""The Slicer module's plain logic (MRILabelLib) against a real mri-label server: the model history of tumor_seg after
a 1-epoch fine-tune, a rollback that serves the previous checkpoint again, and the review round trip of a final
label (submitted, pending, loaded, approved, sent back, submitted again). Auth and roles: test_slicer_auth.py.

One server for the whole file serving tumor_seg only (64-pixel slices), trained 1 epoch, then fine-tuned 1 epoch.
"""

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest

from MRILabelLib import ServerLogic, plain_sentence
from MRILabelLib.errors import ServerHTTPError
from tests.helpers.app import plant_archive

TASK = "tumor_seg"
IMAGE = "synth01_t1"  # no final label in the sample data


@pytest.fixture(scope="module")
def server(tumor_seg_server):
    return tumor_seg_server


@pytest.fixture(scope="module")
def logic(server, tmp_path_factory):
    return ServerLogic(server["url"], poll_interval_s=0.5, work_dir=str(tmp_path_factory.mktemp("slicer_review")))


@pytest.fixture(scope="module")
def trained(logic):
    """tumor_seg trained for 1 epoch (a full training: no history entry)."""
    return logic.train(TASK, max_epochs=1, params={"name": "slicer_first"})


@pytest.fixture(scope="module")
def finetuned(trained, logic):
    """The history before and after a 1-epoch fine-tune (``{"finetune": true}``, what auto-retrain sends)."""
    before = logic.model_history(TASK)
    state = logic.train(TASK, max_epochs=1, params={"name": "slicer_finetune", "finetune": True})
    assert state.status == "DONE"
    return before, logic.model_history(TASK)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_rollback_without_an_archive_is_the_servers_sentence(trained, logic, server):
    with pytest.raises(ServerHTTPError) as refused:
        logic.roll_back(TASK)
    assert refused.value.status == 409
    assert plain_sentence(refused.value) == (
        "The server refused the request: tumor_seg has no archived checkpoint to roll back to."
    )


def test_the_history_of_a_finetune_is_read_by_the_client(finetuned, server):
    before, after = finetuned
    assert before.rows == [] and before.served is not None and before.served.name == "model/tumor_seg/model.pt"
    assert before.sentence() == "tumor_seg has no model history yet: no fine-tune run or rollback so far."
    (row,) = after.rows
    entry = json.loads((server["models"] / TASK / "history.json").read_text())[-1]
    assert row.event == entry["event"] and row.event in ("promoted", "kept")
    assert row.time == entry["time"].replace("T", " ").replace("Z", " UTC")
    assert row.reason.startswith(entry["reason"])
    if entry["metric_before"] is not None and entry["metric_after"] is not None:
        assert row.metric == f"{entry['metric']}: {entry['metric_before']:.4f} → {entry['metric_after']:.4f}"
    assert after.served is not None and after.served.name == "model/tumor_seg/model.pt"
    assert after.served_line().startswith("tumor_seg serves model/tumor_seg/model.pt (written ")
    if entry["event"] == "promoted":  # the checkpoint trained first was archived, a newer one is served
        assert row.archive == entry["archive"] and after.newest_archive == entry["archive"]
        assert after.served.mtime > before.served.mtime
    else:
        assert after.served == before.served


def test_rollback_serves_the_previous_checkpoint_again(finetuned, logic, server):
    task_dir = server["models"] / TASK
    folder = task_dir / "history"
    archives = sorted(p for p in folder.iterdir() if (p / "model.pt").is_file()) if folder.is_dir() else []
    if not archives:  # the fine-tune was kept: nothing was archived, so archive a checkpoint as a promotion would
        archives = [plant_archive(task_dir)]
    previous = archives[-1]
    expected, replaced = _sha(previous / "model.pt"), _sha(task_dir / "model.pt")
    assert expected != replaced
    served_before = logic.model_history(TASK).served

    result = logic.roll_back(TASK)
    assert result.restored == previous.name and _sha(task_dir / "model.pt") == expected
    assert result.served.mtime > served_before.mtime  # the served info changed: the next inference reloads
    assert result.sentence().startswith(
        f"tumor_seg was rolled back: it serves the checkpoint archived as {previous.name}"
    )
    assert result.row.archive and _sha(folder / result.row.archive / "model.pt") == replaced  # a rollback can undo it

    history = logic.model_history(TASK)
    assert history.rows[0].event == "rolled back" and history.served == result.served
    assert history.rows[0].reason.startswith(f"served the checkpoint archived as {previous.name} again (by anonymous)")
    answer = logic.run_task(TASK, "synth01_flair")
    assert answer.raw["checkpoint"]["mtime"] == result.served.mtime  # the infer uses the restored checkpoint


def _states(logic):
    return {status: {item.image: item for item in logic.reviews(status)} for status in ("pending", "approved")}


def test_review_round_trip(logic, server, tmp_path):
    before = _states(logic)
    assert IMAGE not in before["pending"] and IMAGE not in before["approved"]
    assert before["pending"]["synth01_flair"].task == TASK  # the sample data's final labels await review

    source = nib.load(server["studies"] / f"{IMAGE}.nii.gz")
    mask = np.zeros(source.shape, np.uint8)
    mask[40:52, 30:44, 6:9] = 1
    path = tmp_path / "final.nii.gz"
    nib.save(nib.Nifti1Image(mask, source.affine), path)
    logic.submit_segmentation(TASK, IMAGE, str(path), ["tumor"])
    (pending,) = [item for item in logic.reviews("pending") if item.image == IMAGE]
    assert pending.task == TASK and pending.review is None and pending.text() == f"{IMAGE} — {TASK}"

    # Load: the image and its final label, downloaded side by side
    sample = logic.fetch_for_review(IMAGE, TASK, folder=str(tmp_path))
    assert open(sample.image_path, "rb").read() == (server["studies"] / f"{IMAGE}.nii.gz").read_bytes()
    label = nib.load(sample.label_path)
    assert np.array_equal(np.asarray(label.dataobj), mask) and sample.label_names == {"tumor": 1}
    np.testing.assert_allclose(label.affine, source.affine, atol=1e-4)

    with pytest.raises(ValueError):  # refused before sending: the state is unchanged
        logic.review(IMAGE, "approved", "x" * 2001)
    review = logic.review(IMAGE, "approved", "clean margins")
    assert (review.status, review.comment, review.reviewer) == ("approved", "clean margins", "anonymous")
    after = _states(logic)
    assert IMAGE not in after["pending"] and after["approved"][IMAGE].review.comment == "clean margins"
    assert after["approved"][IMAGE].text().startswith(f"{IMAGE} — {TASK} — approved by anonymous, ")

    logic.review(IMAGE, "needs changes", "the lower edge is missing")
    (sent_back,) = [item for item in logic.reviews("needs changes") if item.image == IMAGE]
    assert sent_back.review.comment == "the lower edge is missing"
    logic.submit_segmentation(TASK, IMAGE, str(path), ["tumor"])  # corrected: pending again
    assert [item.review for item in logic.reviews("pending") if item.image == IMAGE] == [None]


def test_a_decision_on_an_image_without_a_final_label_is_the_servers_sentence(logic):
    with pytest.raises(ServerHTTPError) as refused:
        logic.review("synth02_t1", "approved")
    assert refused.value.status == 404
    assert plain_sentence(refused.value) == (
        "The server refused the request: image 'synth02_t1' has no final label to review."
    )
    with pytest.raises(ValueError) as missing:
        logic.fetch_for_review("synth02_t1", TASK)
    assert plain_sentence(missing.value) == (
        "synth02_t1 has no final label on the server (any more); refresh the review list."
    )
