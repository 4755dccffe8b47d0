"""A real MONAI Label server with the MRI app, as a subprocess on a free loopback port (for end-to-end tests)."""

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from conftest import APP_DIR


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(root: Path, sample_template: Path, conf: dict = None, timeout: float = 180):
    """Start ``monailabel start_server`` on a copy of ``sample_template`` under ``root``; yield
    ``{"url", "studies", "models", "startup_s", "log"}``; stop it on exit."""
    studies, models = root / "datastore", root / "model"
    shutil.copytree(sample_template, studies)
    port = free_port()
    options = {"models": "all", "model_dir": str(models), **(conf or {})}
    command = [
        sys.executable, "-m", "monailabel.main", "start_server", "--app", str(APP_DIR), "--studies", str(studies),
        "--host", "127.0.0.1", "--port", str(port),
    ]
    for key, value in options.items():
        command += ["--conf", key, str(value)]
    log_path = root / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        started = time.time()
        try:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
                if time.time() - started > timeout:
                    raise RuntimeError(f"server did not answer within {timeout} s")
                try:
                    if requests.get(f"{url}/info/", timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    time.sleep(0.5)
            yield {"url": url, "studies": studies, "models": models, "startup_s": time.time() - started, "log": log_path}
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
