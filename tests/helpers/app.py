"""The app's folders, and what several test modules check a datastore or an app with."""

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP_DIR = ROOT / "apps" / "mri_app"
SHIPPED_DIR = APP_DIR / "shipped"


def snapshot(folder: Path) -> dict:
    """Relative path -> SHA-256 of every file in a datastore (the lock file aside)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def write_checkpoints(app) -> None:
    """Give every task a checkpoint (the network's initial weights), as a user-supplied one would be."""
    import torch

    for config in app.models.values():
        Path(config.path).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": config.network.state_dict()}, config.path)
