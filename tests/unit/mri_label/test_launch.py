"""The one ``monailabel start_server`` command line."""

import sys

import pytest

from mri_label.launch import start_server_command


def test_the_command_holds_app_studies_address_log_config_and_every_option_in_order(tmp_path):
    command = start_server_command(
        tmp_path / "app", "http://pacs/dicom-web", "0.0.0.0", 8000, {"models": "all", "model_dir": tmp_path}, "log.json"
    )
    assert command[:4] == [sys.executable, "-m", "monailabel.main", "start_server"]
    assert command[4:] == [
        "--app",
        str(tmp_path / "app"),
        "--studies",
        "http://pacs/dicom-web",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--log_config",
        "log.json",
        "--conf",
        "models",
        "all",
        "--conf",
        "model_dir",
        str(tmp_path),
    ]


def test_without_a_log_config_there_is_no_log_config_option():
    assert "--log_config" not in start_server_command("app", "studies", "127.0.0.1", 1, {})


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_a_port_outside_the_range_is_refused_naming_it(port):
    with pytest.raises(ValueError, match=f"port must be in 1..65535, got {port}"):
        start_server_command("app", "studies", "127.0.0.1", port, {})
