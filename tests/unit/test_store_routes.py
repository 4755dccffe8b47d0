"""Model-weight uploads/deletes and info updates (lib.store_routes): the served and shipped checkpoints and the
app-managed info keys are protected; bad uploads get a 4xx."""

import io
import json
import os

import pytest
import torch

from tests.helpers.app import snapshot


def _bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "upload, words",
    [
        (b"not a checkpoint", "not a PyTorch checkpoint"),
        (_bytes([1, 2, 3]), "no state dict"),
        (_bytes({"model": {"conv.weight": torch.zeros(2, 2)}}), "do not fit"),
    ],
)
def test_weights_that_do_not_fit_are_refused(api_server, upload, words):
    client, app, _ = api_server
    response = client.put("/model/tumor_gate", files={"file": ("w.pt", upload)})
    assert response.status_code == 422 and words in response.json()["detail"], response.text
    assert not os.path.exists(app.models["tumor_gate"].path)


def test_uploaded_weights_are_served_and_the_shipped_ones_never_touched(api_server, tmp_path):
    client, app, _ = api_server
    config = app.models["tumor_gate"]
    shipped = tmp_path / "shipped.pt"
    shipped.write_bytes(b"the app's own checkpoint")
    config.shipped_path = str(shipped)
    refused = client.delete("/model/tumor_gate")
    assert refused.status_code == 409 and "shipped checkpoint" in refused.json()["detail"]
    weights = {
        k: torch.full_like(v, 0.01) if v.is_floating_point() else v for k, v in config.network.state_dict().items()
    }
    response = client.put("/model/tumor_gate", files={"file": ("w.pt", _bytes(weights))})
    assert response.status_code == 200, response.text
    served = torch.load(config.path, weights_only=True)["model"]
    assert all(torch.equal(served[k], weights[k]) for k in weights)
    card = json.loads((tmp_path / "model" / "tumor_gate" / "model.json").read_text(encoding="utf-8"))
    assert card["task"] == "tumor_gate" and card["training"]["source"] == "uploaded with PUT /model"
    deleted = client.delete("/model/tumor_gate")
    assert deleted.status_code == 200 and not (tmp_path / "model" / "tumor_gate" / "model.pt").exists()
    assert shipped.read_bytes() == b"the app's own checkpoint"
    assert client.put("/model/banana", files={"file": ("w.pt", _bytes(weights))}).status_code == 404


@pytest.mark.parametrize(
    "url, info, status, words",
    [
        (
            "/datastore/image/info?image=synth01_t1",
            '{"class_labels": {"sequence": {"label": "T2"}}}',
            422,
            "managed by the server",
        ),
        (  # a forged earlier result would change the next study's change over time (lib.follow_up)
            "/datastore/image/info?image=synth01_t1",
            '{"measured": {"hippocampus": {"values": {"total_mm3": 1}}}}',
            422,
            "managed by the server",
        ),
        ("/datastore/image/info?image=synth01_t1", "{not json", 422, "JSON object"),
        ("/datastore/image/info?image=synth01_t1", "[1, 2]", 422, "JSON object"),
        ("/datastore/image/info?image=nobody", '{"note": "x"}', 404, "nobody"),
        ("/datastore/label/info?label=synth01_t1&tag=nosuchtag", '{"note": "x"}', 404, "nosuchtag"),
    ],
)
def test_bad_info_updates_change_nothing(api_server, url, info, status, words):
    client, _, folder = api_server
    before = snapshot(folder)
    response = client.put(url, data={"info": info})
    assert response.status_code == status and words in response.json()["detail"], response.text
    assert snapshot(folder) == before


def test_free_info_keys_are_stored(api_server):
    client, app, _ = api_server
    response = client.put("/datastore/image/info?image=synth01_t1", data={"info": '{"site": "A"}'})
    assert response.status_code == 200, response.text
    assert app.datastore().get_image_info("synth01_t1")["site"] == "A"


def _volume(folder, image) -> bytes:
    return (folder / f"{image}.nii.gz").read_bytes()


@pytest.mark.parametrize("url", ["/datastore/image?image=synth04_flair", "/datastore/image"])
def test_an_image_with_labels_is_replaced_only_when_asked(api_server, url):
    """Named by ``image=`` or by the upload's file name (MONAI Label's default): 409 unless ``replace=true``;
    replacing (auth off: the caller is admin) drops the old labels and class labels."""
    client, app, folder = api_server
    before = snapshot(folder)
    upload = {"file": ("synth04_flair.nii.gz", _volume(folder, "synth01_t1"))}
    refused = client.put(url, files=upload)
    assert refused.status_code == 409 and "has labels" in refused.json()["detail"], refused.text
    assert snapshot(folder) == before
    replaced = client.put(url + ("&" if "?" in url else "?") + "replace=true", files=upload)
    assert replaced.status_code == 200 and replaced.json() == {"image": "synth04_flair"}, replaced.text
    assert app.datastore().get_labels_by_image_id("synth04_flair") == {}
    assert not app.datastore().get_image_info("synth04_flair").get("class_labels")
    assert (folder / "synth04_flair.nii.gz").read_bytes() == _volume(folder, "synth01_t1")
