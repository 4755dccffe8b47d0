"""One subject-level train/validation/test split per datastore, written once and reused by every training.

``split.json`` in the datastore folder::

    {"seed": 0, "fractions": [0.7, 0.15, 0.15], "created": "2026-01-01T12:00:00+00:00",
     "subjects": {"<subject>": "train" | "val" | "test", ...}}

Subjects are ``info["subject"]`` of the images in ``datastore_v2.json`` (the image id where none is given, as
the trainers do). The first call orders them by ``sha1("<seed>:<subject>")`` and cuts the list at the fractions
(largest-remainder rounding; a side with a positive fraction gets at least one subject where another side can
spare one). No stratification. Later calls return the stored split unchanged; subjects that appeared since (images
added later) are placed by their own hash, ``u = sha1(...) / 2**60`` against the cumulative fractions, so no
existing subject ever moves and the assignment does not depend on the order in which subjects arrive. Writes are
atomic (:mod:`mri_label.core.atomic`) and serialised by a file lock beside ``split.json``. :func:`pin_split` moves
the subjects a model card names to the card's sides (``"pinned"``: how many moved), to score a shipped checkpoint on
its own test subjects in a datastore imported in another order.

``split_random.json`` (``ensure_split(..., unit="image")``) is the same kind of split with the IMAGE id as the unit
(``"unit": "image"`` in the file), for comparison only: where images of one subject (or near-duplicate group) sit on
both sides it overstates accuracy. It is the split that ``split.json`` would be if every image were its own subject
(same seed, same fractions, same hash order), and it never replaces ``split.json``.
"""

import hashlib
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

from filelock import FileLock

from mri_label.core.atomic import atomic_write_json

SPLIT_FILE = "split.json"
RANDOM_SPLIT_FILE = "split_random.json"
UNITS = {"subject": SPLIT_FILE, "image": RANDOM_SPLIT_FILE}
SIDES = ("train", "val", "test")


def subject_key(seed: int, subject: str) -> str:
    """The one subject hash of every split (``split.json``, ``split_random.json`` and the per-run split of a
    datastore without a folder, :func:`lib.datalists.split_by_subject`): ``sha1("<seed>:<subject>")`` in hex."""
    return hashlib.sha1(f"{seed}:{subject}".encode()).hexdigest()


def _check_fractions(fractions: Sequence[float]) -> List[float]:
    fractions = [float(f) for f in fractions]
    if len(fractions) != 3 or min(fractions) < 0 or fractions[0] <= 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be (train, val, test), non-negative, train > 0, sum 1; got {fractions}")
    return fractions


def _counts(n: int, fractions: Sequence[float]) -> List[int]:
    """Subjects per side for ``n`` subjects: largest-remainder rounding; then an empty side with a positive
    fraction (val before test) takes one from the largest side while that keeps at least one."""
    raw = [f * n for f in fractions]
    counts = [math.floor(r) for r in raw]
    for i in sorted(range(3), key=lambda i: counts[i] - raw[i])[: n - sum(counts)]:
        counts[i] += 1
    for i in (1, 2):
        largest = max(range(3), key=lambda j: counts[j])
        if fractions[i] > 0 and counts[i] == 0 and counts[largest] > 1:
            counts[largest] -= 1
            counts[i] += 1
    return counts


def _by_hash(seed: int, fractions: Sequence[float], subject: str) -> str:
    """Side of one subject from its own hash: ``u`` in [0, 1) against the cumulative fractions."""
    u = int(subject_key(seed, subject)[:15], 16) / 16**15
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


def datastore_subjects(datastore_path) -> List[str]:
    """Sorted distinct subjects of a datastore folder (``info["subject"]``, or the image id where missing)."""
    path = Path(datastore_path) / "datastore_v2.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no datastore here")
    objects = json.loads(path.read_text()).get("objects") or {}
    return sorted({str(((o.get("image") or {}).get("info") or {}).get("subject", i)) for i, o in objects.items()})


def datastore_images(datastore_path) -> List[str]:
    """Sorted image ids of a datastore folder."""
    path = Path(datastore_path) / "datastore_v2.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no datastore here")
    return sorted(str(i) for i in (json.loads(path.read_text()).get("objects") or {}))


def new_split(subjects: Iterable[str], fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0) -> dict:
    """A fresh split of ``subjects`` (not written): order by ``sha1("<seed>:<subject>")`` and cut."""
    fractions = _check_fractions(fractions)
    order = sorted({str(s) for s in subjects}, key=lambda s: subject_key(seed, s))
    n_train, n_val, _ = _counts(len(order), fractions)
    sides = {s: "train" if k < n_train else "val" if k < n_train + n_val else "test" for k, s in enumerate(order)}
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {"seed": int(seed), "fractions": fractions, "subjects": dict(sorted(sides.items())), "created": created}


def load_split(datastore_path, unit: str = "subject") -> Optional[dict]:
    """The stored split of a datastore folder, or None when it has no ``split.json`` (``split_random.json`` for
    ``unit="image"``).

    Raises:
        ValueError: the file is not a split (the message names the file).
    """
    path = Path(datastore_path) / _split_file(unit)
    if not path.is_file():
        return None
    try:
        split = json.loads(path.read_text())
        _check_fractions(split["fractions"])
        int(split["seed"])
        if not all(side in SIDES for side in split["subjects"].values()):
            raise ValueError("a subject is on a side other than train/val/test")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path}: not a valid split file ({error})") from None
    return split


def _split_file(unit: str) -> str:
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    return UNITS[unit]


def ensure_split(
    datastore_path, fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0, unit: str = "subject"
) -> dict:
    """The datastore's split, written on the first call; later calls add new subjects only.

    Args:
        datastore_path: datastore folder (holding ``datastore_v2.json``).
        fractions: (train, val, test) shares of subjects, summing to 1; used only when no split exists yet.
        seed: integer seed of the subject order; used only when no split exists yet.
        unit: ``"subject"`` (``split.json``, what training uses) or ``"image"`` (``split_random.json``: image ids
            in place of subjects, a random image-level split kept for comparison).

    Returns:
        The split dict (see module docstring). When a split exists, its own seed and fractions win over the
        arguments, its subjects keep their sides, and subjects new to the datastore are added by hash (and the
        file re-written, with an ``"updated"`` time).
    """
    folder = Path(datastore_path)
    name = _split_file(unit)
    subjects = datastore_subjects(folder) if unit == "subject" else datastore_images(folder)
    with FileLock(str(folder / (name + ".lock"))):
        split = load_split(folder, unit)
        if split is None:
            split = new_split(subjects, fractions, seed)
            if unit != "subject":
                split["unit"] = unit
        else:
            new = [s for s in subjects if s not in split["subjects"]]
            if not new:
                return split
            for subject in new:
                split["subjects"][subject] = _by_hash(split["seed"], split["fractions"], subject)
            split["subjects"] = dict(sorted(split["subjects"].items()))
            split["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        atomic_write_json(folder / name, split, indent=1)
    return split


#: a model card's ``training.split`` key -> the side its subjects are on
CARD_SIDES = {"train_subjects": "train", "val_subjects": "val", "test_subjects_held_out": "test"}


def pin_split(datastore_path, card_split: Optional[dict]) -> dict:
    """Put the subjects that a model card's ``training.split`` names on the sides it names, in the datastore's
    ``split.json`` (written first by :func:`ensure_split` where absent), so that the checkpoint is scored on the very
    test subjects its card names. A split made at once over every source differs from one made before a source was
    added (the first cut orders all subjects; later ones go by hash), so a datastore imported in another order would
    otherwise put a few subjects on another side. Subjects the card does not name keep theirs.

    Args:
        datastore_path: datastore folder (holding ``datastore_v2.json``).
        card_split: ``training.split`` of a ``model.json`` (lists under the keys of :data:`CARD_SIDES`).

    Returns:
        The split dict as written (``"pinned"`` counts the subjects moved).

    Raises:
        ValueError: ``card_split`` names no subject list (the card predates the split lists).
    """
    if not isinstance(card_split, dict) or not any(isinstance(card_split.get(k), list) for k in CARD_SIDES):
        raise ValueError(f"card_split must hold the subject lists {', '.join(CARD_SIDES)}, got {card_split!r}")
    ensure_split(datastore_path)
    folder = Path(datastore_path)
    with FileLock(str(folder / (SPLIT_FILE + ".lock"))):
        split = load_split(folder)  # read under the lock: a split written meanwhile is not overwritten
        assert split is not None  # ensure_split wrote it, and splits are never removed
        subjects, moved = dict(split["subjects"]), 0
        for key, side in CARD_SIDES.items():
            for subject in card_split.get(key) or []:
                if subject in subjects and subjects[subject] != side:
                    subjects[subject], moved = side, moved + 1
        if moved:
            split = dict(split, subjects=subjects, pinned=moved)
            atomic_write_json(folder / SPLIT_FILE, split, indent=1)
    return split


def split_of(split: dict, subject) -> str:
    """``"train"``, ``"val"`` or ``"test"`` for a subject; one the split has not recorded yet gets the side that
    :func:`ensure_split` would give it (by hash), without writing anything."""
    side = split["subjects"].get(str(subject))
    return side if side is not None else _by_hash(split["seed"], split["fractions"], str(subject))
