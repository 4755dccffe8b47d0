"""Infer tasks: thin MONAI Label hooks over the shared transforms and the slice-wise inferer."""

import os
import time
from typing import Dict, Optional


def checkpoint_info(path: Optional[str]) -> Optional[Dict]:
    """Which checkpoint answered: its path and modification time (changes when training publishes a new one)."""
    if not path or not os.path.exists(path):
        return None
    modified = os.stat(path).st_mtime
    return {"path": path, "modified": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(modified)), "mtime": modified}
