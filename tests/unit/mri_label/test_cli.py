"""The ``mri-label`` command."""

import json
import os
import subprocess
import sys

import pytest

from mri_label import cli
from tests.helpers.app import SHIPPED_DIR


def test_sample_data_writes_once_and_refuses_to_overwrite(tmp_path, capsys):
    dest = tmp_path / "store"
    assert cli.main(["sample-data", str(dest)]) == 0
    assert "wrote 26 synthetic images and 14 labels" in capsys.readouterr().out
    before = (dest / "datastore_v2.json").read_bytes()
    assert cli.main(["sample-data", str(dest)]) == 1
    assert str(dest) in capsys.readouterr().err
    assert (dest / "datastore_v2.json").read_bytes() == before


def test_serve_writes_sample_data_when_no_studies_and_starts_monailabel(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(cli, "DEFAULT_DATASTORE", tmp_path / "default")
    monkeypatch.setattr(cli.os, "execv", lambda exe, argv: calls.append(argv))
    assert cli.main(["serve", "--port", "8123", "--conf", "tumor_gate_threshold", "0.3"]) == 0
    objects = json.loads((tmp_path / "default" / "datastore_v2.json").read_text())["objects"]
    # a whole-brain T1 to try
    assert len(objects) == 27 and objects["mni152_t1"]["image"]["info"]["subject"] == "mni152"
    command = calls[0]
    assert command[1:4] == ["-m", "monailabel.main", "start_server"]
    assert command[command.index("--app") + 1] == str(cli.app_dir())
    assert command[command.index("--studies") + 1] == str(tmp_path / "default")
    assert command[command.index("--port") + 1] == "8123"
    assert ["--conf", "models", "all"] == command[command.index("models") - 1 : command.index("models") + 2]
    assert command[-3:] == ["--conf", "tumor_gate_threshold", "0.3"]
    # the server's own log file from its first line: ~/.mri-label/servers/<studies>-<hash>/logs/app.log
    log_config = json.loads(open(command[command.index("--log_config") + 1]).read())
    files = {h["filename"] for h in log_config["handlers"].values() if "filename" in h}
    state = cli.server_state().state_dir(str(tmp_path / "default"))
    assert state.startswith(str(tmp_path / "home")) and files == {os.path.join(state, "logs", "app.log")}


def test_serve_takes_the_state_folder_from_conf(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(cli.os, "execv", lambda exe, argv: calls.append(argv))
    studies = tmp_path / "store"
    studies.mkdir()
    assert cli.main(["serve", "--studies", str(studies), "--conf", "state_dir", str(tmp_path / "state")]) == 0
    log_config = json.loads(open(calls[0][calls[0].index("--log_config") + 1]).read())
    assert str(tmp_path / "state" / "logs" / "app.log") in json.dumps(log_config)


def test_unknown_subcommand_is_refused():
    result = subprocess.run([sys.executable, "-m", "mri_label.cli", "frobnicate"], capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_app_dir_must_hold_main_py(tmp_path, monkeypatch):
    monkeypatch.setenv("MRI_LABEL_APP", str(tmp_path))
    with pytest.raises(SystemExit, match="no MONAI Label app"):
        cli.app_dir()


def test_evaluate_takes_a_split_kind(monkeypatch, capsys):
    from mri_label import cli

    args = cli.parser().parse_args(["evaluate", "tumor_type", "--studies", "store"])
    assert args.split == "grouped"
    calls = []

    def fake(task, studies, **kwargs):
        calls.append((task, studies, kwargs["split_kind"]))
        return {"task": task, "n_images": 4, "n_subjects": 4, "headline": {"accuracy": 1.0}, "files": ["r.md"]}

    monkeypatch.setattr("mri_label.evaluate.evaluate", fake)
    assert cli.main(["evaluate", "tumor_type", "--studies", "store", "--split", "random"]) == 0
    assert calls == [("tumor_type", "store", "random")] and "RANDOM image split" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["evaluate", "tumor_type", "--studies", "store", "--split", "patients"])


@pytest.mark.parametrize(
    "folder, conf, message",
    [
        ("empty", ["--conf", "shipped_models", str(SHIPPED_DIR)], "no datastore here"),
        ("missing", ["--conf", "shipped_models", str(SHIPPED_DIR)], "no datastore here"),
        ("empty", ["--conf", "shipped_models", "none"], "tumor_type has no checkpoint"),
    ],
)
def test_evaluate_refuses_in_one_line(tmp_path, capsys, folder, conf, message):
    """A wrong folder or a missing checkpoint: exit 1 and one line naming it, as ``train`` answers, not a traceback."""
    studies = tmp_path / folder
    if folder == "empty":
        studies.mkdir()
    code = cli.main(["evaluate", "tumor_type", "--studies", str(studies), "--model-dir", str(tmp_path / "m")] + conf)
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("mri-label evaluate: ") and message in err and "Traceback" not in err
