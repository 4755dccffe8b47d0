"""Crash safety against a real server killed with SIGKILL (with its training process: the whole process group,
as a power cut or the OOM killer would): every acknowledged label survives whole, the index stays readable,
the last good checkpoint is served after the restart, and the interrupted training resumes."""

import gzip
import hashlib
import io
import json
import os
import random
import signal
import threading
import time

import nibabel as nib
import numpy as np
import requests
import torch

from tests.helpers.live_server import running_server

TASK = "tumor_gate"
CONF = {"models": "tumor_gate,tumor_seg", f"{TASK}_image_size": "32", f"{TASK}_widths": "4,8,8,8"}
VOLUMES = ["synth01_flair", "synth02_flair", "synth03_flair", "synth01_t1", "synth02_t1", "synth01_t2"]


def _kill(server) -> None:
    os.killpg(server["process"].pid, signal.SIGKILL)
    server["process"].wait(timeout=30)


def _label_bytes(studies, image, seed) -> bytes:
    reference = nib.load(studies / f"{image}.nii.gz")
    mask = (np.random.default_rng(seed).random(reference.shape) > 0.7).astype(np.uint8)
    return gzip.compress(nib.Nifti1Image(mask, reference.affine).to_bytes(), compresslevel=1)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Uploader(threading.Thread):
    """Saves labels (``PUT /datastore/label``, tag final) in a loop over VOLUMES until the server dies."""

    def __init__(self, url, studies, seed):
        super().__init__(daemon=True)
        self.url, self.studies, self.seed = url, studies, seed
        self.acknowledged, self.in_flight, self.errors = {}, {}, []

    def run(self):
        for n in range(10_000):
            image = VOLUMES[n % len(VOLUMES)]
            data = _label_bytes(self.studies, image, self.seed * 10_000 + n)
            self.in_flight[image] = _sha(data)
            try:
                response = requests.put(
                    f"{self.url}/datastore/label",
                    params={"image": image, "tag": "final"},
                    files={"label": (f"{image}.nii.gz", io.BytesIO(data))},
                    data={"params": "{}"},
                    timeout=60,
                )
            except requests.RequestException:
                return  # the server is gone
            if response.status_code != 200:
                self.errors.append((response.status_code, response.text))
                return
            self.acknowledged[image] = self.in_flight.pop(image)


def _check_labels(server, acknowledged, in_flight):
    studies = server["studies"]
    index = json.loads((studies / "datastore_v2.json").read_text(encoding="utf-8"))  # parses: not half written
    for image, sha in acknowledged.items():
        stored = (studies / "labels" / "final" / f"{image}.nii.gz").read_bytes()
        assert _sha(stored) in (sha, in_flight.get(image)), f"label of {image} is not what was acknowledged"
        assert "final" in index["objects"][image]["labels"]
        downloaded = requests.get(
            f"{server['url']}/datastore/label", params={"label": image, "tag": "final"}, timeout=30
        )
        assert downloaded.status_code == 200 and downloaded.content == stored
        assert nib.Nifti1Image.from_bytes(gzip.decompress(stored)).shape == nib.load(studies / f"{image}.nii.gz").shape
    leftovers = [p for p in studies.rglob("*.partial")]
    assert not leftovers, f"partial files left after restart: {leftovers}"


def test_acknowledged_labels_survive_a_server_killed_mid_upload(tmp_path, sample_template):
    acknowledged, in_flight = {}, {}
    rng = random.Random(0)
    for round_ in range(3):
        with running_server(tmp_path, sample_template, conf=CONF) as server:
            if round_:
                _check_labels(server, acknowledged, in_flight)
            uploader = _Uploader(server["url"], server["studies"], round_)
            uploader.start()
            deadline = time.time() + 120
            while len(uploader.acknowledged) < 4 and uploader.is_alive() and time.time() < deadline:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.3))
            _kill(server)
            uploader.join(timeout=60)
            assert not uploader.errors, uploader.errors
            assert len(uploader.acknowledged) >= 4
            acknowledged.update(uploader.acknowledged)
            in_flight = dict(uploader.in_flight)
    with running_server(tmp_path, sample_template, conf=CONF) as server:
        _check_labels(server, acknowledged, in_flight)
        listing = requests.get(f"{server['url']}/datastore/", params={"output": "all"}, timeout=30)
        assert listing.status_code == 200


def _train_status(url):
    return requests.get(f"{url}/train/", params={"all": False}, timeout=10).json()


def _wait(predicate, timeout=300, what="condition"):
    started = time.time()
    while time.time() - started < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"{what} not reached in {timeout} s")


def test_a_server_killed_while_training_serves_the_last_good_checkpoint_and_resumes(tmp_path, sample_template):
    request = {"name": "run", "max_epochs": 12, "early_stop_patience": 0, "dataset": "Dataset", "seed": 0}
    with running_server(tmp_path, sample_template, conf=CONF) as server:
        task_dir = server["models"] / TASK
        state_file = task_dir / "run" / "resume.pt"
        response = requests.post(f"{server['url']}/train/{TASK}", json=request, timeout=30)
        assert response.status_code == 200, response.text

        def two_epochs_done():
            if not state_file.exists():
                return False
            return torch.load(state_file, weights_only=True)["epoch"] >= 2

        _wait(two_epochs_done, what="two epochs")
        _kill(server)
    served = task_dir / "model.pt"
    epoch_at_kill = torch.load(state_file, weights_only=True)["epoch"]
    assert 2 <= epoch_at_kill < 12
    assert torch.load(served, weights_only=True)  # a whole checkpoint, not a half-copied one
    with running_server(tmp_path, sample_template, conf=CONF) as server:
        answer = requests.post(
            f"{server['url']}/infer/{TASK}", params={"image": "synth01_flair", "output": "json"}, timeout=120
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["checkpoint"]["name"] == f"model/{TASK}/model.pt"  # the trained one, not none
        response = requests.post(f"{server['url']}/train/{TASK}", json=dict(request, resume=True), timeout=30)
        assert response.status_code == 200, response.text
        status = _wait(
            lambda: (s := _train_status(server["url"])).get("status") in ("DONE", "ERROR") and s,
            timeout=400,
            what="resumed training",
        )
        assert status["status"] == "DONE", status
        stats = json.loads((task_dir / "train_stats.json").read_text(encoding="utf-8"))
        assert stats["epoch"] == 12
        log = server["log"].read_text(encoding="utf-8")
        assert f"resuming {state_file} after epoch {epoch_at_kill}" in log
        assert not state_file.exists()
        again = requests.post(f"{server['url']}/train/{TASK}", json=dict(request, resume=True), timeout=30)
        assert again.status_code == 409 and "nothing to resume" in again.json()["detail"]
