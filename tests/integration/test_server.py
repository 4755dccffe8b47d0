"""End to end: the real server as a subprocess, driven with MONAI Label's own client (as the Slicer panel does)."""

import json
import time

import nibabel as nib
import numpy as np
import pytest
import requests
from monailabel.client.client import MONAILabelClient, MONAILabelClientException

from tests.helpers.live_server import running_server

TASKS = ["sequence", "dementia_stage", "tumor_gate", "tumor_seg", "hippocampus", "tumor_type"]
CLASSIFIERS = ("sequence", "dementia_stage", "tumor_gate", "tumor_type")
IMAGES = {
    "sequence": "synth01_t2",
    "dementia_stage": "synth02_t1",
    "tumor_gate": "synth01_flair",
    "tumor_seg": "synth01_flair",
    "hippocampus": "synth_hippo01_t1",
    "tumor_pipeline": "synth02_flair",
    "tumor_type": "synth03_flair",
}


@pytest.fixture(scope="module")
def live_server(tmp_path_factory, sample_template):
    with running_server(tmp_path_factory.mktemp("live"), sample_template) as server:
        yield server


@pytest.fixture(scope="module")
def client(live_server):
    return MONAILabelClient(live_server["url"], tmpdir=str(live_server["studies"].parent / "client"))


def _wait_for_training(client, timeout=600) -> dict:
    """Poll MONAI Label's train status until the latest training has ended; return its record."""
    started = time.time()
    while time.time() - started < timeout:
        status = client.train_status()
        if status.get("status") in ("DONE", "ERROR", "STOPPED"):
            return status
        time.sleep(1)
    raise AssertionError("training did not finish in time")


def _infer(client, task, image):
    """MONAI Label's client returns a JSON-only answer (classifiers) as raw bytes; decode it."""
    label_file, result = client.infer(task, image, {})
    return label_file, json.loads(result) if isinstance(result, (bytes, str)) else result


def test_info_lists_every_task(client):
    info = client.info()
    assert set(info["models"]) == {*TASKS, "tumor_pipeline"}
    assert set(info["trainers"]) == set(TASKS)
    for name in CLASSIFIERS:
        assert info["models"][name]["type"] == "classification"
    for name in ("tumor_seg", "hippocampus", "tumor_pipeline"):
        assert info["models"][name]["type"] == "segmentation"
    assert info["models"]["hippocampus"]["labels"] == {"anterior": 1, "posterior": 2}


def test_untrained_infer_is_refused(client):
    with pytest.raises(MONAILabelClientException, match="Status: 409"):
        client.infer("sequence", IMAGES["sequence"], {})


@pytest.mark.parametrize("task", TASKS)
def test_one_epoch_training_publishes_a_checkpoint(client, live_server, task):
    client.train_start(task, {"max_epochs": 1, "name": "e2e"})
    status = _wait_for_training(client)
    assert status["status"] == "DONE", status
    assert (live_server["models"] / task / "model.pt").exists()
    card = json.loads((live_server["models"] / task / "model.json").read_text())
    assert card["task"] == task and card["labels"] and card["network"]["name"] in ("ResNet", "UNet")
    assert card["training"]["split"]["train_subjects"] and card["metrics"]["key_metric"]
    energy = card["training"]["energy"]
    assert energy["recorded"] is True and energy["energy_kwh"] > 0 and energy["co2_kg"] > 0


@pytest.mark.parametrize("task", [*TASKS, "tumor_pipeline"])
def test_infer_after_training(client, live_server, task):
    image = IMAGES[task]
    label_file, result = _infer(client, task, image)
    if task in CLASSIFIERS:
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert result["checkpoint"]["name"] == f"model/{task}/model.pt"  # a name, not the server's path
        assert str(live_server["models"]) not in json.dumps(result)
    else:
        mask = nib.load(label_file)
        assert mask.shape == nib.load(live_server["studies"] / f"{image}.nii.gz").shape
        assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2}
        assert "measurements" in result
    if task == "tumor_pipeline":  # third stage: the type where the gate fired, null where it did not
        kind = result["tumor_type"]
        if result["fired_slices"]:
            assert [s["index"] for s in kind["slices"]] == result["fired_slices"] and kind["label"] in kind[
                "probabilities"
            ]
        else:
            assert kind is None


def test_pipeline_answers_in_three_stages_where_the_gate_fires(client, live_server):
    image = IMAGES["tumor_pipeline"]
    label_file, fired = client.infer("tumor_pipeline", image, {"threshold": 0.0})
    fired = json.loads(fired) if isinstance(fired, (bytes, str)) else fired
    assert fired["tumor"] is True and fired["fired_slices"] == [s["index"] for s in fired["gate"]["slices"]]
    assert [s["index"] for s in fired["tumor_type"]["slices"]] == fired["fired_slices"]
    assert sum(fired["tumor_type"]["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert fired["checkpoints"]["tumor_type"]["name"] == "model/tumor_type/model.pt"
    assert nib.load(label_file).shape == nib.load(live_server["studies"] / f"{image}.nii.gz").shape
    label_file, quiet = client.infer("tumor_pipeline", image, {"threshold": 1.0})
    quiet = json.loads(quiet) if isinstance(quiet, (bytes, str)) else quiet
    assert quiet["tumor"] is False and quiet["fired_slices"] == [] and quiet["tumor_type"] is None
    assert not np.asarray(nib.load(label_file).dataobj).any()


def test_retraining_changes_the_checkpoint_the_next_infer_uses(client):
    _, before = _infer(client, "tumor_gate", IMAGES["tumor_gate"])
    client.train_start("tumor_gate", {"max_epochs": 1, "name": "e2e"})
    assert _wait_for_training(client)["status"] == "DONE"
    _, after = _infer(client, "tumor_gate", IMAGES["tumor_gate"])
    assert after["checkpoint"]["mtime"] > before["checkpoint"]["mtime"]
    assert after["slices"] != before["slices"]


def test_label_and_class_correction_reach_the_datastore(client, live_server, tmp_path):
    mask = np.zeros((96, 96, 16), np.uint8)
    mask[40:50, 40:50, 7:9] = 1
    path = tmp_path / "corrected.nii.gz"
    nib.save(nib.Nifti1Image(mask, nib.load(live_server["studies"] / "synth05_flair.nii.gz").affine), path)
    client.save_label("synth05_flair", str(path), tag="final", params={"label_info": [{"name": "tumor", "idx": 1}]})
    saved = nib.load(live_server["studies"] / "labels" / "final" / "synth05_flair.nii.gz")
    assert int(np.asarray(saved.dataobj).sum()) == mask.sum()

    response = requests.put(
        f"{live_server['url']}/classlabel/dementia_stage?image=synth05_t1", json={"label": "MildDemented"}
    )
    assert response.status_code == 200, response.text
    info = client.datastore()["objects"]["synth05_t1"]["image"]["info"]
    assert info["class_labels"]["dementia_stage"]["label"] == "MildDemented"
