"""Shared fixtures: the synthetic sample datastore (generated once, copied per test) and the app. (The app folder
and the repository are on ``sys.path`` through ``pythonpath`` in pyproject.toml; the auth realm and the auth server
are in ``integration/conftest.py``.)"""

import os
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers.app import APP_DIR, write_checkpoints

# Tests start from untrained tasks unless they ask for the shipped checkpoints (conf shipped_models).
os.environ["MRI_LABEL_SHIPPED_MODELS"] = "none"


@pytest.fixture(scope="session")
def sample_template(tmp_path_factory) -> Path:
    """A synthetic datastore written once per session; tests get copies."""
    from mri_label.sample_data import write_sample_data

    path = tmp_path_factory.mktemp("sample") / "datastore"
    write_sample_data(path)
    return path


@pytest.fixture
def datastore_dir(sample_template, tmp_path) -> Path:
    """A private copy of the sample datastore."""
    dest = tmp_path / "datastore"
    shutil.copytree(sample_template, dest)
    return dest


@pytest.fixture
def api_server(datastore_dir, tmp_path):
    """(client, app, datastore folder) of a fresh in-process server on a copy of the sample data (FastAPI
    TestClient; tasks untrained)."""
    from monailabel.config import settings
    from monailabel.interfaces.utils.app import app_instance, clear_cache

    settings.MONAI_LABEL_APP_DIR = str(APP_DIR)
    settings.MONAI_LABEL_STUDIES = str(datastore_dir)
    settings.MONAI_LABEL_APP_CONF = {
        "models": "all",
        "model_dir": str(tmp_path / "model"),
        "state_dir": str(tmp_path / "state"),
    }
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
