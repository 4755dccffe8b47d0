"""Per-server state: what a server writes besides its datastore (its model folder and its log file) lives in a
folder of its own, chosen by its studies, so that two servers started from one app folder never mix (stock: both
write ``<app>/logs/app.log``, ``GET /logs`` of one shows the other's lines, and both train into ``<app>/model``).

The folder is ``--conf state_dir DIR`` where given, else ``~/.mri-label/servers/<name>-<hash>``: ``<name>`` the
studies folder's name (or the DICOMweb host), ``<hash>`` 10 hex digits of the studies' resolved path (or URL). It is
kept outside the studies folder because MONAI Label watches that folder, recursively, for image files (a
training's ``learning_curve.png`` there would reload the datastore). Inside it:

- ``model/``: the default model folder (``--conf model_dir`` still overrides it); ``mri-label train --studies DIR``
  trains into the same folder, so that a server on ``DIR`` serves what was trained for it;
- ``logs/app.log``: the server's log, which ``GET /logs/`` shows.
"""

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Mapping, Optional
from urllib.parse import urlsplit

LOG_NAME = "app.log"


def state_root() -> Path:
    """Where the state folders live unless ``--conf state_dir`` names one: ``~/.mri-label/servers``."""
    return Path.home() / ".mri-label" / "servers"


def _is_url(studies: str) -> bool:
    return urlsplit(str(studies)).scheme in ("http", "https")


def state_dir(studies: str, conf: Optional[Mapping] = None) -> str:
    """The state folder of a server on ``studies`` (a folder or a DICOMweb URL); ``conf["state_dir"]`` wins.

    Raises:
        ValueError: ``studies`` is empty and no ``state_dir`` is given.
    """
    chosen = (conf or {}).get("state_dir")
    if chosen:
        return os.path.abspath(os.path.expanduser(str(chosen)))
    if not studies:
        raise ValueError(f"studies must name a folder or a DICOMweb URL to derive a state folder, got {studies!r}")
    if _is_url(studies):
        key, name = str(studies).rstrip("/"), urlsplit(str(studies)).hostname or "dicomweb"
    else:
        key = os.path.realpath(os.path.expanduser(str(studies)))
        name = os.path.basename(key.rstrip(os.sep)) or "root"
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:40]
    return str(state_root() / f"{name}-{hashlib.sha1(key.encode('utf-8')).hexdigest()[:10]}")


def model_dir(studies: str, conf: Optional[Mapping] = None) -> str:
    """The model folder: ``conf["model_dir"]``, else ``<state folder>/model``."""
    return (conf or {}).get("model_dir") or os.path.join(state_dir(studies, conf), "model")


def log_file(studies: str, conf: Optional[Mapping] = None) -> str:
    """The server's log file: ``<state folder>/logs/app.log``."""
    return os.path.join(state_dir(studies, conf), "logs", LOG_NAME)


def log_to(path: str, shared: str) -> int:
    """Move every logging file handler writing ``shared`` (MONAI Label's ``<app>/logs/app.log``) to ``path``;
    the number of handlers moved. Used where the server was started by ``monailabel start_server`` (whose log
    configuration names the shared file); ``mri-label serve`` configures ``path`` from the start."""
    shared, moved = os.path.realpath(shared), 0
    loggers = [logging.getLogger()] + [
        item for item in logging.Logger.manager.loggerDict.values() if isinstance(item, logging.Logger)
    ]
    for owner in loggers:
        for handler in list(owner.handlers):
            if isinstance(handler, logging.FileHandler) and os.path.realpath(handler.baseFilename) == shared:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                handler.acquire()
                try:
                    handler.close()
                    handler.baseFilename = os.path.abspath(path)
                    handler.stream = handler._open()
                finally:
                    handler.release()
                moved += 1
    return moved


def legacy_checkpoints(app_dir: str, chosen_model_dir: str) -> list:
    """Tasks with a checkpoint in ``<app>/model`` (the model folder before per-server state) when the server
    uses another folder: each start names them once in the log, so that a trained model is not silently dropped."""
    legacy = os.path.join(app_dir, "model")
    if os.path.realpath(legacy) == os.path.realpath(chosen_model_dir) or not os.path.isdir(legacy):
        return []
    return sorted(t for t in os.listdir(legacy) if os.path.isfile(os.path.join(legacy, t, "model.pt")))
