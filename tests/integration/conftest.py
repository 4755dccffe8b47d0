"""Fixtures of the tests against a real server with MONAI Label auth on: a fake Keycloak realm and the server."""

import shutil

import pytest

from tests.helpers.app import SHIPPED_DIR


@pytest.fixture(scope="session")
def auth_realm():
    """A fake Keycloak realm on loopback (:mod:`tests.helpers.fake_realm`)."""
    from tests.helpers.fake_realm import FakeRealm

    with FakeRealm() as realm:
        yield realm


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory, sample_template, auth_realm):
    """A real server with MONAI Label auth on against :func:`auth_realm`, serving copies of the shipped sequence and
    tumor_type checkpoints (deleting a model's weights must never touch the app's own)."""
    from tests.helpers.live_server import running_server

    root = tmp_path_factory.mktemp("auth")
    shipped = root / "shipped"
    for task in ("sequence", "tumor_type"):
        shutil.copytree(SHIPPED_DIR / task, shipped / task)
    (root / "model" / "tumor_type").mkdir(parents=True)  # MONAI Label's weight upload does not create it (500)
    conf = {"shipped_models": str(shipped), "models": "sequence,tumor_type"}
    env = {"MONAI_LABEL_AUTH_ENABLE": "true", "MONAI_LABEL_AUTH_REALM_URI": auth_realm.url}
    with running_server(root, sample_template, conf=conf, env=env) as live:
        yield live
