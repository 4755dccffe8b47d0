"""Shared fixtures: the synthetic sample datastore (generated once, copied per test) and the app."""

import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "apps" / "mri_app"
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))
SHIPPED_DIR = APP_DIR / "shipped"
# Tests start from untrained tasks unless they ask for the shipped checkpoints (conf shipped_models).
os.environ["MRI_LABEL_SHIPPED_MODELS"] = "none"


@pytest.fixture(scope="session")
def sample_template(tmp_path_factory) -> Path:
    """A synthetic datastore written once per session; tests get copies."""
    from mri_label.sample_data import write_sample_data

    path = tmp_path_factory.mktemp("sample") / "datastore"
    write_sample_data(path)
    return path


@pytest.fixture(scope="session")
def auth_realm():
    """A fake Keycloak realm on loopback (:mod:`fake_realm`)."""
    from fake_realm import FakeRealm

    with FakeRealm() as realm:
        yield realm


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory, sample_template, auth_realm):
    """A real server with MONAI Label auth on against :func:`auth_realm`, serving copies of the shipped sequence and
    tumor_type checkpoints (deleting a model's weights must never touch the app's own)."""
    from live_server import running_server

    root = tmp_path_factory.mktemp("auth")
    shipped = root / "shipped"
    for task in ("sequence", "tumor_type"):
        shutil.copytree(SHIPPED_DIR / task, shipped / task)
    (root / "model" / "tumor_type").mkdir(parents=True)  # MONAI Label's weight upload does not create it (500)
    conf = {"shipped_models": str(shipped), "models": "sequence,tumor_type"}
    env = {"MONAI_LABEL_AUTH_ENABLE": "true", "MONAI_LABEL_AUTH_REALM_URI": auth_realm.url}
    with running_server(root, sample_template, conf=conf, env=env) as live:
        yield live


@pytest.fixture
def datastore_dir(sample_template, tmp_path) -> Path:
    """A private copy of the sample datastore."""
    dest = tmp_path / "datastore"
    shutil.copytree(sample_template, dest)
    return dest


def snapshot(folder: Path) -> dict:
    """Relative path -> SHA-256 of every file in a datastore (the lock file aside)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def write_checkpoints(app) -> None:
    """Give every task a checkpoint (the network's initial weights), as a user-supplied one would be."""
    import torch

    for config in app.models.values():
        Path(config.path).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": config.network.state_dict()}, config.path)


@pytest.fixture
def api_server(datastore_dir, tmp_path):
    """(client, app, datastore folder) of a fresh in-process server on a copy of the sample data (FastAPI
    TestClient; tasks untrained)."""
    from monailabel.config import settings
    from monailabel.interfaces.utils.app import app_instance, clear_cache

    settings.MONAI_LABEL_APP_DIR = str(APP_DIR)
    settings.MONAI_LABEL_STUDIES = str(datastore_dir)
    settings.MONAI_LABEL_APP_CONF = {"models": "all", "model_dir": str(tmp_path / "model"), "state_dir": str(tmp_path / "state")}
    settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD = False
    clear_cache()
    from monailabel.app import app

    with TestClient(app) as client:
        yield client, app_instance(), datastore_dir
    clear_cache()


@pytest.fixture
def api_trained(api_server):
    """:func:`api_server` with a checkpoint (initial weights) for every task."""
    client, app, folder = api_server
    write_checkpoints(app)
    return api_server
