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


def plant_archive(task_dir: Path) -> Path:
    """Archive a checkpoint in a task's model history as a fine-tune's promotion would (``history/<UTC time>/
    model.pt``, :mod:`lib.history`): the served weights, slightly changed, so that a rollback to it changes what is
    served. Returns the archive's folder."""
    import time

    import torch

    checkpoint = torch.load(task_dir / "model.pt", map_location="cpu", weights_only=False)
    state = checkpoint.get("model", checkpoint)
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name] + 0.01
    folder = task_dir / "history" / (time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + ".000000Z")
    folder.mkdir(parents=True)
    torch.save(checkpoint, folder / "model.pt")
    return folder
