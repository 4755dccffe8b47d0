"""The app's HTTP API in process (FastAPI TestClient): every endpoint the product relies on."""

import gzip
import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from lib import stock
from tests.helpers.app import snapshot

CLASSIFIERS = {
    "sequence": ["T1", "T2", "FLAIR"],
    "dementia_stage": ["NonDemented", "VeryMildDemented", "MildDemented", "ModerateDemented"],
    "tumor_gate": ["no_tumor", "tumor"],
    "tumor_type": ["glioma", "meningioma", "pituitary", "no_tumor"],
}
SEGMENTERS = {"tumor_seg": {"tumor": 1}, "hippocampus": {"anterior": 1, "posterior": 2}, "tumor_pipeline": {"tumor": 1}}


@pytest.fixture
def server(api_server):
    return api_server


@pytest.fixture
def trained(api_trained):
    return api_trained


def test_info_lists_every_task_with_type_and_labels(server):
    client, _, _ = server
    info = client.get("/info/").json()
    models = info["models"]
    for name, classes in CLASSIFIERS.items():
        assert models[name]["type"] == "classification"
        assert list(models[name]["labels"]) == classes
    for name, labels in SEGMENTERS.items():
        assert models[name]["type"] == "segmentation"
        assert models[name]["labels"] == labels
    assert models["tumor_gate"]["config"]["threshold"] == 0.5
    assert sorted(info["trainers"]) == [
        "dementia_stage",
        "hippocampus",
        "sequence",
        "tumor_gate",
        "tumor_seg",
        "tumor_type",
    ]


@pytest.mark.parametrize("model", [*CLASSIFIERS, *SEGMENTERS])
def test_untrained_model_is_refused_with_409(server, model):
    client, _, _ = server
    response = client.post(f"/infer/{model}?image=synth01_flair&output=json")
    assert response.status_code == 409
    assert "not trained yet" in response.json()["detail"]


@pytest.mark.parametrize(
    "model,image",
    [
        ("sequence", "synth02_t2"),
        ("sequence", "synth_slice01"),
        ("dementia_stage", "synth03_t1"),
        ("tumor_gate", "synth01_flair"),
        ("tumor_gate", "synth_slice02"),
        ("tumor_type", "synth02_flair"),
        ("tumor_type", "synth_slice01"),
    ],
)
def test_classifier_returns_probabilities_and_records_them(trained, model, image):
    client, _, _ = trained
    response = client.post(f"/infer/{model}?image={image}&output=json")
    assert response.status_code == 200, response.text
    result = response.json()
    probabilities = result["probabilities"]
    assert list(probabilities) == CLASSIFIERS[model]
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert result["label"] in CLASSIFIERS[model]
    assert result["slices"] and all(
        sum(s["probabilities"].values()) == pytest.approx(1.0, abs=1e-4) for s in result["slices"]
    )
    if image.startswith("synth_slice"):
        assert [s["index"] for s in result["slices"]] == [0]
    else:
        assert len(result["slices"]) > 1
    recorded = client.get(f"/datastore/image/info?image={image}").json()["predictions"][model]
    assert recorded["label"] == result["label"] and recorded["probabilities"] == probabilities


def test_tumor_gate_reports_threshold_and_request_can_move_it(trained):
    client, _, _ = trained
    low = client.post(
        "/infer/tumor_gate?image=synth01_flair&output=json", data={"params": json.dumps({"threshold": 0.0})}
    ).json()
    high = client.post(
        "/infer/tumor_gate?image=synth01_flair&output=json", data={"params": json.dumps({"threshold": 1.0})}
    ).json()
    assert (low["threshold"], low["tumor"], low["label"]) == (0.0, True, "tumor")
    assert len(low["fired_slices"]) == len(low["slices"])
    assert (
        high["threshold"] == 1.0 and high["probability"] < 1.0 and high["tumor"] is False and high["fired_slices"] == []
    )
    bad = client.post(
        "/infer/tumor_gate?image=synth01_flair&output=json", data={"params": json.dumps({"threshold": "x"})}
    )
    assert bad.status_code == 422 and "threshold" in bad.json()["detail"]


def _read_result(content: bytes, suffix: str, tmp_path) -> np.ndarray:
    path = tmp_path / f"result{suffix}"
    path.write_bytes(content)
    return np.asarray(Image.open(path)).T if suffix == ".png" else np.asanyarray(nib.load(path).dataobj)


@pytest.mark.parametrize(
    "model,image,suffix",
    [
        ("tumor_seg", "synth01_flair", ".nii.gz"),
        ("tumor_seg", "synth_slice01", ".png"),
        ("hippocampus", "synth_hippo02_t1", ".nii.gz"),
        ("tumor_pipeline", "synth02_flair", ".nii.gz"),
        ("tumor_pipeline", "synth_slice01", ".png"),
    ],
)
def test_segmentation_returns_a_mask_of_the_image_shape(trained, tmp_path, model, image, suffix):
    client, app, folder = trained
    response = client.post(f"/infer/{model}?image={image}&output=image")
    assert response.status_code == 200, response.text
    mask = _read_result(response.content, suffix, tmp_path)
    source = folder / f"{image}{suffix}"
    expected = np.asarray(Image.open(source)).T.shape if suffix == ".png" else nib.load(source).shape
    assert mask.shape == expected
    assert set(np.unique(mask)) <= {0, *SEGMENTERS[model].values()}
    result = client.post(f"/infer/{model}?image={image}&output=json").json()
    unit = "mm2" if suffix == ".png" else "mm3"
    assert set(result["measurements"][unit]) == set(SEGMENTERS[model])
    m = result["measurements"]
    if model == "hippocampus":  # a crop (field of view under 90 mm): one hippocampus, side unknown, volume checked
        assert "left_mm3" not in m and result["input"].startswith("hippocampus crop") and "status" in m["volume_check"]
    elif suffix != ".png":
        assert m["left_mm3"] + m["right_mm3"] == pytest.approx(m["total_mm3"], abs=0.1)


def test_pipeline_segments_only_where_the_gate_fires(trained):
    client, _, _ = trained
    never = client.post(
        "/infer/tumor_pipeline?image=synth01_flair&output=json", data={"params": json.dumps({"threshold": 1.0})}
    ).json()
    assert never["tumor"] is False and never["fired_slices"] == [] and never["measurements"]["total_mm3"] == 0
    always = client.post(
        "/infer/tumor_pipeline?image=synth01_flair&output=json", data={"params": json.dumps({"threshold": 0.0})}
    ).json()
    assert always["tumor"] is True and always["fired_slices"] == [s["index"] for s in always["gate"]["slices"]]
    assert always["probability"] == always["gate"]["probability"]


def _pipeline(client, image, threshold):
    response = client.post(
        f"/infer/tumor_pipeline?image={image}&output=json", data={"params": json.dumps({"threshold": threshold})}
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_pipeline_types_the_tumor_on_the_fired_slices_only(trained):
    client, _, _ = trained
    gate = client.post("/infer/tumor_gate?image=synth01_flair&output=json").json()
    scores = {s["index"]: s["probabilities"]["tumor"] for s in gate["slices"]}
    top, second = sorted(scores.values())[-1:-3:-1]
    threshold = (
        top + second
    ) / 2  # fires on the top slice only: a strict subset of the head slices (scores are rounded)
    some = _pipeline(client, "synth01_flair", threshold)
    fired = some["fired_slices"]
    assert (
        some["tumor"] is True and fired == [k for k, p in scores.items() if p >= threshold] and len(fired) < len(scores)
    )
    kind = some["tumor_type"]
    assert [s["index"] for s in kind["slices"]] == fired
    assert kind["label"] in CLASSIFIERS["tumor_type"] and sum(kind["probabilities"].values()) == pytest.approx(
        1.0, abs=1e-4
    )
    for name, p in kind["probabilities"].items():  # the mean over the fired slices
        assert p == pytest.approx(np.mean([s["probabilities"][name] for s in kind["slices"]]), abs=1e-5)
    direct = client.post(
        "/infer/tumor_type?image=synth01_flair&output=json", data={"params": json.dumps({"slices": fired})}
    ).json()
    assert direct["probabilities"] == kind["probabilities"] and direct["label"] == kind["label"]
    assert set(some["checkpoints"]) == {"tumor_gate", "tumor_seg", "tumor_type"} and some["latencies"]["type"] >= 0

    never = _pipeline(client, "synth01_flair", 1.0)
    assert never["tumor"] is False and never["tumor_type"] is None and "type" not in never["latencies"]
    assert never["measurements"]["total_mm3"] == 0 and never["gate"]["label"] == "no_tumor"

    picture = _pipeline(client, "synth_slice01", 0.0)
    assert picture["fired_slices"] == [0] and [s["index"] for s in picture["tumor_type"]["slices"]] == [0]


def test_pipeline_needs_all_three_stages_trained(trained):
    client, app, _ = trained
    path = app.models["tumor_type"].path
    Path(path).unlink()
    response = client.post("/infer/tumor_pipeline?image=synth01_flair&output=json")
    assert response.status_code == 409 and path in response.json()["detail"]


@pytest.mark.parametrize(
    "slices,words",
    [('"3"', "list of slice indices"), ("[1.5]", "list of slice indices"), ("[99, -1]", "name no slice")],
)
def test_classifier_slices_override_is_checked(trained, slices, words):
    client, _, _ = trained
    response = client.post(
        "/infer/tumor_type?image=synth01_flair&output=json", data={"params": f'{{"slices": {slices}}}'}
    )
    assert response.status_code == 422 and words in response.json()["detail"]


def test_infer_on_an_uploaded_volume(trained):
    client, _, folder = trained
    volume = (folder / "synth01_flair.nii.gz").read_bytes()
    response = client.post("/infer/tumor_gate?output=json", files={"file": ("scan.nii.gz", volume)})
    assert response.status_code == 200, response.text
    assert sum(response.json()["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    "url,files,status,words",
    [
        ("/infer/no_such_model?image=synth01_flair", None, 404, "no_such_model"),
        ("/infer/sequence?image=no_such_image", None, 404, "no_such_image"),
        ("/infer/sequence", {"file": ("notes.nii.gz", b"this is not an image")}, 415, "not a readable image"),
        ("/infer/hippocampus?image=synth_slice01", None, 422, "3D volume"),
    ],
)
def test_bad_infer_requests_get_a_clear_4xx(trained, url, files, status, words):
    client, _, folder = trained
    before = snapshot(folder)
    response = client.post(url + ("&" if "?" in url else "?") + "output=json", files=files)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert snapshot(folder) == before


def test_train_of_an_unknown_model_is_404(server):
    client, _, _ = server
    response = client.post("/train/no_such_model")
    assert response.status_code == 404 and "no_such_model" in response.json()["detail"]


def test_image_upload_accepts_images_and_refuses_the_rest(server):
    client, app, folder = server
    before = snapshot(folder)
    refused = client.put("/datastore/image?image=broken", files={"file": ("broken.nii.gz", b"\x00" * 100)})
    assert refused.status_code == 415 and "not a readable image" in refused.json()["detail"]
    plain = gzip.decompress(_nifti((8, 8, 4)))  # a NIfTI that is not gzipped, under a .nii.gz name
    mislabelled = client.put("/datastore/image?image=plain", files={"file": ("plain.nii.gz", plain)})
    assert mislabelled.status_code == 415 and "extension" in mislabelled.json()["detail"]
    unsafe = client.put("/datastore/image?image=../evil", files={"file": ("x.png", _png((8, 8)))})
    assert unsafe.status_code == 422
    assert snapshot(folder) == before
    accepted = client.put("/datastore/image?image=new_slice", files={"file": ("new_slice.png", _png((64, 64)))})
    assert accepted.status_code == 200, accepted.text
    assert "new_slice" in app.datastore().list_images()


def _png(size) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros(size, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _nifti(shape, value=1) -> bytes:
    data = np.zeros(shape, np.uint8)
    data[tuple(s // 2 for s in shape)] = value
    return gzip.compress(nib.Nifti1Image(data, np.diag([2.0, 2.0, 6.0, 1.0])).to_bytes())


def test_label_of_the_wrong_shape_is_refused_and_changes_nothing(server):
    client, _, folder = server
    before = snapshot(folder)
    response = client.put(
        "/datastore/label?image=synth04_flair&tag=final", files={"label": ("m.nii.gz", _nifti((96, 96, 15)))}
    )
    assert response.status_code == 422
    assert "(96, 96, 15)" in response.json()["detail"] and "(96, 96, 16)" in response.json()["detail"]
    missing = client.put(
        "/datastore/label?image=no_such_image&tag=final", files={"label": ("m.nii.gz", _nifti((96, 96, 16)))}
    )
    assert missing.status_code == 404
    assert snapshot(folder) == before


def test_corrected_mask_is_saved_as_final(server):
    client, app, folder = server
    params = json.dumps({"label_info": [{"name": "tumor", "idx": 1}]})
    response = client.put(
        "/datastore/label?image=synth04_flair&tag=final",
        data={"params": params},
        files={"label": ("m.nii.gz", _nifti((96, 96, 16)))},
    )
    assert response.status_code == 200, response.text
    saved = nib.load(folder / "labels" / "final" / "synth04_flair.nii.gz")
    assert saved.shape == (96, 96, 16) and int(np.asarray(saved.dataobj).sum()) == 1
    items = stock.trainers(app)["tumor_seg"].items(app.datastore())
    assert any(i["source_image"].endswith("synth04_flair.nii.gz") for i in items)  # items read from the slice cache


def test_class_label_correction_round_trip_and_training_uses_it(server):
    client, app, folder = server
    put = client.put("/classlabel/sequence?image=synth_slice03", json={"label": "T2"})
    assert put.status_code == 200, put.text
    got = client.get("/classlabel/sequence?image=synth_slice03").json()
    assert got["label"]["label"] == "T2" and got["label"]["source"] == "user"
    stored = json.loads((folder / "datastore_v2.json").read_text())["objects"]["synth_slice03"]["image"]["info"]
    assert stored["class_labels"]["sequence"]["label"] == "T2"
    assert stored["class_labels"]["tumor_gate"]["label"] == "no_tumor"  # other tasks' labels kept
    items = [
        i
        for i in stock.trainers(app)["sequence"].items(app.datastore())
        if i["source_image"].endswith("synth_slice03.png")
    ]
    assert [i["label"] for i in items] == [1]
    assert client.delete("/classlabel/sequence?image=synth_slice03").json()["label"] is None
    assert "sequence" not in client.get("/datastore/image/info?image=synth_slice03").json()["class_labels"]


@pytest.mark.parametrize(
    "task,image,body,status,words",
    [
        ("sequence", "synth01_t1", {"label": "T3"}, 422, "valid classes"),
        ("tumor_seg", "synth01_t1", {"label": "tumor"}, 404, "not a classifier"),
        ("sequence", "nobody", {"label": "T1"}, 404, "nobody"),
        ("sequence", "synth01_t1", {"wrong": "T1"}, 422, None),
    ],
)
def test_bad_class_corrections_change_nothing(server, task, image, body, status, words):
    client, _, folder = server
    before = snapshot(folder)
    response = client.put(f"/classlabel/{task}?image={image}", json=body)
    assert response.status_code == status, response.text
    if words:
        assert words in response.json()["detail"]
    assert snapshot(folder) == before


@pytest.mark.parametrize("image,suffix", [("synth01_flair", ".nii.gz"), ("synth_slice01", ".png")])
def test_classifier_class_activation_map_is_aligned_with_the_input(trained, tmp_path, image, suffix):
    client, _, folder = trained
    response = client.post(f"/infer/tumor_gate?image={image}&output=image", data={"params": json.dumps({"cam": True})})
    assert response.status_code == 200, response.text
    path = tmp_path / "cam.nii.gz"
    path.write_bytes(response.content)
    cam = nib.load(path)
    heat = np.asarray(cam.dataobj)
    source = folder / f"{image}{suffix}"
    if suffix == ".png":
        assert heat.shape == np.asarray(Image.open(source)).T.shape
    else:
        assert heat.shape == nib.load(source).shape
        assert np.allclose(cam.affine, nib.load(source).affine)
        result = client.post(f"/infer/tumor_gate?image={image}&output=json").json()
        skipped = sorted(set(range(heat.shape[2])) - {s["index"] for s in result["slices"]})
        assert skipped and np.all(heat[:, :, skipped] == 0)  # slices the gate did not look at carry no evidence
    assert heat.dtype == np.float32 and 0.0 <= heat.min() and heat.max() <= 1.0 and heat.max() > 0


def test_tumor_type_class_activation_map_covers_the_requested_slices_only(trained, tmp_path):
    client, _, folder = trained
    params = json.dumps({"cam": True, "slices": [6, 7]})
    response = client.post("/infer/tumor_type?image=synth02_flair&output=image", data={"params": params})
    assert response.status_code == 200, response.text
    (tmp_path / "cam.nii.gz").write_bytes(response.content)
    heat = np.asarray(nib.load(tmp_path / "cam.nii.gz").dataobj)
    assert heat.shape == nib.load(folder / "synth02_flair.nii.gz").shape and heat.max() > 0
    assert not np.delete(heat, [6, 7], axis=2).any()


@pytest.mark.parametrize(
    "url,params,status,words",
    [
        ("/infer/sequence?image=synth01_t1&output=image", "{}", 422, "answers in JSON"),
        ("/infer/sequence?image=synth01_t1&output=image", '{"cam": "maybe"}', 422, "cam"),
        ("/infer/sequence?image=synth01_t1&output=json", "not json", 422, "JSON object"),
        ("/infer/sequence?image=synth01_t1&output=json", "[1, 2]", 422, "JSON object"),
    ],
)
def test_infer_parameters_are_checked_before_running(trained, url, params, status, words):
    client, _, _ = trained
    response = client.post(url, data={"params": params})
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_unknown_active_learning_strategy_is_404_and_known_ones_answer(server):
    client, _, _ = server
    response = client.post("/activelearning/cleverest")
    assert response.status_code == 404 and "first" in response.json()["detail"]
    assert client.post("/activelearning/first").json()["id"]


def test_oversized_upload_is_413_and_changes_nothing(datastore_dir, tmp_path):
    from lib.datastore import MRIDatastore

    store = MRIDatastore(str(datastore_dir), max_upload_mb=0.01, auto_reload=False)
    before = snapshot(datastore_dir)
    big = tmp_path / "big.nii.gz"
    big.write_bytes(
        gzip.compress(
            nib.Nifti1Image(np.random.default_rng(0).random((64, 64, 16)).astype(np.float32), np.eye(4)).to_bytes()
        )
    )
    with pytest.raises(Exception) as error:
        store.add_image("big", str(big), {})
    assert error.value.status_code == 413 and "max_upload_mb" in error.value.detail
    with pytest.raises(ValueError, match="max_upload_mb"):
        MRIDatastore(str(datastore_dir), max_upload_mb=0)
    assert snapshot(datastore_dir) == before
