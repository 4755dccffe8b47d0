"""End to end: labels saved through the real HTTP API trigger fine-tuning runs on the server
(``--conf retrain_after``)."""

import hashlib
import time

import nibabel as nib
import numpy as np
import requests

from tests.helpers.live_server import running_server

LABEL_INFO = '{"label_info": [{"name": "tumor", "idx": 1}]}'


def _save_mask(url, studies, image, tmp_path):
    reference = nib.load(studies / f"{image}.nii.gz")
    mask = np.zeros(reference.shape, np.uint8)
    mask[40:52, 40:52, 6:9] = 1
    path = tmp_path / f"{image}_mask.nii.gz"
    nib.save(nib.Nifti1Image(mask, reference.affine), path)
    with open(path, "rb") as handle:
        response = requests.put(
            f"{url}/datastore/label",
            params={"image": image, "tag": "final"},
            files={"label": (path.name, handle)},
            data={"params": LABEL_INFO},
            timeout=60,
        )
    assert response.status_code == 200, response.text


def _stats(url):
    response = requests.get(f"{url}/activelearning/stats", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _wait(url, predicate, timeout=400):
    started = time.time()
    while time.time() - started < timeout:
        stats = _stats(url)
        if predicate(stats):
            return stats
        time.sleep(1)
    raise AssertionError(f"not reached in {timeout} s: {_stats(url)}")


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_label_bursts_trigger_one_finetune_each_and_a_worse_one_is_not_promoted(tmp_path, sample_template):
    conf = {"models": "tumor_seg", "retrain_after": 2, "retrain_epochs": 1, "tumor_seg_image_size": 64}
    with running_server(tmp_path / "srv", sample_template, conf) as server:
        url, studies = server["url"], server["studies"]
        served = server["models"] / "tumor_seg" / "model.pt"
        assert _stats(url)["enabled"] is True

        _save_mask(url, studies, "synth04_flair", tmp_path)
        assert _stats(url)["tasks"]["tumor_seg"]["active"] is None  # one label: nothing yet
        _save_mask(url, studies, "synth05_flair", tmp_path)
        first = _stats(url)["tasks"]["tumor_seg"]["active"]
        assert first  # the second label queued a fine-tuning run

        # a second burst while that run is queued or running: coalesced into exactly one more run
        _save_mask(url, studies, "synth06_flair", tmp_path)
        _save_mask(url, studies, "synth01_flair", tmp_path)
        state = _stats(url)
        assert state["tasks"]["tumor_seg"]["active"] == first and state["tasks"]["tumor_seg"]["pending"] is True
        assert state["runs"] == []

        after_first = _wait(url, lambda s: len(s["runs"]) == 1)
        run = after_first["runs"][0]
        assert run["status"] == "DONE" and run["promoted"] is True, run  # nothing was served before: promoted
        assert run["labels_used"] == 2 and run["task"] == "tumor_seg" and run["device"]
        assert after_first["tasks"]["tumor_seg"]["active"] not in (None, first)
        first_bytes = _sha(served)

        stats = _wait(url, lambda s: len(s["runs"]) == 2 and not s["tasks"]["tumor_seg"]["active"])
        second = stats["runs"][1]
        assert second["status"] == "DONE" and second["labels_used"] == 4, second
        for key in ("metric_before", "metric_after", "promoted", "reason", "started", "ended", "duration_s", "device"):
            assert key in second, key
        if second["metric_before"] is not None and second["metric_after"] is not None:
            assert second["promoted"] == (second["metric_after"] >= second["metric_before"]), second
        if not second["promoted"]:  # a worse (or unverifiable) candidate leaves the served bytes as they were
            assert _sha(served) == first_bytes, second
        assert not (served.parent / "model.candidate.pt").exists()

        time.sleep(3)  # no third run
        trainings = requests.get(f"{url}/train/", params={"all": True}, timeout=10).json()
        assert len(trainings) == 2 and len(_stats(url)["runs"]) == 2
        assert all(t["request"]["finetune"] is True and t["request"]["max_epochs"] == 1 for t in trainings)
