"""Where the MONAI Label app is, and its classes imported from there: the one place the CLI's modules
(:mod:`mri_label.cli`, :mod:`mri_label.evaluate`, :mod:`mri_label.train`, ...) find the app.

The app is found in a checkout (``apps/mri_app`` beside this package) and in an installed wheel, which carries it as
package data (``mri_label/app``: the app's code, shipped checkpoints and pretrained encoder; ``[tool.setuptools]``
in ``pyproject.toml``). The app's code imports as the top-level ``main`` and ``lib`` once its folder is on
``sys.path``; this module imports nothing of ``mri_label`` itself, so any CLI module may import it.
"""

import os
import sys
from pathlib import Path

PACKAGED_APP = Path(__file__).resolve().parent / "app"
"""The app folder an installed wheel carries (absent in a checkout)."""
CHECKOUT_APP = Path(__file__).resolve().parent.parent / "apps" / "mri_app"
"""The app folder of the checkout this package runs from (absent in an installed wheel)."""


def app_dir() -> Path:
    """The MONAI Label app folder: ``$MRI_LABEL_APP`` when set; else the installed package's own
    (:data:`PACKAGED_APP`); else ``apps/mri_app`` of this checkout (:data:`CHECKOUT_APP`)."""
    wanted = os.environ.get("MRI_LABEL_APP")
    for path in [Path(wanted)] if wanted else [PACKAGED_APP, CHECKOUT_APP]:
        if (path / "main.py").is_file():
            return path
    where = wanted or f"{PACKAGED_APP} or {CHECKOUT_APP}"
    raise SystemExit(f"mri-label: no MONAI Label app at {where}; set MRI_LABEL_APP to the apps/mri_app folder")


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
