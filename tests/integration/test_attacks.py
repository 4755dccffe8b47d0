"""Issue 17, end to end: the attacks found on loopback, sent to a real server (auth off, as ``mri-label serve``
starts it; role cases against :func:`conftest.auth_server`, auth on with the test realm). Each answer is a 4xx
naming the problem; nothing is written outside the datastore; the server's temporary folder (``TMPDIR``, a folder
of its own here) is empty after every request; and the datastore index it wrote loads again."""

import gzip
import io
import json
import shutil
import tarfile
import time
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests

from tests.helpers.app import SHIPPED_DIR, snapshot
from tests.helpers.fake_realm import ADMIN, ANNOTATOR, USER, sign
from tests.helpers.live_server import running_server

IMAGE = "synth04_flair"  # has a final tumor mask and class labels
FREE = "synth05_t2"  # has class labels, no final mask
ORIGIN = "http://viewer.example:8080"


@pytest.fixture(scope="module")
def server(tmp_path_factory, sample_template):
    root = tmp_path_factory.mktemp("attacks")
    for task in ("sequence", "tumor_seg"):
        shutil.copytree(SHIPPED_DIR / task, root / "shipped" / task)
    for folder in ("tmp", "sessions"):
        (root / folder).mkdir()
    conf = {
        "models": "sequence,tumor_seg",
        "shipped_models": str(root / "shipped"),
        "max_upload_mb": 1,
        "retrain_after": 50,
        "cors_origins": ORIGIN,
    }
    env = {"TMPDIR": str(root / "tmp"), "MONAI_LABEL_SESSION_PATH": str(root / "sessions")}
    with running_server(root, sample_template, conf=conf, env=env) as live:
        live = dict(live, root=root, conf=conf, env=env)
        live["tmp_at_start"] = set(temporary_files(live))
        yield live


def call(server, method, path, **kwargs):
    return requests.request(method, server["url"] + path, timeout=120, **kwargs)


def temporary_files(server) -> list:
    """What the server left in its temporary folder since it started (spooled uploads are gone once a request ends)."""
    found = {str(p.relative_to(server["root"] / "tmp")) for p in (server["root"] / "tmp").rglob("*")}
    return sorted(found - server.get("tmp_at_start", set()))


def assert_refused(response, status, words):
    assert response.status_code == status, response.text[:500]
    assert words in json.dumps(response.json()["detail"]), response.json()["detail"]


def nifti_bytes(shape=(16, 16, 8), dtype=np.float32) -> bytes:
    data = np.random.default_rng(0).normal(100, 10, shape).astype(dtype)
    return gzip.compress(nib.Nifti1Image(data, np.eye(4)).to_bytes())


def tar_gz(members) -> bytes:
    """(name, kind, payload): kind file (payload bytes) or symlink (payload the target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, payload
                archive.addfile(info)
            else:
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------- archives

ESCAPE = f"/tmp/mri-label-attack-{uuid.uuid4().hex}"
ARCHIVES = [
    ("member ../x", [("../../escaped_parent", "file", b"evil")], 422, "leads out"),
    ("absolute member", [(ESCAPE, "file", b"evil")], 422, "absolute path"),
    ("symlink, then a file through it", [("lnk", "symlink", "/tmp"), ("lnk/z", "file", b"evil")], 422, "link"),
    ("unpacks past max_upload_mb", [("big.nii", "file", bytes(3 * 2**20))], 413, "more than 1 MB"),
    ("not an archive", None, 422, "not a TAR"),
]


@pytest.mark.parametrize("case,members,status,words", ARCHIVES, ids=[a[0] for a in ARCHIVES])
def test_session_archive_that_escapes_or_explodes_is_refused(server, case, members, status, words):
    body = tar_gz(members) if members else b"plain bytes, no archive" * 10
    sessions = sorted(p.name for p in (server["root"] / "sessions").iterdir())
    answer = call(server, "PUT", "/session/?uncompress=true", files={"files": ("series.tar.gz", body)})
    assert_refused(answer, status, words)
    assert not Path(ESCAPE).exists() and not (server["root"] / "escaped_parent").exists()
    assert not Path("/tmp/z").exists() or Path("/tmp/z").read_bytes() != b"evil"
    assert sorted(p.name for p in (server["root"] / "sessions").iterdir()) == sessions
    assert temporary_files(server) == []


def test_a_plain_series_archive_makes_a_session_whose_answer_names_no_server_path(server):
    body = tar_gz([("series/a.nii.gz", "file", nifti_bytes())])
    answer = call(server, "PUT", "/session/?uncompress=true", files={"files": ("series.tar.gz", body)})
    assert answer.status_code == 200, answer.text
    assert str(server["root"]) not in answer.text and "/tmp" not in answer.text
    session = answer.json()["session_id"]
    stored = server["root"] / "sessions" / session
    assert [p.name for p in stored.rglob("*.nii.gz")] == ["a.nii.gz"]
    assert call(server, "GET", f"/session/{session}").json()["session_info"]["image"] == "unpacked"
    assert call(server, "GET", "/session/..%2F..%2Fetc").status_code in (404, 422)
    assert call(server, "DELETE", f"/session/{session}").status_code == 200 and not stored.exists()
    assert temporary_files(server) == []


# ------------------------------------------------------------------------------------------------ CORS


@pytest.mark.parametrize(
    "origin,allowed",
    [
        ("http://evil.example", False),
        ("null", False),
        ("http://127.0.0.1.evil.example", False),
        ("http://127.0.0.1:3000", True),
        ("http://localhost", True),
        (ORIGIN, True),
    ],
)
def test_cross_origin_calls_only_from_loopback_pages_and_cors_origins(server, origin, allowed):
    preflight = call(
        server, "OPTIONS", "/datastore/image", headers={"Origin": origin, "Access-Control-Request-Method": "PUT"}
    )
    simple = call(server, "GET", "/info/", headers={"Origin": origin})
    for answer in (preflight, simple):
        assert (answer.headers.get("access-control-allow-origin") == origin) is allowed, answer.headers
        if not allowed:
            assert (
                "access-control-allow-credentials" not in answer.headers
                or answer.headers.get("access-control-allow-origin") is None
            )


# ------------------------------------------------------------------------------- infer params and 500s

INFER_PARAMS = [
    ("image from params", {"image": "/etc/hostname"}, 422, "may not set ['image']"),
    ("device meta", {"device": "meta"}, 422, "device 'meta'"),
    ("logging 5", {"logging": 5}, 422, "logging 5"),
    ("result_extension .json", {"result_extension": ".json"}, 422, "result_extension"),
    ("label_tag with a path", {"label_tag": "../final"}, 422, "label_tag"),
    ("save_label on an upload", {"save_label": True}, 422, "save_label needs a datastore image"),
    ("params nested too deep", {"x": json.loads("[" * 30 + "]" * 30)}, 422, "deeper than 20 levels"),
]


@pytest.mark.parametrize("case,params,status,words", INFER_PARAMS, ids=[c[0] for c in INFER_PARAMS])
def test_infer_params_that_change_what_is_read_or_written_are_refused(server, case, params, status, words):
    before = snapshot(server["studies"])
    answer = call(
        server,
        "POST",
        "/infer/tumor_seg?output=json",
        data={"params": json.dumps(params)},
        files={"file": ("x.nii.gz", nifti_bytes())},
    )
    assert_refused(answer, status, words)
    assert snapshot(server["studies"]) == before and temporary_files(server) == []


FIVE_HUNDREDS = [
    ("non-JSON params, image PUT", "PUT", "/datastore/image?image=fresh1", {"params": "{oops"}, "file", 422, "params"),
    (
        "non-JSON params, label PUT",
        "PUT",
        f"/datastore/label?image={FREE}&tag=final",
        {"params": "{oops"},
        "label",
        422,
        "params",
    ),
    ("300-character id", "PUT", "/datastore/image?image=" + "a" * 300, None, "file", 422, "at most 128"),
    ("300-character tag", "PUT", f"/datastore/label?image={FREE}&tag=" + "t" * 300, None, "label", 422, "at most 128"),
    ("infer upload over max_upload_mb", "POST", "/infer/sequence?output=json", None, "big", 413, "max_upload_mb"),
    ("image upload over max_upload_mb", "PUT", "/datastore/image?image=fresh2", None, "big", 413, "max_upload_mb"),
    ("whole-slide infer", "POST", "/infer/wsi_v2/sequence", None, None, 404, "whole-slide"),
]


@pytest.mark.parametrize("case,method,path,data,upload,status,words", FIVE_HUNDREDS, ids=[c[0] for c in FIVE_HUNDREDS])
def test_former_500s_get_a_4xx_naming_the_problem(server, case, method, path, data, upload, status, words):
    before = snapshot(server["studies"])
    files = None
    if upload == "big":
        files = {"file": ("big.nii.gz", bytes(2 * 2**20))}
    elif upload:
        shape = nib.load(server["studies"] / f"{FREE}.nii.gz").shape
        files = {upload: ("x.nii.gz", nifti_bytes(shape, np.uint8 if upload == "label" else np.float32))}
    answer = call(server, method, path, data=data, files=files)
    assert_refused(answer, status, words)
    assert snapshot(server["studies"]) == before and temporary_files(server) == []


@pytest.mark.parametrize(
    "model,shape,status",
    [("tumor_seg", (64, 64, 600), 413), ("tumor_seg", (64, 64, 40), 200), ("sequence", (16, 16, 3000), 413)],
)
def test_infer_work_is_budgeted_by_slice_count_before_any_work(server, model, shape, status):
    body = gzip.compress(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)).to_bytes())
    assert len(body) < 2**20  # small on the wire
    answer = call(server, "POST", f"/infer/{model}?output=json", files={"file": ("x.nii.gz", body)})
    if status == 413:
        assert_refused(answer, 413, "max_infer_voxels")
    else:
        assert answer.status_code == 200, answer.text
    assert temporary_files(server) == []


def test_the_dataset_zip_is_not_left_in_the_temporary_folder(server):
    answer = call(server, "GET", "/datastore/dataset")
    assert answer.status_code == 200 and answer.content[:2] == b"PK"
    for _ in range(50):  # removed by a background task once sent
        if not temporary_files(server):
            break
        time.sleep(0.1)
    assert temporary_files(server) == []


def test_gpu_report_without_a_gpu_driver_is_a_404(server):
    answer = call(server, "GET", "/logs/gpu")
    assert answer.status_code == (200 if shutil.which("nvidia-smi") else 404), answer.text


# ------------------------------------------------------------------------------------------------ train

TRAIN = [
    ("run name with a path", "/train/sequence", {"name": "../../../../etc"}, 422, "plain name"),
    ("max_epochs not a number", "/train/sequence", {"max_epochs": "abc"}, 422, "max_epochs"),
    ("max_epochs 0", "/train/sequence", {"max_epochs": 0}, 422, "max_epochs"),
    ("params naming another task", "/train/sequence", {"model": "tumor_seg"}, 422, "model"),
    ("no task, bad max_epochs", "/train/", {"max_epochs": "abc"}, 422, "max_epochs"),
    ("no task, run name with a path", "/train/", {"name": "../x"}, 422, "plain name"),
]


@pytest.mark.parametrize("case,path,params,status,words", TRAIN, ids=[c[0] for c in TRAIN])
def test_train_requests_are_checked_on_every_train_route(server, case, path, params, status, words):
    assert_refused(call(server, "POST", path, json=params), status, words)
    assert call(server, "GET", "/train/").status_code == 404  # nothing was queued


# --------------------------------------------------------------------------- server-managed keys and depth

MANAGED = [
    (
        "al_scores in upload params",
        "PUT",
        "/datastore/image?image=fresh3",
        "params",
        {"al_scores": {"sequence": {"entropy": 9}}},
    ),
    (
        "class_labels in upload params",
        "PUT",
        "/datastore/image?image=fresh4",
        "params",
        {"class_labels": {"sequence": {"label": "T1"}}},
    ),
    ("predictions in label params", "PUT", f"/datastore/label?image={FREE}&tag=final", "params", {"predictions": {}}),
    ("al_scores in image info", "PUT", f"/datastore/image/info?image={FREE}", "info", {"al_scores": "broken"}),
    (
        "class_labels through updatelabelinfo",
        "PUT",
        f"/datastore/updatelabelinfo?label={IMAGE}&tag=final",
        "params",
        {"class_labels": {}},
    ),
    (
        "user attribution in label info",
        "PUT",
        f"/datastore/label/info?label={IMAGE}&tag=final",
        "info",
        {"user": "someone"},
    ),
]


@pytest.mark.parametrize("case,method,path,field,value", MANAGED, ids=[c[0] for c in MANAGED])
def test_server_managed_keys_are_writable_through_no_route(server, case, method, path, field, value):
    before = snapshot(server["studies"])
    files = None
    if "/datastore/image?" in path or "/datastore/label?" in path:
        shape = nib.load(server["studies"] / f"{FREE}.nii.gz").shape
        files = {"label" if "/label?" in path else "file": ("x.nii.gz", nifti_bytes(shape, np.uint8))}
    answer = call(server, method, path, data={field: json.dumps(value)}, files=files)
    assert_refused(answer, 422, "managed by the server")
    assert snapshot(server["studies"]) == before and temporary_files(server) == []


def test_an_entropy_request_still_answers_after_the_forgery_attempts(server):
    answer = call(server, "POST", "/activelearning/entropy", json={"task": "sequence"})
    assert answer.status_code < 500, answer.text


@pytest.mark.parametrize("depth", [25, 300, 950])
def test_info_nested_too_deep_is_refused_and_later_writes_still_work(server, depth):
    before = snapshot(server["studies"])
    nested = "[" * depth + "]" * depth
    answer = call(server, "PUT", f"/datastore/image/info?image={FREE}", data={"info": f'{{"note": {nested}}}'})
    assert_refused(answer, 422, "deeper than 20 levels")
    assert snapshot(server["studies"]) == before
    fine = call(server, "PUT", f"/datastore/image/info?image={FREE}", data={"info": json.dumps({"note": [[["ok"]]]})})
    assert fine.status_code == 200, fine.text


def test_an_image_with_labels_is_not_replaced(server):
    before = snapshot(server["studies"])
    upload = {"file": ("x.nii.gz", nifti_bytes())}
    assert_refused(call(server, "PUT", f"/datastore/image?image={IMAGE}", files=upload), 409, "has labels")
    assert snapshot(server["studies"]) == before and temporary_files(server) == []
    label = call(server, "GET", f"/datastore/label?label={IMAGE}&tag=final")
    assert label.status_code == 200
    assert call(server, "GET", f"/classlabel/sequence?image={IMAGE}").json()["label"] is not None


def test_the_same_class_correction_counts_once(server):
    def counted():
        return call(server, "GET", "/activelearning/stats").json()["tasks"].get("sequence", {}).get("labels_total", 0)

    start = counted()
    for _ in range(5):
        assert call(server, "PUT", f"/classlabel/sequence?image={FREE}", json={"label": "T2"}).status_code == 200
    assert counted() == start + 1


# --------------------------------------------------------------------------------------------- with auth


@pytest.fixture(scope="module")
def tokens(auth_realm):
    return {
        "user": sign(auth_realm.key, [USER], "uma.user"),
        "annotator": sign(auth_realm.key, [ANNOTATOR], "ann.annotator"),
        "other client": sign(auth_realm.key, [ADMIN], "adam.admin", client="another-app"),
        "other issuer": sign(auth_realm.key, [ADMIN], "adam.admin", issuer="http://127.0.0.1:1/realms/elsewhere"),
    }


ROLE_CASES = [
    (
        "user saves a final label through infer params",
        "user",
        "POST",
        "/infer/sequence?image=synth01_t2&output=json",
        {"params": json.dumps({"save_label": True, "label_tag": "final"})},
        403,
        "monailabel-annotator",
    ),
    (
        "user reads a server file through infer params",
        "user",
        "POST",
        "/infer/sequence?image=synth01_t2&output=json",
        {"params": json.dumps({"image": "/etc/hostname"})},
        422,
        "may not set ['image']",
    ),
    (
        "annotator replaces an image that has labels",
        "annotator",
        "PUT",
        "/datastore/image?image=synth01_t2&replace=true",
        None,
        403,
        "monailabel-admin",
    ),
    ("token issued to another client of the realm", "other client", "GET", "/info/", None, 401, "Could not validate"),
    ("token naming another issuer", "other issuer", "GET", "/info/", None, 401, "Could not validate"),
]


@pytest.mark.parametrize("case,role,method,path,data,status,words", ROLE_CASES, ids=[c[0] for c in ROLE_CASES])
def test_role_bypasses_are_closed(auth_server, tokens, case, role, method, path, data, status, words):
    before = snapshot(auth_server["studies"])
    files = {"file": ("x.nii.gz", nifti_bytes())} if "datastore/image" in path else None
    answer = requests.request(
        method,
        auth_server["url"] + path,
        data=data,
        files=files,
        timeout=120,
        headers={"Authorization": f"Bearer {tokens[role]}"},
    )
    assert_refused(answer, status, words)
    assert snapshot(auth_server["studies"]) == before


# ------------------------------------------------------------------------------------------- shared state


def test_two_servers_from_one_app_folder_keep_their_logs_and_models_apart(tmp_path, sample_template, monkeypatch):
    """Both started as a user would (no ``model_dir``, no ``state_dir``: the defaults of :mod:`lib.server_state`,
    under a ``HOME`` of the test's own): each ``GET /logs`` shows its own studies' lines, never the other's,
    and each has its own model folder."""
    from lib import server_state

    env = {"HOME": str(tmp_path / "home")}
    monkeypatch.setenv("HOME", env["HOME"])
    conf = {"models": "sequence", "shipped_models": str(SHIPPED_DIR), "model_dir": None, "state_dir": None}
    with (
        running_server(tmp_path / "a", sample_template, conf=conf, env=env) as a,
        running_server(tmp_path / "b", sample_template, conf=conf, env=env) as b,
    ):
        logs = {}
        for name, live in (("a", a), ("b", b)):
            answer = call(live, "GET", "/logs/?text=true&lines=0")
            assert answer.status_code == 200, answer.text
            logs[name] = answer.text
            assert call(live, "GET", "/logs/?lines=-1").status_code == 422
        for name, other in (("a", "b"), ("b", "a")):
            assert str(tmp_path / name / "datastore") in logs[name]
            assert str(tmp_path / other / "datastore") not in logs[name]
        folders = {}
        for name in ("a", "b"):
            state = Path(server_state.state_dir(str(tmp_path / name / "datastore")))
            assert state.parent == tmp_path / "home" / ".mri-label" / "servers"
            assert (state / "logs" / "app.log").is_file()
            folders[name] = state / "model"
            assert f"model folder {folders[name]}" in logs[name]
        assert folders["a"] != folders["b"]


# ------------------------------------------------------------------------------------------------ stalls


def test_sigterm_during_a_training_stops_the_real_server_within_the_grace(tmp_path, sample_template):
    """A real server training in a background process: SIGTERM ends the server, and the training process with it,
    within ``stop_grace_s`` plus a margin for the shutdown."""
    import psutil

    conf = {"models": "sequence", "shipped_models": str(SHIPPED_DIR), "stop_grace_s": 2}
    with running_server(tmp_path, sample_template, conf=conf) as live:
        request = {"name": "long", "max_epochs": 100, "early_stop_patience": 0, "dataset": "Dataset"}
        assert call(live, "POST", "/train/sequence", json=request).status_code == 200
        for _ in range(300):
            children = psutil.Process(live["process"].pid).children(recursive=True)
            if call(live, "GET", "/train/?all=false").json().get("status") == "RUNNING" and children:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the training did not start")
        started = time.time()
        live["process"].terminate()
        live["process"].wait(timeout=60)
        stopped_s = time.time() - started
        time.sleep(1)
        assert stopped_s < 2 + 15, f"the server took {stopped_s:.1f} s to stop"
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


# ------------------------------------------------------------------------------------- and it starts again


def test_the_next_start_loads_what_the_server_stored(server, tmp_path):
    """What a restart does first: load ``datastore_v2.json`` into MONAI Label's model (a copy of the folder, so
    the running server is not disturbed)."""
    from lib.datastore import MRIDatastore

    copy = tmp_path / "datastore"
    shutil.copytree(server["studies"], copy, ignore=shutil.ignore_patterns(".lock"))
    loaded = MRIDatastore(str(copy), auto_reload=False)
    assert IMAGE in loaded.list_images() and loaded.get_label_uri(IMAGE, "final")
    assert loaded.get_image_info(FREE)["note"] == [[["ok"]]]
