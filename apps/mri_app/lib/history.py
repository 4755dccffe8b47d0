"""A task's model history: every fine-tune decision, archived checkpoints, and rollback to the last archive.

Layout in a task's model folder (``<model_dir>/<task>``)::

    history.json              every event, oldest first (written whole, atomically: mri_label.core.atomic)
    history/<UTC timestamp>/  an archived checkpoint: model.pt and model.json as they were served

Events (``"event"``):

- ``promoted``: a fine-tune run's candidate replaced the served checkpoint
  (:func:`lib.trainers.base.promote_candidate`); the checkpoint it replaced was archived first, and the entry names
  that archive (``"archive"``; null when the replaced checkpoint was the shipped one, which is never moved, or when
  nothing was served).
- ``kept``: the candidate was not promoted (worse on the fixed validation split, or nothing to compare).
- ``rolled back``: ``POST /mri/rollback/<task>`` (:func:`rollback`) served the newest archive again; the checkpoint it
  replaced was archived in turn (so a second rollback undoes the first).

At most ``keep`` archives are kept (``--conf history_keep``, default :data:`DEFAULT_KEEP`): the oldest are deleted
and the entries naming them keep their record with ``"archive": null``; the same happens to an archive that a
rollback restored (it is served again). Archiving, promotion and rollback hold the task's history lock (a file
lock: trainings run in their own processes), so a rollback never interleaves with a promotion.
"""

import contextlib
import json
import logging
import os
import shutil
import time
from typing import Callable, Dict, List, Optional, Tuple

from filelock import FileLock

from lib.infers import checkpoint_info
from mri_label.core.atomic import atomic_copy, atomic_write_json

logger = logging.getLogger(__name__)

HISTORY_FILE = "history.json"
ARCHIVE_FOLDER = "history"
LOCK_FILE = ".history.lock"
CHECKPOINT = "model.pt"
CARD = "model.json"
DEFAULT_KEEP = 5
"""Default of ``--conf history_keep``: archived checkpoints kept per task."""
PROMOTED, KEPT, ROLLED_BACK = "promoted", "kept", "rolled back"


class NoArchive(Exception):
    """There is no archived checkpoint to roll back to."""


def history_lock(task_dir: str) -> FileLock:
    """The lock of a task's history (not re-entrant: take it once per operation)."""
    os.makedirs(task_dir, exist_ok=True)
    return FileLock(os.path.join(task_dir, LOCK_FILE))


def utc_now() -> str:
    """The current time, UTC, ISO 8601 with a ``Z``: ``2025-01-31T12:00:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def read_history(task_dir: str) -> List[Dict]:
    """The task's history entries, oldest first (none when there is no ``history.json``)."""
    try:
        with open(os.path.join(task_dir, HISTORY_FILE), encoding="utf-8") as handle:
            entries = json.load(handle)
    except FileNotFoundError:
        return []
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _write_history(task_dir: str, entries: List[Dict]) -> None:
    atomic_write_json(os.path.join(task_dir, HISTORY_FILE), entries, indent=2, default=str)


def archives(task_dir: str) -> List[str]:
    """Names of the task's archived checkpoints, oldest first (only complete ones: with a ``model.pt``)."""
    folder = os.path.join(task_dir, ARCHIVE_FOLDER)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if not n.startswith(".") and os.path.isfile(os.path.join(folder, n, CHECKPOINT)))


def _archive(task_dir: str) -> Optional[str]:
    """Copy the served ``model.pt`` (and ``model.json``) to a new ``history/<UTC timestamp>/``; its name, or None
    when nothing is served from this folder. The copy is made in a hidden folder renamed into place, so an
    interrupted archive is never listed (and is removed by the next one)."""
    served = os.path.join(task_dir, CHECKPOINT)
    if not os.path.isfile(served):
        return None
    root = os.path.join(task_dir, ARCHIVE_FOLDER)
    os.makedirs(root, exist_ok=True)
    for name in os.listdir(root):  # left by an interrupted archive
        if name.startswith("."):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
    taken = set(os.listdir(root))
    name, count = stamp, 1
    while name in taken:  # two archives within a microsecond
        name, count = f"{stamp}-{count:03d}", count + 1
    partial = os.path.join(root, f".{name}")
    os.makedirs(partial)
    for file in (CHECKPOINT, CARD):
        if os.path.isfile(os.path.join(task_dir, file)):
            atomic_copy(os.path.join(task_dir, file), os.path.join(partial, file))
    os.rename(partial, os.path.join(root, name))
    return name


def _drop_archives(task_dir: str, entries: List[Dict], names) -> None:
    """Delete the archives ``names`` and clear them from the entries that name them (``"archive": null``)."""
    for name in names:
        shutil.rmtree(os.path.join(task_dir, ARCHIVE_FOLDER, name), ignore_errors=True)
        for entry in entries:
            if entry.get("archive") == name:
                entry["archive"] = None


def _prune(task_dir: str, entries: List[Dict], keep: int) -> None:
    kept = archives(task_dir)
    if len(kept) > keep:
        _drop_archives(task_dir, entries, kept[: len(kept) - keep])


def record_decision(
    task_dir: str,
    record: Dict,
    promote: Callable[[Callable[[], Optional[str]]], Tuple[bool, str]],
    keep: int = DEFAULT_KEEP,
) -> Dict:
    """Run a fine-tune run's promotion decision under the history lock and append it to the history.

    Args:
        task_dir: the task's model folder.
        record: what the run reports (run, metric, metric_before/after, times, labelled images, epochs...).
        promote: ``promote(archive) -> (promoted, reason)``: decides and, when promoting, calls ``archive()`` right
            before it replaces the served checkpoint (which archives that checkpoint and returns the archive's
            name; see :func:`lib.trainers.base.promote_candidate`).
        keep: archives to keep (``--conf history_keep``).

    Returns:
        The history entry appended: ``record`` with ``event`` (promoted / kept), ``promoted``, ``reason``, ``time``
        (UTC), ``archive`` (the archive of the replaced checkpoint, or null), ``replaced`` and ``served``
        (checkpoint info of the replaced and of the now served checkpoint).
    """
    with history_lock(task_dir):
        entries = read_history(task_dir)
        archived: Dict[str, Optional[str]] = {"name": None}
        replaced = checkpoint_info(os.path.join(task_dir, CHECKPOINT))

        def archive() -> Optional[str]:
            archived["name"] = _archive(task_dir)
            return archived["name"]

        promoted, reason = promote(archive)
        entry = dict(record, event=PROMOTED if promoted else KEPT, promoted=promoted, reason=reason, time=utc_now())
        entry["archive"] = archived["name"]
        entry["replaced"] = replaced if promoted else None
        entry["served"] = checkpoint_info(os.path.join(task_dir, CHECKPOINT)) if promoted else replaced
        entries.append(entry)
        _prune(task_dir, entries, keep)
        _write_history(task_dir, entries)
    return entry


def rollback(task_dir: str, keep: int = DEFAULT_KEEP, by: Optional[str] = None) -> Dict:
    """Serve the newest archived checkpoint again; the served one is archived first.

    The archive's ``model.pt`` and ``model.json`` are copied over the served ones (each atomically) and the archive is
    then deleted (it is what is served now). The restored ``model.pt`` is a new file with a modification time later
    than the one it replaced: MONAI Label's infer tasks reload their network when that time changes
    (:func:`lib.stock.infer_network`), and cached active-learning scores are tied to it.

    Returns:
        The ``rolled back`` history entry: ``from`` / ``to`` (checkpoint info of the replaced and of the restored
        checkpoint), ``restored`` (the archive served again) and ``archive`` (where the replaced one went).

    Raises:
        NoArchive: nothing to roll back to.
    """
    served = os.path.join(task_dir, CHECKPOINT)
    with history_lock(task_dir):
        available = archives(task_dir)
        if not available:
            raise NoArchive(f"no archived checkpoint in {os.path.join(task_dir, ARCHIVE_FOLDER)}")
        target = available[-1]
        entries = read_history(task_dir)
        before = checkpoint_info(served)
        old_mtime_ns = os.stat(served).st_mtime_ns if os.path.exists(served) else None
        archived = _archive(task_dir)
        source = os.path.join(task_dir, ARCHIVE_FOLDER, target)
        if os.path.isfile(os.path.join(source, CARD)):
            atomic_copy(os.path.join(source, CARD), os.path.join(task_dir, CARD))
        else:  # the card served would describe another checkpoint
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(task_dir, CARD))
        atomic_copy(os.path.join(source, CHECKPOINT), served)
        if old_mtime_ns is not None and os.stat(served).st_mtime_ns <= old_mtime_ns:  # a coarse file-system clock
            later = old_mtime_ns + 1_000_000_000
            os.utime(served, ns=(later, later))
        _drop_archives(task_dir, entries, [target])
        entry = {
            "event": ROLLED_BACK,
            "time": utc_now(),
            "by": by,
            "restored": target,
            "archive": archived,
            "from": before,
            "to": checkpoint_info(served),
        }
        entries.append(entry)
        _prune(task_dir, entries, keep)
        _write_history(task_dir, entries)
    logger.info(f"{os.path.basename(task_dir)}: rolled back to the checkpoint archived as {target}")
    return entry
