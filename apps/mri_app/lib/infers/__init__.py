"""Infer tasks: thin MONAI Label hooks over the shared transforms and the slice-wise inferer."""

import os
import threading
import time
from typing import Dict, Optional

INFER_LOCK = threading.Lock()
"""One inference at a time in a server process: the served networks are shared and reloaded in place when a
training publishes. The infer route holds it for a request; a strategy that runs a model holds it for each image
it scores, so that infers wait for one image, never for a whole strategy."""


def checkpoint_name(path: str) -> str:
    """A checkpoint's name for answers: its folder (``model`` or ``shipped``), task and file, never the server path
    before them, e.g. ``model/tumor_seg/model.pt``."""
    return "/".join(os.path.normpath(path).split(os.sep)[-3:])


def checkpoint_info(path: Optional[str]) -> Optional[Dict]:
    """Which checkpoint answered: its name (:func:`checkpoint_name`) and modification time (changes when training
    publishes a new one)."""
    if not path or not os.path.exists(path):
        return None
    modified = os.stat(path).st_mtime
    return {
        "name": checkpoint_name(path),
        "modified": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(modified)),
        "mtime": modified,
    }
