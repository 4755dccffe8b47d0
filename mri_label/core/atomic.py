"""Crash-safe file writes, the one writer of every JSON file the app and the CLI write (``datastore_v2.json``,
``split.json``, ``model.json``, ``train_stats.json``, ``history.json``, ``activelearning.json``, ...): a reader, or a
server restarted after a crash (SIGKILL, power loss), sees either the old file or the whole new one, never a
half-written one. Each write goes to a temporary file in the destination's folder (same file system), is flushed
to disk (``fsync``), then renamed over the destination (``os.replace`` is atomic on POSIX), and the folder entry is
flushed too. In ``mri_label.core``: the app (``lib``) and the CLI both import it."""

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Union

#: a file path, as text or a path object
StrPath = Union[str, "os.PathLike[str]"]
PARTIAL_SUFFIX = ".partial"  # temporary files; never matched by the datastore's image patterns (*.nii.gz, ...)


def _fsync_folder(folder: str) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened/fsynced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: StrPath, write: Callable[[Any], None], mode: int = 0o644) -> None:
    """Create or replace ``path`` atomically; ``write(f)`` fills the open binary temporary file ``f``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=PARTIAL_SUFFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
    _fsync_folder(folder)


def atomic_copy(source: StrPath, path: StrPath) -> None:
    """Copy the file ``source`` to ``path`` atomically."""
    with open(source, "rb") as src:
        atomic_write(path, lambda f: shutil.copyfileobj(src, f, 1 << 20))


def atomic_write_text(path: StrPath, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: StrPath, content: Any, **dump_args) -> None:
    """Write ``content`` as JSON (UTF-8) to ``path`` atomically; ``dump_args`` go to :func:`json.dumps`."""
    atomic_write_text(path, json.dumps(content, **dump_args))


def remove_partial_files(folder: StrPath) -> int:
    """Delete the temporary files an interrupted write left in ``folder`` (not recursive); return how many."""
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(folder):
            if name.startswith(".") and name.endswith(PARTIAL_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(folder, name))
                    removed += 1
    return removed
