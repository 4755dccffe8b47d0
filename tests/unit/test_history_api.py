"""GET /mri/history/<task> and POST /mri/rollback/<task> in process: a real 1-epoch fine-tune of tumor_seg appears in
the history; rollback serves the archived weights (the next infer loads them); refusals and roles."""

import hashlib
import json
import os
import shutil

import pytest
import torch

from lib import stock

TASK = "tumor_seg"
IMAGE = "synth01_flair"


@pytest.fixture
def api_conf():
    return {"models": TASK, "tumor_seg_image_size": "64", "history_keep": "3"}


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _finetune(app, monkeypatch, served_scores=0.0):
    """A 1-epoch fine-tune run in process, the served checkpoint measured at ``served_scores`` (0: promoted)."""
    trainer = stock.trainers(app)[TASK]
    monkeypatch.setattr(
        type(trainer), "evaluate_checkpoint", lambda self, context, path: {"name": "val", "value": served_scores}
    )
    request = {"finetune": True, "max_epochs": 1, "name": "finetune", "al_run": "r1", "dataset": "Dataset"}
    return trainer(request, app.datastore())


def _cached_weights(app):
    """The weights of the network the tumor_seg infer task holds in its cache (MONAI Label's ``_networks``)."""
    (network, _), *_ = stock.infers(app)[TASK]._networks.values()
    return network.state_dict()


def test_a_finetune_is_recorded_and_rollback_serves_the_previous_weights(api_trained, monkeypatch):
    client, app, _ = api_trained
    config = app.models[TASK]
    initial = _sha(config.path)
    empty = client.get(f"/mri/history/{TASK}")
    assert empty.status_code == 200, empty.text
    assert empty.json()["entries"] == [] and empty.json()["served"]["name"] == "model/tumor_seg/model.pt"

    stats = _finetune(app, monkeypatch)
    assert stats["finetune"]["promoted"] is True and _sha(config.path) != initial
    answer = client.get(f"/mri/history/{TASK}").json()
    (entry,) = answer["entries"]
    assert entry["event"] == "promoted" and entry["run"] == "r1" and entry["epochs"] == 1
    assert entry["metric_before"] == 0.0 and entry["metric_after"] is not None and entry["labelled_images"] > 0
    assert entry["archive"] and entry["final_labels"]["rule"] == "all" and entry["time"].endswith("Z")
    archived = os.path.join(config.task_dir, "history", entry["archive"], "model.pt")
    assert _sha(archived) == initial
    assert answer["served"]["mtime"] == os.stat(config.path).st_mtime
    card = json.load(open(os.path.join(config.task_dir, "model.json")))
    assert card["training"]["final_labels"] == dict(entry["final_labels"])

    before = client.post(f"/infer/{TASK}?image={IMAGE}&output=json")
    assert before.status_code == 200, before.text
    assert before.json()["checkpoint"]["mtime"] == answer["served"]["mtime"]

    rolled = client.post(f"/mri/rollback/{TASK}")
    assert rolled.status_code == 200, rolled.text
    assert _sha(config.path) == initial and rolled.json()["served"]["mtime"] > answer["served"]["mtime"]
    assert not os.path.exists(os.path.join(config.task_dir, "model.json"))  # the restored one had none

    after = client.post(f"/infer/{TASK}?image={IMAGE}&output=json")
    assert after.status_code == 200 and after.json()["checkpoint"] == rolled.json()["served"]
    restored = torch.load(config.path, map_location="cpu")["model"]
    cached = _cached_weights(app)
    assert all(torch.equal(cached[k].cpu(), restored[k]) for k in restored)  # the infer reloaded the file

    entries = client.get(f"/mri/history/{TASK}").json()["entries"]
    assert [e["event"] for e in entries] == ["rolled back", "promoted"]
    assert entries[0]["restored"] == entry["archive"] and entries[0]["by"] == "anonymous"
    assert entries[0]["from"]["mtime"] == answer["served"]["mtime"] and entries[1]["archive"] is None
    assert _sha(os.path.join(config.task_dir, "history", entries[0]["archive"], "model.pt")) != initial


def _archive_something(config):
    folder = os.path.join(config.task_dir, "history", "20240101T000000.000000Z")
    os.makedirs(folder)
    shutil.copy(config.path, folder)


def test_rollback_refusals(api_trained, monkeypatch):
    from monailabel.utils.async_tasks.utils import background_tasks

    client, app, _ = api_trained
    config = app.models[TASK]
    for call in (client.get, client.post):
        unknown = call(f"/mri/{'history' if call == client.get else 'rollback'}/tumor_pipeline")
        assert unknown.status_code == 404 and "no task 'tumor_pipeline'" in unknown.json()["detail"]
    nothing = client.post(f"/mri/rollback/{TASK}")
    assert nothing.status_code == 409 and "no archived checkpoint" in nothing.json()["detail"]

    _archive_something(config)
    running = {"id": "t1", "status": "RUNNING", "request": {"model": TASK}}
    monkeypatch.setitem(background_tasks, "train", [running])
    busy = client.post(f"/mri/rollback/{TASK}")
    assert busy.status_code == 409 and "training of tumor_seg is running" in busy.json()["detail"]
    running["request"] = {"model": "hippocampus"}  # another task's training does not stop it
    assert client.post(f"/mri/rollback/{TASK}").status_code == 200


@pytest.mark.parametrize("role,history,rollback", [("user", 200, 403), ("reviewer", 200, 403), ("admin", 200, 200)])
def test_roles(api_trained, auth_on, role, history, rollback):
    from monailabel.config import settings

    client, app, _ = api_trained
    _archive_something(app.models[TASK])
    headers = auth_on(getattr(settings, f"MONAI_LABEL_AUTH_ROLE_{role.upper()}"), "adam.admin")
    assert client.get(f"/mri/history/{TASK}").status_code == 401
    assert client.get(f"/mri/history/{TASK}", headers=headers).status_code == history
    refused = client.post(f"/mri/rollback/{TASK}", headers=headers)
    assert refused.status_code == rollback, refused.text
    if rollback == 403:
        assert "admin" in refused.json()["detail"]
    else:
        assert client.get(f"/mri/history/{TASK}", headers=headers).json()["entries"][0]["by"] == "adam.admin"


def test_rollback_waits_for_a_training_in_the_server_process(api_trained, monkeypatch):
    """A training run in the server's own process (``run_sync``) also holds rollback off."""
    client, app, _ = api_trained
    _archive_something(app.models[TASK])
    trainer = stock.trainers(app)[TASK]
    spawner = next(c for c in type(trainer).__mro__ if c.__name__ == "DistributedTrainTask")
    answers = []
    monkeypatch.setattr(
        spawner, "__call__", lambda self, request, datastore: answers.append(client.post(f"/mri/rollback/{TASK}"))
    )
    trainer({}, app.datastore())
    assert answers[0].status_code == 409 and "is running" in answers[0].json()["detail"]
    assert client.post(f"/mri/rollback/{TASK}").status_code == 200


def test_a_run_may_not_be_named_after_the_history_folder(api_trained):
    client, _, _ = api_trained
    refused = client.post(f"/train/{TASK}", json={"name": "history", "max_epochs": 1})
    assert refused.status_code == 422 and "reserved" in refused.json()["detail"]
