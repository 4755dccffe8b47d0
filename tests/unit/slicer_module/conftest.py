"""Fixtures of the Slicer-module tests: MRILabel.py loaded over the fake Slicer of ``fake_slicer.py``."""

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import pytest
from fake_slicer import FILES, stub_modules

MODULE_DIR = Path(__file__).resolve().parents[3] / "slicer_module" / "MRILabel"
#: The module file under test (MRILABEL_MODULE_FILE points elsewhere, e.g. at an older copy, to show a test fails).
MODULE_FILE = Path(os.environ.get("MRILABEL_MODULE_FILE") or MODULE_DIR / "MRILabel.py")


@pytest.fixture
def events():
    """Wait-cursor and error-box events, in the order they happened."""
    return []


@pytest.fixture
def module(monkeypatch, events, tmp_path):
    """MRILabel.py loaded with the fake slicer/qt/vtk/ctk modules (removed again afterwards); the module's work
    folders go under the test's tmp_path."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stubs = stub_modules(events)
    for name, stub in stubs.items():
        monkeypatch.setitem(sys.modules, name, stub)
    spec = importlib.util.spec_from_file_location("MRILabel", MODULE_FILE)
    loaded = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "MRILabel", loaded)
    spec.loader.exec_module(loaded)
    loaded.stubs = stubs
    FILES.clear()
    return loaded
