"""A real MONAI Label server with the MRI app, as a subprocess on a free loopback port (for end-to-end tests)."""

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import requests

from mri_label.launch import start_server_command
from tests.helpers.app import APP_DIR


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(
    root: Path, sample_template: Path, conf: dict = None, timeout: float = 600, env: dict = None, studies: str = None
):
    """Start ``monailabel start_server`` on a copy of ``sample_template`` under ``root`` (or on ``studies``, a
    folder or URL, as it is); yield ``{"url", "studies", "models", "state", "startup_s", "log", "process"}``; stop
    it on exit. ``conf``: ``--conf`` options over the defaults (``model_dir`` and ``state_dir`` under ``root``; a
    value None leaves the option out). ``env``: extra environment variables for the server (e.g. MONAI Label's
    ``MONAI_LABEL_AUTH_*``)."""
    models = root / "model"
    if studies is None:
        studies = root / "datastore"
        if not studies.exists():
            shutil.copytree(sample_template, studies)
    port = free_port()
    options = {"models": "all", "model_dir": str(models), "state_dir": str(root / "state"), **(conf or {})}
    options = {key: value for key, value in options.items() if value is not None}  # None: the app's default
    command = start_server_command(APP_DIR, studies, "127.0.0.1", port, options)
    log_path = root / "server.log"
    with open(log_path, "a") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        url = f"http://127.0.0.1:{port}"
        started = time.time()
        try:
            wait_until_ready(
                process, f"{url}/info/", log_path, "server", timeout, lambda r: r.status_code in (200, 401)
            )
            yield {
                "url": url,
                "studies": studies,
                "models": models,
                "state": root / "state",
                "startup_s": time.time() - started,
                "log": log_path,
                "process": process,
            }
        finally:
            stop(process)


def wait_until_ready(process, url: str, log_path: Path, name: str, timeout: float, ready=lambda r: r.ok) -> None:
    """Poll ``url`` until ``ready(response)``; raise with the end of ``log_path`` if ``process`` exits or
    ``timeout`` seconds pass first."""
    started = time.time()
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        if time.time() - started > timeout:
            raise RuntimeError(f"{name} did not answer within {timeout} s:\n{log_path.read_text()[-3000:]}")
        try:
            if ready(requests.get(url, timeout=2)):
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)


def stop(process) -> None:
    """Terminate ``process`` (kill it after 30 s)."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
