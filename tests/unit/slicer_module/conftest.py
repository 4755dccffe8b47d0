"""Fixtures of the Slicer-module tests: MRILabel.py loaded over the fake Slicer of ``fake_slicer.py``."""

import pytest
from fake_slicer import load_mrilabel


@pytest.fixture
def events():
    """Wait-cursor and error-box events, in the order they happened."""
    return []


@pytest.fixture
def module(monkeypatch, events, tmp_path):
    """MRILabel.py loaded with the fake slicer/qt/vtk/ctk modules (removed again afterwards); the module's work
    folders go under the test's tmp_path (:func:`fake_slicer.load_mrilabel`)."""
    return load_mrilabel(monkeypatch, events, tmp_path)
