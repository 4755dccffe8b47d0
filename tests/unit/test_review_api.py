"""PUT /mri/review/<image> and GET /mri/review in process: review states kept in the final label's info, reset by a
new final label, refusals naming the field, roles; ``--conf train_on approved`` trains on approved labels only."""

import json
import logging

import pytest

from lib import stock

TUMOR_LABELS = 10  # final tumor_seg labels of the sample data: 6 FLAIR volumes, 4 slices
FINAL_LABELS = 14  # and 4 hippocampus ones


@pytest.fixture
def api_conf():
    return {
        "models": "tumor_seg,tumor_gate,hippocampus",
        "tumor_seg_image_size": "64",
        "tumor_gate_image_size": "64",
        "train_on": "approved",
    }


def _review(client, image, body, headers=None):
    return client.put(f"/mri/review/{image}", json=body, headers=headers or {})


def _listed(client, status=None):
    answer = client.get("/mri/review", params={"status": status} if status else {})
    assert answer.status_code == 200, answer.text
    return {i["image"]: i for i in answer.json()["images"]}


def test_review_states(api_server):
    client, app, _ = api_server
    pending = _listed(client, "pending")
    assert len(pending) == FINAL_LABELS and _listed(client, "approved") == {}
    expected = {"image": "synth01_flair", "task": "tumor_seg", "status": "pending", "review": None}
    assert pending["synth01_flair"] == expected
    assert pending["synth_hippo01_t1"]["task"] == "hippocampus"

    approved = _review(client, "synth01_flair", {"status": "approved", "comment": "clean margins"})
    assert approved.status_code == 200, approved.text
    review = approved.json()["review"]
    assert review["status"] == "approved" and review["comment"] == "clean margins"
    assert review["reviewer"] == "anonymous" and review["time"].endswith("Z")
    assert app.datastore().get_label_info("synth01_flair", "final")["review"] == review  # in the label's info
    assert _review(client, "synth02_flair", {"status": "needs_changes"}).json()["review"]["comment"] == ""

    assert list(_listed(client, "approved")) == ["synth01_flair"]
    assert _listed(client, "approved")["synth01_flair"]["review"] == review
    assert list(_listed(client, "needs_changes")) == ["synth02_flair"]
    assert len(_listed(client, "pending")) == FINAL_LABELS - 2
    every = _listed(client)
    assert len(every) == FINAL_LABELS and every["synth02_flair"]["status"] == "needs_changes"
    again = _review(client, "synth02_flair", {"status": "approved"})  # a later review replaces it
    assert again.status_code == 200 and set(_listed(client, "approved")) == {"synth01_flair", "synth02_flair"}


def test_a_new_final_label_is_pending_again(api_server, tmp_path):
    client, app, _ = api_server
    assert _review(client, "synth01_flair", {"status": "approved"}).status_code == 200
    label = open(app.datastore().get_label_uri("synth01_flair", "final"), "rb").read()
    info = {"task": "tumor_seg"}
    saved = client.put(
        "/datastore/label?image=synth01_flair&tag=final",
        files={"label": ("m.nii.gz", label)},
        data={"params": json.dumps(info)},
    )
    assert saved.status_code == 200, saved.text
    assert "review" not in app.datastore().get_label_info("synth01_flair", "final")
    assert _listed(client, "pending")["synth01_flair"]["review"] is None
    # a sender cannot set a review with the label or its info
    forged = dict(info, review={"status": "approved"})
    refused = client.put(
        "/datastore/label?image=synth01_flair&tag=final",
        files={"label": ("m.nii.gz", label)},
        data={"params": json.dumps(forged)},
    )
    assert refused.status_code == 422 and "review" in refused.json()["detail"]
    refused = client.put(
        "/datastore/label/info?label=synth01_flair&tag=final", data={"info": json.dumps({"review": {"status": "x"}})}
    )
    assert refused.status_code == 422 and "review" in refused.json()["detail"]
    assert "synth01_flair" in _listed(client, "pending")
    # nor through the datastore itself (importers, the DICOMweb datastore's save)
    copy = tmp_path / "label.nii.gz"
    copy.write_bytes(label)
    app.datastore().save_label("synth01_flair", str(copy), "final", forged)
    assert "synth01_flair" in _listed(client, "pending")


@pytest.mark.parametrize(
    "image,body,status,words",
    [
        ("synth01_flair", {"status": "maybe"}, 422, "status must be one of approved, needs_changes"),
        ("synth01_flair", {"status": "pending"}, 422, "status must be one of"),
        ("synth01_flair", {}, 422, "status must be one of"),
        ("synth01_flair", {"status": "approved", "comment": "x" * 2001}, 422, "comment must be at most 2000"),
        ("synth01_flair", {"status": "approved", "comment": 5}, 422, "comment must be a string"),
        ("synth01_flair", {"status": "approved", "grade": 1}, 422, "unknown review field(s) ['grade']"),
        ("synth01_flair", ["approved"], 422, "must be a JSON object"),
        ("no_such_image", {"status": "approved"}, 404, "not in the datastore"),
        ("synth01_t1", {"status": "approved"}, 404, "has no final label"),
        ("bad..id", {"status": "approved"}, 422, "image id"),
    ],
)
def test_bad_reviews_are_refused(api_server, image, body, status, words):
    client, app, _ = api_server
    answer = _review(client, image, body)
    assert answer.status_code == status and words in answer.json()["detail"], answer.text
    assert _listed(client, "approved") == {} and _listed(client, "needs_changes") == {}


def test_a_comment_of_2000_characters_is_taken(api_server):
    client, _, _ = api_server
    assert _review(client, "synth01_flair", {"status": "needs_changes", "comment": "x" * 2000}).status_code == 200


def test_an_unknown_state_is_refused(api_server):
    answer = api_server[0].get("/mri/review?status=done")
    assert answer.status_code == 422 and "status must be one of pending, approved, needs_changes" in answer.text


@pytest.mark.parametrize(
    "role,allowed", [(None, 401), ("user", 403), ("annotator", 403), ("reviewer", 200), ("admin", 200)]
)
def test_roles(api_server, auth_on, role, allowed):
    from monailabel.config import settings

    client, app, _ = api_server
    headers = auth_on(role and getattr(settings, f"MONAI_LABEL_AUTH_ROLE_{role.upper()}"), "rita.reviewer")
    answer = _review(client, "synth01_flair", {"status": "approved"}, headers)
    assert answer.status_code == allowed, answer.text
    assert client.get("/mri/review", headers=headers).status_code == allowed
    if allowed == 403:
        assert "reviewer" in answer.json()["detail"]
    if allowed == 200:
        assert app.datastore().get_label_info("synth01_flair", "final")["review"]["reviewer"] == "rita.reviewer"


def test_train_on_approved_uses_only_approved_labels(api_server, caplog):
    client, app, _ = api_server
    datastore = app.datastore()
    segmenter, gate = stock.trainers(app)["tumor_seg"], stock.trainers(app)["tumor_gate"]
    with caplog.at_level(logging.WARNING):
        everything = segmenter.items(datastore)
    assert segmenter._label_rule["rule"] == "all: none approved yet" and segmenter._label_rule["used"] == TUMOR_LABELS
    assert any("none of its 10 final labels is approved yet" in r.getMessage() for r in caplog.records)

    approved = ["synth01_flair", "synth_slice01"]
    for image in approved:
        assert _review(client, image, {"status": "approved"}).status_code == 200
    assert _review(client, "synth02_flair", {"status": "needs_changes"}).status_code == 200
    items = segmenter.items(datastore)
    assert 0 < len(items) < len(everything)
    assert {i["source_image"] for i in items} == {datastore.get_image_uri(image) for image in approved}
    assert segmenter._label_rule == {
        "train_on": "approved",
        "rule": "approved",
        "used": 2,
        "skipped": TUMOR_LABELS - 2,
        "by_review": {"pending": TUMOR_LABELS - 3, "approved": 2, "needs_changes": 1},
    }
    gate.items(datastore)  # its per-slice labels come from the approved tumor_seg masks only
    assert gate._label_rule["task"] == "tumor_seg" and gate._label_rule["used"] == 2
