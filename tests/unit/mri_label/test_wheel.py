"""mri-label installed from its wheel, without a checkout: the wheel carries the MONAI Label app (code, shipped
checkpoints, pretrained encoder) as package data, and ``mri_label.app_path`` finds it there.

The wheel is built from a copy of the package's sources (so no ``build/`` folder of the checkout leaks old files into
it), installed with ``pip install --no-deps --target``, and imported by a Python started outside the checkout with
only that folder added to the path (the dependencies come from this environment)."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers.app import APP_DIR, ROOT

RUN_TIME = ("model", "logs", "bin", "__pycache__")  # written by a running app, never shipped
MAX_WHEEL_MB = 40  # the shipped checkpoints are about 23 MB and hardly compress

PROBE = """
import json, os, sys
import mri_label
from mri_label.app_path import app_class, app_dir

folder = app_dir()
MRIApp, _ = app_class()
import main
from lib.task_config import SHIPPED_DIR

print(json.dumps({
    "package": mri_label.__file__,
    "app": str(folder),
    "main": main.__file__,
    "app_class": MRIApp.__name__,
    "configs": sorted(main.discover_configs()),
    "shipped_dir": SHIPPED_DIR,
    "shipped": sorted(os.listdir(SHIPPED_DIR)),
    "cwd": os.getcwd(),
}))
"""


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(wheel file, folder the wheel is installed in)``."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "mri_label", source / "mri_label", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(APP_DIR, source / "apps" / "mri_app", ignore=shutil.ignore_patterns(*RUN_TIME))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", str(source), "-w", str(base / "dist")]
    subprocess.run(build, check=True, capture_output=True, text=True, cwd=base, timeout=600)
    (wheel,) = (base / "dist").glob("mri_label-*.whl")
    target = base / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, timeout=600)
    return wheel, target


def test_the_wheel_carries_the_app_its_checkpoints_and_nothing_of_a_run(installed):
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    app_files = {
        path.relative_to(APP_DIR).as_posix()
        for path in APP_DIR.rglob("*")
        if path.is_file()
        and not set(path.relative_to(APP_DIR).parts) & set(RUN_TIME)
        and (path.suffix == ".py" or path.parts[len(APP_DIR.parts)] in ("shipped", "pretrained"))
    }
    assert app_files and {f"mri_label/app/{f}" for f in app_files} <= set(names)  # every module and checkpoint
    cli = {p.relative_to(ROOT).as_posix() for p in (ROOT / "mri_label").rglob("*.py")}
    assert cli <= set(names)
    assert not [n for n in names if n.split("/")[0] != "mri_label" and not n.split("/")[0].endswith(".dist-info")]
    assert not [n for n in names if set(n.split("/")[2:-1]) & set(RUN_TIME)]  # no model/, logs/, bin/ of a run
    assert wheel.stat().st_size < MAX_WHEEL_MB * 1024 * 1024


def test_an_installed_wheel_finds_its_app_and_shipped_checkpoints_outside_a_checkout(installed, tmp_path):
    _, target = installed
    environment = {k: v for k, v in os.environ.items() if k not in ("MRI_LABEL_APP", "PYTHONPATH")}
    environment.update(PYTHONPATH=str(target), OMP_NUM_THREADS="1")
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=tmp_path, env=environment, timeout=600
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    app = target / "mri_label" / "app"
    assert found["package"] == str(target / "mri_label" / "__init__.py")  # the installed package, not the checkout
    assert found["app"] == str(app) and found["main"] == str(app / "main.py") and found["app_class"] == "MRIApp"
    assert found["shipped_dir"] == str(app / "shipped") and not found["cwd"].startswith(str(ROOT))
    shipped = sorted(p.name for p in (APP_DIR / "shipped").iterdir() if p.is_dir())
    assert found["shipped"] == shipped and set(shipped) <= set(found["configs"])
    for task in shipped:  # the very files of the checkout: checkpoints and their model.json
        for name in ("model.pt", "model.json"):
            assert _sha(app / "shipped" / task / name) == _sha(APP_DIR / "shipped" / task / name)
    encoder = Path("pretrained") / "encoder" / "encoder.pt"
    assert _sha(app / encoder) == _sha(APP_DIR / encoder)
