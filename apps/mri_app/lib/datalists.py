"""Training items drawn from the datastore, and a subject-level train/validation split.

Items are dicts ``{"image": path, "label": path or class index, "slice": k, "subject": id}``; ``slice``
is the axial slice index of a volume for 2D tasks (``-1`` for 2D images and 3D tasks). Which ``final`` labels a
training uses follows ``--conf train_on`` (:func:`trainable_final_labels`: all, or the approved ones only).
"""

import logging
import math
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
from monai.data import MetaTensor
from monai.transforms import LoadImage
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag

from lib.label_info import APPROVED, REVIEW_STATES, class_label, label_task, review_status
from lib.transforms import axial_axis, brain_slices
from mri_label.core.splits import subject_key

logger = logging.getLogger(__name__)

# A volume's class label applies to its central head slices: those with at least this share of the largest head area.
CLASS_SLICE_FRACTION = 0.5
# Slices with this share of the largest head area or more can be negatives of tumor_gate / tumor_seg.
GATE_SLICE_FRACTION = 0.2

_loader = LoadImage(image_only=True, ensure_channel_first=True)

#: Values of ``--conf train_on``: every ``final`` label, or only those a reviewer approved (``PUT /mri/review``).
TRAIN_ON = ("all", "approved")
_warned_unapproved: Set[str] = set()  # tasks already warned about (train_on approved, none approved yet)


def _read(path: str) -> MetaTensor:
    """``(C, H, W[, D])`` MetaTensor of a file, as the training transforms will see it."""
    return _loader(path)


def final_label(datastore: Datastore, image_id: str) -> Tuple[Optional[str], Dict]:
    """Path and info of an image's ``final`` label, or ``(None, {})``."""
    label_id = datastore.get_label_by_image_id(image_id, DefaultLabelTag.FINAL)
    if not label_id:
        return None, {}
    return datastore.get_label_uri(label_id, DefaultLabelTag.FINAL), datastore.get_label_info(
        label_id, DefaultLabelTag.FINAL
    )


def trainable_final_labels(
    datastore: Datastore, task: str, task_labels: Dict[str, Dict[str, int]], train_on: str = "all"
) -> Tuple[Dict[str, str], Dict]:
    """The ``final`` labels of ``task`` a training uses, by ``--conf train_on``: ``all`` of them, or (``approved``)
    only those whose review status is approved, when at least one is; with none approved yet, all of them (a
    warning is logged once per task and process).

    Returns:
        ``{image id: label path}``, and the record for ``model.json``'s ``training.final_labels``:
        ``{"train_on", "rule" ("all" | "approved" | "all: none approved yet"), "used", "skipped", "by_review"}``
        (``by_review``: how many of the task's final labels are in each review state).
    """
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on must be one of {', '.join(TRAIN_ON)}, got {train_on!r}")
    found: Dict[str, Tuple[str, str]] = {}
    for image_id in datastore.list_images():
        label_path, label_info = final_label(datastore, image_id)
        if label_path and label_task(label_info, task_labels) == task:
            found[image_id] = (label_path, review_status(label_info))
    approved = {i: path for i, (path, status) in found.items() if status == APPROVED}
    if train_on == "approved" and approved:
        chosen, rule = approved, "approved"
    else:
        chosen = {i: path for i, (path, _) in found.items()}
        rule = "all" if train_on == "all" else "all: none approved yet"
        if train_on == "approved" and found and task not in _warned_unapproved:
            _warned_unapproved.add(task)
            logger.warning(
                f"{task}: --conf train_on approved, but none of its {len(found)} final labels is approved yet "
                "(PUT /mri/review); training uses all of them"
            )
    by_review = {state: sum(status == state for _, status in found.values()) for state in REVIEW_STATES}
    record = {
        "train_on": train_on,
        "rule": rule,
        "used": len(chosen),
        "skipped": len(found) - len(chosen),
        "by_review": by_review,
    }
    return chosen, record


def _volume_slices(volume: MetaTensor, fraction: float) -> Tuple[int, List[int]]:
    axis = axial_axis(volume.affine)
    return axis, brain_slices(volume, axis, fraction)


def classification_items(
    datastore: Datastore,
    task: str,
    classes: Sequence[str],
    mask_labels: Optional[Callable[[str], Optional[str]]] = None,
    slices_per_volume: Optional[int] = None,
) -> List[Dict]:
    """Slice items with class indices for a classifier.

    Args:
        task: task name under which class labels are kept in image info.
        classes: class names; the index in this list is the training target.
        mask_labels: optional ``image_id -> mask path`` giving per-slice labels for ``tumor_gate``
            (class 1 where the mask slice is non-empty). A mask wins over a class label.
        slices_per_volume: at most this many evenly spaced central slices of a class-labelled volume
            (neighbouring slices add little but loading time); None keeps them all.
    """
    items = []
    for image_id in datastore.list_images():
        info = datastore.get_image_info(image_id)
        path, subject = info.get("path") or datastore.get_image_uri(image_id), info.get("subject", image_id)
        mask_path = mask_labels(image_id) if mask_labels else None
        name = class_label(info, task)
        if mask_path is None and name is None:
            continue
        if name is not None and name not in classes:
            logger.warning(f"{task}: image {image_id} has unknown class {name!r}; skipped")
            continue
        image = _read(path)
        if image.ndim == 3:  # a 2D picture: one item
            target = classes[int(_read(mask_path).max() > 0)] if mask_path is not None else name
            items.append({"image": path, "label": classes.index(target), "slice": -1, "subject": subject})
            continue
        if mask_path is not None:
            axis, slices = _volume_slices(image, GATE_SLICE_FRACTION)
            mask = _read(mask_path)[0] > 0
            has = mask.sum(dim=[d for d in range(3) if d != axis]) > 0
            items += [{"image": path, "label": int(has[k]), "slice": k, "subject": subject} for k in slices]
        else:
            _, slices = _volume_slices(image, CLASS_SLICE_FRACTION)
            if slices_per_volume and len(slices) > slices_per_volume:
                slices = [slices[round(i)] for i in np.linspace(0, len(slices) - 1, slices_per_volume)]
            items += [{"image": path, "label": classes.index(name), "slice": k, "subject": subject} for k in slices]
    return items


def segmentation_items(
    datastore: Datastore,
    task: str,
    task_labels: Dict[str, Dict[str, int]],
    slicewise: bool,
    labels: Optional[Dict[str, str]] = None,
) -> List[Dict]:
    """Image/mask items of the ``final`` labels that belong to ``task``.

    For a 2D (slice-wise) task, a volume gives every slice with foreground plus as many head slices
    without (evenly spaced), so the network also learns to leave healthy slices empty.

    Args:
        labels: ``{image id: label path}`` of the labels to use (:func:`trainable_final_labels`); default: every
            ``final`` label of ``task``.
    """
    if labels is None:
        labels, _ = trainable_final_labels(datastore, task, task_labels)
    items = []
    for image_id in datastore.list_images():
        label_path = labels.get(image_id)
        if not label_path:
            continue
        info = datastore.get_image_info(image_id)
        path, subject = info.get("path") or datastore.get_image_uri(image_id), info.get("subject", image_id)
        if not slicewise:
            items.append({"image": path, "label": label_path, "slice": -1, "subject": subject})
            continue
        image = _read(path)
        if image.ndim == 3:
            items.append({"image": path, "label": label_path, "slice": -1, "subject": subject})
            continue
        axis, slices = _volume_slices(image, GATE_SLICE_FRACTION)
        mask = _read(label_path)[0] > 0
        has = mask.sum(dim=[d for d in range(3) if d != axis]) > 0
        positive = [k for k in range(len(has)) if has[k]]
        negative = [k for k in slices if not has[k]]
        step = max(1, len(negative) // max(1, len(positive)))
        for k in sorted(positive + negative[::step][: max(1, len(positive))]):
            items.append({"image": path, "label": label_path, "slice": k, "subject": subject})
    return items


def split_by_subject(items: List[Dict], val_fraction: float, seed: int = 0) -> Tuple[List[Dict], List[Dict]]:
    """Deterministic train/validation split in which no subject is on both sides.

    Subjects are ordered by the split hash of ``(seed, subject)`` (:func:`mri_label.core.splits.subject_key`, the
    hash of ``split.json``); the first ``ceil(val_fraction * n)`` of them (at least one when there are two or more
    subjects) go to validation.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    subjects = sorted({str(i["subject"]) for i in items}, key=lambda s: subject_key(seed, s))
    n_val = min(len(subjects) - 1, max(1, math.ceil(val_fraction * len(subjects)))) if val_fraction > 0 else 0
    val_subjects = set(subjects[:n_val])
    train = [i for i in items if str(i["subject"]) not in val_subjects]
    val = [i for i in items if str(i["subject"]) in val_subjects]
    return train, val
