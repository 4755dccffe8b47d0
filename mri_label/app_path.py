"""Where the MONAI Label app is, and its classes imported from there: the one place the CLI's modules
(:mod:`mri_label.cli`, :mod:`mri_label.evaluate`, :mod:`mri_label.train`, ...) find the app.

The app's code imports as the top-level ``main`` and ``lib`` once its folder is on ``sys.path``; this module imports
nothing of ``mri_label`` itself, so any CLI module may import it.
"""

import os
import sys
from pathlib import Path


def app_dir() -> Path:
    """The MONAI Label app folder (``apps/mri_app`` of this checkout, or ``$MRI_LABEL_APP``)."""
    path = Path(os.environ.get("MRI_LABEL_APP") or Path(__file__).resolve().parent.parent / "apps" / "mri_app")
    if not (path / "main.py").is_file():
        raise SystemExit(f"mri-label: no MONAI Label app at {path}; set MRI_LABEL_APP to the apps/mri_app folder")
    return path


def app_on_path() -> str:
    """The app folder (:func:`app_dir`), put on ``sys.path`` so that its ``main`` and ``lib`` import."""
    folder = str(app_dir())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return folder


def app_class():
    """``(MRIApp, app folder)``: the app's class, imported from its folder (put on ``sys.path``)."""
    folder = app_on_path()
    from main import MRIApp  # noqa: E402  (the app's own module, importable once its folder is on sys.path)

    return MRIApp, folder
