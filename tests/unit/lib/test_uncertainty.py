"""Voxel uncertainty on request (lib.uncertainty): the entropy arithmetic, the slice ranking, and the map answered by
``tumor_seg`` and ``hippocampus`` through the API in the input's own grid."""

import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from lib.request_checks import RequestError
from lib.uncertainty import UNCERTAIN_FROM, normalised_entropy, uncertain_slices, wants_uncertainty


@pytest.mark.parametrize(
    "probabilities, expected",
    [
        ([1.0, 0.0], 0.0),
        ([0.5, 0.5], 1.0),
        ([1 / 3, 1 / 3, 1 / 3], 1.0),
        ([0.9, 0.1], -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(2)),
        ([0.8, 0.1, 0.1], -(0.8 * math.log(0.8) + 0.2 * math.log(0.1)) / math.log(3)),
    ],
)
def test_normalised_entropy(probabilities, expected):
    p = torch.tensor(probabilities).reshape(-1, 1, 1)
    out = normalised_entropy(p)
    assert out.shape == (1, 1, 1) and float(out) == pytest.approx(expected, abs=1e-5)


def test_normalised_entropy_needs_two_classes():
    with pytest.raises(ValueError, match="probabilities must hold K >= 2"):
        normalised_entropy(torch.ones(1, 4, 4))


def test_uncertain_slices_ranks_by_uncertain_voxels_then_mean():
    entropy = np.zeros((4, 5, 6), np.float32)
    entropy[:, :, 4] = 0.9  # 20 uncertain voxels
    entropy[0, :2, 1] = 0.7  # 2
    entropy[:, :, 2] = 0.3  # none uncertain, but the highest mean of the rest
    summary = uncertain_slices(entropy, axis=2, top=3)
    assert [s["slice"] for s in summary["slices"]] == [4, 1, 2]
    assert [s["uncertain_voxels"] for s in summary["slices"]] == [20, 2, 0]
    assert summary["uncertain_fraction"] == pytest.approx(22 / entropy.size, abs=1e-6)
    assert summary["max"] == pytest.approx(0.9) and summary["uncertain_from"] == UNCERTAIN_FROM
    assert uncertain_slices(entropy.transpose(2, 0, 1), axis=0, top=1)["slices"][0]["slice"] == 4
    assert uncertain_slices(entropy[:, :, 4], axis=2)["slices"] == [{"slice": 0, "uncertain_voxels": 20, "mean": 0.9}]


@pytest.mark.parametrize("value, expected", [(None, False), (True, True), (False, False)])
def test_wants_uncertainty(value, expected):
    assert wants_uncertainty({} if value is None else {"uncertainty": value}) is expected


@pytest.mark.parametrize("value", ["true", 1, None, [True]])
def test_wants_uncertainty_refuses_non_booleans(value):
    with pytest.raises(RequestError, match="params uncertainty must be true or false"):
        wants_uncertainty({"uncertainty": value})


def _read(content: bytes, tmp_path, name="answer.nii.gz"):
    path = tmp_path / name
    path.write_bytes(content)
    return nib.load(str(path))


@pytest.mark.parametrize(
    "model, image, suffix",
    [
        ("tumor_seg", "synth01_flair", ".nii.gz"),
        ("tumor_seg", "synth_slice01", ".png"),
        ("hippocampus", "synth_hippo02_t1", ".nii.gz"),
    ],
)
def test_segmentation_answers_an_uncertainty_map_in_the_input_grid(api_trained, tmp_path, model, image, suffix):
    client, _, folder = api_trained
    params = {"params": json.dumps({"uncertainty": True})}
    response = client.post(f"/infer/{model}?image={image}&output=image", data=params)
    assert response.status_code == 200, response.text
    assert response.content[:2] == b"\x1f\x8b"  # a gzipped NIfTI, also for a PNG input
    answer = _read(response.content, tmp_path)
    values = np.asarray(answer.dataobj)
    source = folder / f"{image}{suffix}"
    expected = np.asarray(Image.open(source)).T.shape if suffix == ".png" else nib.load(str(source)).shape
    assert values.shape[: len(expected)] == expected and values.dtype == np.float32
    assert 0.0 <= values.min() and values.max() <= 1.0 and values.max() > 0.0  # untrained weights: not all certain
    if suffix != ".png":
        assert np.allclose(answer.affine, nib.load(str(source)).affine, atol=1e-4)
    result = client.post(f"/infer/{model}?image={image}&output=json", data=params).json()
    summary = result["uncertainty"]
    assert summary["measure"].startswith("normalised predictive entropy")
    assert summary["mean"] == pytest.approx(float(values.mean()), abs=1e-3)
    assert len(summary["slices"]) == min(5, 1 if suffix == ".png" else values.shape[summary["axis"]])
    assert "lesions" not in result.get("measurements", {})
    plain = client.post(f"/infer/{model}?image={image}&output=json").json()
    assert "uncertainty" not in plain and plain["measurements"]


def test_whole_head_hippocampus_uncertainty_lies_inside_the_two_boxes(api_trained, tmp_path):
    client, _, folder = api_trained
    source = nib.load(str(folder / "synth_hippo02_t1.nii.gz"))
    corners = nib.affines.apply_affine(source.affine, [[0, 0, 0], np.array(source.shape) - 1])
    low, high = corners.min(0), corners.max(0)
    middle = (low + high) / 2  # a box on each half (RAS: -x is the patient's left)
    (x0, y0, z0), (x1, y1, z1), xm = low.tolist(), high.tolist(), float(middle[0])
    boxes = {"left": [[x0, y0, z0], [xm - 4, y1, z1]], "right": [[xm + 4, y0, z0], [x1, y1, z1]]}
    params = {"params": json.dumps({"uncertainty": True, "boxes": boxes})}
    response = client.post("/infer/hippocampus?image=synth_hippo02_t1&output=image", data=params)
    assert response.status_code == 200, response.text
    values = np.asarray(_read(response.content, tmp_path).dataobj)
    assert values.shape == source.shape and values.dtype == np.float32 and values.max() > 0
    world = nib.affines.apply_affine(source.affine, np.argwhere(values > 0))
    inside = np.zeros(len(world), bool)
    for low, high in boxes.values():
        inside |= np.all((world >= np.array(low) - 2) & (world <= np.array(high) + 2), axis=1)
    assert inside.all()  # nothing outside the segmented boxes


@pytest.mark.parametrize("value", ["yes", 1])
def test_a_non_boolean_uncertainty_is_refused_before_any_work(api_trained, value):
    client, _, _ = api_trained
    response = client.post(
        "/infer/tumor_seg?image=synth01_flair&output=json", data={"params": json.dumps({"uncertainty": value})}
    )
    assert response.status_code == 422 and "params uncertainty must be true or false" in response.text


@pytest.mark.parametrize("model", ["tumor_pipeline", "tumor_gate", "sequence"])
def test_tasks_without_a_map_refuse_uncertainty_naming_those_with_one(api_trained, model):
    client, _, _ = api_trained
    response = client.post(
        f"/infer/{model}?image=synth01_flair&output=json", data={"params": json.dumps({"uncertainty": True})}
    )
    assert response.status_code == 422, response.text
    assert "answers no uncertainty map" in response.text and "'hippocampus', 'tumor_seg'" in response.text
