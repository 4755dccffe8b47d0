"""lib.server_state: one state folder (model folder, log file) per studies folder or DICOMweb URL."""

import logging
import os

import pytest

from lib import server_state


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_each_studies_folder_has_its_own_state_folder(tmp_path, home):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = server_state.state_dir(str(tmp_path / "a")), server_state.state_dir(str(tmp_path / "b"))
    assert a != b and os.path.dirname(a) == str(home / ".mri-label" / "servers")
    assert os.path.basename(a).startswith("a-") and len(os.path.basename(a)) == len("a-") + 10


def test_one_folder_spelled_two_ways_is_one_state_folder(tmp_path, monkeypatch):
    (tmp_path / "studies").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "studies")
    monkeypatch.chdir(tmp_path)
    same = {server_state.state_dir(p) for p in ("studies", str(tmp_path / "studies") + "/", str(tmp_path / "link"))}
    assert len(same) == 1


@pytest.mark.parametrize(
    "url,prefix",
    [("http://pacs.example:8042/dicom-web", "pacs.example-"), ("https://10.0.0.5/dicom-web/", "10.0.0.5-")],
)
def test_a_dicomweb_url_has_a_state_folder_named_by_its_host(url, prefix):
    state = server_state.state_dir(url)
    assert os.path.basename(state).startswith(prefix)
    assert state != server_state.state_dir(url.replace("dicom-web", "other"))


def test_conf_chooses_the_folders(tmp_path):
    conf = {"state_dir": str(tmp_path / "s")}
    assert server_state.state_dir("anything", conf) == str(tmp_path / "s")
    assert server_state.model_dir("anything", conf) == str(tmp_path / "s" / "model")
    assert server_state.log_file("anything", conf) == str(tmp_path / "s" / "logs" / "app.log")
    assert server_state.model_dir("anything", dict(conf, model_dir="/m")) == "/m"


@pytest.mark.parametrize("studies", ["", None])
def test_no_studies_and_no_state_dir_is_refused(studies):
    with pytest.raises(ValueError, match="studies"):
        server_state.state_dir(studies)


def test_log_handlers_of_the_shared_file_move_to_the_servers_own(tmp_path):
    shared, own = tmp_path / "app" / "logs" / "app.log", tmp_path / "state" / "logs" / "app.log"
    shared.parent.mkdir(parents=True)
    handler = logging.FileHandler(shared)
    other = logging.FileHandler(tmp_path / "other.log")
    log = logging.getLogger("test_server_state")
    log.addHandler(handler)
    log.addHandler(other)
    log.setLevel(logging.INFO)
    try:
        log.info("before")
        assert server_state.log_to(str(own), str(shared)) == 1
        log.info("after")
    finally:
        for h in (handler, other):
            log.removeHandler(h)
            h.close()
    assert "after" not in shared.read_text() and own.read_text() == "after\n"
    assert "after" in (tmp_path / "other.log").read_text()  # other files are left alone


def test_checkpoints_left_in_the_app_model_folder_are_named(tmp_path):
    (tmp_path / "app" / "model" / "sequence").mkdir(parents=True)
    (tmp_path / "app" / "model" / "sequence" / "model.pt").write_bytes(b"x")
    (tmp_path / "app" / "model" / "empty").mkdir()
    assert server_state.legacy_checkpoints(str(tmp_path / "app"), str(tmp_path / "state" / "model")) == ["sequence"]
    assert server_state.legacy_checkpoints(str(tmp_path / "app"), str(tmp_path / "app" / "model")) == []
    assert server_state.legacy_checkpoints(str(tmp_path / "none"), str(tmp_path / "state")) == []
