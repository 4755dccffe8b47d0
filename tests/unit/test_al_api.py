"""Uncertainty strategies through the in-process HTTP API with real (initial-weight) checkpoints."""

import math

import pytest
from fastapi.testclient import TestClient

from tests.helpers.app import APP_DIR, write_checkpoints


@pytest.fixture
def server(datastore_dir, tmp_path):
    from monailabel.config import settings
    from monailabel.interfaces.utils.app import app_instance, clear_cache

    settings.MONAI_LABEL_APP_DIR = str(APP_DIR)
    settings.MONAI_LABEL_STUDIES = str(datastore_dir)
    settings.MONAI_LABEL_APP_CONF = {
        "models": "sequence,tumor_seg",
        "model_dir": str(tmp_path / "model"),
        "tumor_seg_image_size": "64",
    }
    settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD = False
    clear_cache()
    from monailabel.app import app

    with TestClient(app) as client:
        yield client, app_instance()
    clear_cache()


def _info(client, image):
    return client.get(f"/datastore/image/info?image={image}").json()


def test_entropy_strategy_picks_the_unlabelled_image_with_the_flattest_prediction(server):
    client, app = server
    assert client.post("/activelearning/entropy", json={"task": "sequence"}).status_code == 409  # no checkpoint yet
    write_checkpoints(app)
    unlabelled = ["synth01_t2", "synth02_flair", "synth_slice01"]
    for image in unlabelled:
        assert client.delete(f"/classlabel/sequence?image={image}").status_code == 200
    choice = client.post("/activelearning/entropy", json={"task": "sequence"}).json()
    assert choice["id"] in unlabelled and choice["strategy"] == "entropy"
    entropies = {}
    for image in unlabelled:
        probabilities = client.post(f"/infer/sequence?image={image}&output=json").json()["probabilities"]
        entropies[image] = -sum(p * math.log(max(p, 1e-12)) for p in probabilities.values())
        assert _info(client, image)["al_scores"]["sequence"]["entropy"] == pytest.approx(entropies[image], abs=1e-4)
    assert choice["id"] == max(entropies, key=entropies.get)
    assert "al_scores" not in _info(client, "synth03_t2")  # labelled images are not scored
    assert client.post("/activelearning/entropy", json={"task": "tumor_seg"}).status_code == 404


def test_epistemic_strategy_picks_the_highest_mc_dropout_variance(server):
    client, app = server
    write_checkpoints(app)
    choice = client.post("/activelearning/epistemic", json={}).json()
    assert choice["task"] == "tumor_seg" and choice["strategy"] == "epistemic"
    images = client.get("/datastore/?output=all").json()["objects"]
    scored = {
        i: o["image"]["info"]["al_scores"]["tumor_seg"]["epistemic"]
        for i, o in images.items()
        if "al_scores" in o["image"]["info"]
    }
    unlabelled = {i for i, o in images.items() if "final" not in o.get("labels", {})}
    assert set(scored) == unlabelled and choice["id"] in unlabelled
    assert scored[choice["id"]] == max(scored.values()) > 0
