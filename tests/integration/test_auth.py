"""Access control end to end: the real server with MONAI Label auth on, a fake Keycloak realm on loopback
serving a key generated here, and tokens signed with it (or with another key, or expired)."""

import json
import logging

import nibabel as nib
import numpy as np
import pytest
import requests

from tests.helpers.app import SHIPPED_DIR
from tests.helpers.fake_realm import ADMIN, ANNOTATOR, USER, new_key, sign

PATIENT = "DOE^JANE_19700101"  # stands for a patient identifier a client might send; must never be logged
IMAGE = "synth01_t2"
OTHER_KEY = new_key()
ROLES = ("anonymous", "user", "annotator", "admin", "other_key", "expired")


@pytest.fixture(scope="module")
def tokens(auth_realm):
    signed = {
        "anonymous": None,
        "user": sign(auth_realm.key, [USER], "uma.user"),
        "annotator": sign(auth_realm.key, [ANNOTATOR, "offline_access"], "ann.annotator"),
        "admin": sign(auth_realm.key, [ADMIN], "adam.admin"),  # admin alone: the roles below it come with it
        "other_key": sign(OTHER_KEY, [ADMIN], "eve.forger"),
        "expired": sign(auth_realm.key, [ADMIN], "old.admin", expires_in=-120),
    }
    assert tuple(signed) == ROLES
    return signed


@pytest.fixture(scope="module")
def server(auth_server):
    return auth_server


def _nifti(server, tmp_path, name, label=False) -> str:
    source = nib.load(server["studies"] / f"{IMAGE}.nii.gz")
    data = np.zeros(source.shape, np.uint8) if label else np.asarray(source.dataobj)
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, source.affine), path)
    return str(path)


def _request(server, tmp_path, token, role, action):
    """Send ``action`` as ``role`` (with ``token``); actions that write use ids of their own per role."""
    url = server["url"]
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def call(method, path, **kw):
        return requests.request(method, url + path, headers=headers, timeout=120, **kw)

    if action == "info":
        return call("GET", "/info/")
    if action == "infer":
        params = json.dumps({"patient": PATIENT})
        return call("POST", f"/infer/sequence?image={IMAGE}&output=json", data={"params": params})
    if action == "list datastore":
        return call("GET", "/datastore/?output=all")
    if action == "upload image":
        with open(_nifti(server, tmp_path, f"{PATIENT}.nii.gz"), "rb") as f:
            return call(
                "PUT",
                f"/datastore/image?image=upload_{role}",
                files={"file": (f"{PATIENT}.nii.gz", f)},
                data={"params": json.dumps({"patient_name": PATIENT})},
            )
    if action == "save label":
        with open(_nifti(server, tmp_path, f"{PATIENT}_label.nii.gz", label=True), "rb") as f:
            params = {"comment": f"patient {PATIENT}"}
            return call(
                "PUT",
                f"/datastore/label?image={IMAGE}&tag=auth_{role}",
                files={"label": (f"{PATIENT}.nii.gz", f)},
                data={"params": json.dumps(params)},
            )
    if action == "put class label":
        return call("PUT", f"/classlabel/sequence?image={IMAGE}", json={"label": "T2"})
    if action == "delete class label":
        return call("DELETE", f"/classlabel/sequence?image={IMAGE}")
    if action == "train":
        return call("POST", "/train/no_such_task", json={"max_epochs": 1})
    if action == "stop training":
        return call("DELETE", "/train/")
    if action == "delete label":
        return call("DELETE", f"/datastore/label?id={IMAGE}&tag=auth_annotator")
    if action == "delete image":
        return call("DELETE", "/datastore/image?id=upload_annotator")
    if action == "download model":
        return call("GET", "/model/sequence")
    if action == "upload model":
        weights = (SHIPPED_DIR / "tumor_type" / "model.pt").read_bytes()
        return call("PUT", "/model/tumor_type", files={"file": ("model.pt", weights)})
    if action == "delete model":
        return call("DELETE", "/model/tumor_type")
    if action == "reload":
        return call("POST", "/reload")
    raise ValueError(action)


#: action -> the lowest role allowed (MONAI Label's roles nest: admin > reviewer > annotator > user).
ACTIONS = {
    "info": USER,
    "infer": USER,
    "list datastore": USER,
    "upload image": ANNOTATOR,
    "save label": ANNOTATOR,
    "put class label": ANNOTATOR,
    "delete class label": ADMIN,
    "train": ADMIN,
    "stop training": ADMIN,
    "delete label": ADMIN,
    "delete image": ADMIN,
    "download model": ADMIN,
    "upload model": ADMIN,
    "delete model": ADMIN,
    "reload": ADMIN,
}
RANK = {USER: 0, ANNOTATOR: 1, ADMIN: 3}
HELD = {"user": USER, "annotator": ANNOTATOR, "admin": ADMIN}
#: What an allowed call answers once past the checks (train: 404 for the unknown task).
ALLOWED = {"train": 404}
#: Ordered so that what is deleted was written first: every role's upload/save before the deletions.
MATRIX = [(role, action) for action in ACTIONS for role in ROLES]


def expected(role: str, action: str) -> int:
    if role not in HELD:
        return 401
    return ALLOWED.get(action, 200) if RANK[HELD[role]] >= RANK[ACTIONS[action]] else 403


@pytest.mark.parametrize("role,action", MATRIX, ids=[f"{r}-{a}" for r, a in MATRIX])
def test_role_matrix(server, tokens, tmp_path, role, action):
    response = _request(server, tmp_path, tokens[role], role, action)
    want = expected(role, action)
    assert response.status_code == want, f"{role} {action}: {response.status_code} {response.text[:300]}"
    if want == 403:
        assert ACTIONS[action] in response.json()["detail"]
    if want == 401:
        assert response.headers.get("WWW-Authenticate") == "Bearer"


def _routes():
    """(method, path) of every route the app serves, MONAI Label's and ours, from the app in process."""
    from monailabel.app import app

    from lib.access import endpoints
    from lib.routes import install

    install(app)
    return app, sorted({(m, r.path_format) for r in endpoints(app) for m in r.methods})


PUBLIC = {("GET", "/"), ("GET", "/favicon.ico")}


def test_anonymous_gets_401_on_every_route_but_the_public_ones(server):
    _, routes = _routes()
    routes.append(("GET", "/auth/token/valid"))  # the login routes exist only with auth on
    assert len(routes) > 40
    for method, path in routes:
        url = server["url"] + path.replace("{", "").replace("}", "")
        status = requests.request(method, url, timeout=30).status_code
        assert status != 401 if (method, path) in PUBLIC else status == 401, f"{method} {path}: {status}"
    for path in ("/docs", "/openapi.json", "/auth/"):
        assert requests.get(server["url"] + path, timeout=30).status_code == 200


def test_every_route_names_the_role_it_needs():
    from lib import access

    app, _ = _routes()
    roles = {}  # the first route of a method and path is the one that answers
    for route in access.endpoints(app):
        for method in route.methods:
            roles.setdefault((method, route.path_format), access.route_role(route))
    assert {k for k, v in roles.items() if v is None} == PUBLIC
    for key, role in {
        ("PUT", "/model/{model}"): ADMIN,
        ("DELETE", "/model/{model}"): ADMIN,
        ("DELETE", "/classlabel/{task}"): ADMIN,
        ("POST", "/train/{model}"): ADMIN,
        ("POST", "/reload"): ADMIN,
        ("PUT", "/datastore/label"): ANNOTATOR,
        ("POST", "/infer/{model}"): USER,
        ("POST", "/proxy/dicom/stow/{path}"): ANNOTATOR,
        ("GET", "/proxy/dicom/qido/{path}"): USER,
    }.items():
        assert roles[key] == role, key


def test_token_check_reports_who_is_logged_in(server, tokens):
    url = server["url"] + "/auth/token/valid"
    answer = requests.get(url, headers={"Authorization": f"Bearer {tokens['annotator']}"}, timeout=30)
    assert answer.status_code == 200 and answer.json()["username"] == "ann.annotator"
    assert requests.get(url, headers={"Authorization": f"Bearer {tokens['expired']}"}, timeout=30).status_code == 401


def test_log_has_no_tokens_user_names_or_patient_identifiers(server, tokens):
    log = server["log"].read_text()
    assert "Saving Label" in log or "label 'auth_annotator'" in log  # the matrix did write through the log
    for secret in [t for t in tokens.values() if t] + [t.split(".")[1] for t in tokens.values() if t]:
        assert secret not in log
    for name in ("uma.user", "ann.annotator", "adam.admin", "eve.forger", "old.admin", "DOE^JANE", "DOE"):
        assert name not in log, name


REDACTED = [
    (
        "monailabel.endpoints.datastore",
        f"Image: img1; File: UploadFile(filename='{PATIENT}.nii.gz'); params: {{}}",
        "Image: img1; upload received (file name and params not logged)",
    ),
    ("monailabel.endpoints.datastore", f"Save Label params: {{'patient': '{PATIENT}'}}", None),
    ("monailabel.endpoints.datastore", "Removing Label: img1 by ann.annotator", "Removing Label: img1"),
    (
        "monailabel.endpoints.infer",
        f"Infer Request: {{'model': 'sequence', 'patient': '{PATIENT}'}}",
        "Infer Request received (params not logged)",
    ),
    (
        "monailabel.tasks.infer.basic_infer",
        f"Infer Request (final): {{'device': 'cpu', 'model': 'm', 'image': 'i', 'x': '{PATIENT}'}}",
        "Infer Request (final): model m, image i (params not logged)",
    ),
    (
        "monailabel.endpoints.session",
        f"Request Files: [UploadFile(filename='{PATIENT}.dcm')]",
        "Request Files: (not logged)",
    ),
    ("monailabel.endpoints.session", f"1 => UploadFile(filename='{PATIENT}.dcm') => /tmp/x", None),
    ("monailabel.endpoints.datastore", "Saving Label for img1 for tag: final", "Saving Label for img1 for tag: final"),
]


@pytest.mark.parametrize("logger,message,logged", REDACTED)
def test_endpoint_logs_keep_ids_only(caplog, logger, message, logged):
    from lib import log_privacy

    log_privacy.install()
    with caplog.at_level("INFO", logger=logger):
        logging.getLogger(logger).info(message)
    assert [r.getMessage() for r in caplog.records if r.name == logger] == ([logged] if logged else [])


def _login(server, username, password):
    return requests.post(server["url"] + "/auth/token", data={"username": username, "password": password}, timeout=30)


@pytest.mark.parametrize(
    "username,password,status",
    [
        ("ann.annotator", "annotator-pw", 200),
        ("ann.annotator", "admin-pw", 401),
        ("nobody", "annotator-pw", 401),
    ],
)
def test_login_swaps_a_password_for_a_token(server, username, password, status):
    answer = _login(server, username, password)
    assert answer.status_code == status, answer.text
    if status == 200:
        token = answer.json()["access_token"]
        me = requests.get(server["url"] + "/auth/token/valid", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert me.json()["username"] == username and ANNOTATOR in me.json()["roles"]
    else:
        assert answer.json()["detail"] == "wrong user name or password"
        assert answer.headers.get("WWW-Authenticate") == "Bearer"
