"""What an image's or a label's info says: the class label recorded for a task, the segments a viewer named, the
segmentation task a label belongs to, a ``final`` label's review state. Plain functions of the info dicts,
imported by the datastore's checks (:mod:`lib.datastore`) and the training lists (:mod:`lib.datalists`) alike;
they import no other ``lib`` module."""

from typing import Any, Dict, Optional, Set, cast


def class_label(info: Dict[str, Any], task: str) -> Optional[str]:
    """The class name recorded for ``task`` in an image's info, or None."""
    record = (info.get("class_labels") or {}).get(task)
    return record.get("label") if isinstance(record, dict) else None


def segment_names(info: Dict) -> Set[str]:
    """Segment names a viewer sent in a label's info (``label_info: [{"name": ..., "idx": ...}]``), background aside."""
    names = {s.get("name") for s in info.get("label_info") or [] if isinstance(s, dict)} - {"background", None}
    return cast(Set[str], names)


def label_task(info: Dict, task_labels: Dict[str, Dict[str, int]]) -> Optional[str]:
    """Which segmentation task a ``final`` label belongs to.

    The label's info names it (``"task"``, written by our importers and sample data), or the segment
    names sent by a viewer (MONAI Label's Slicer panel sends ``label_info: [{"name": ..., "idx": ...}]``)
    all belong to one task's labels.
    """
    if info.get("task") in task_labels:
        return info["task"]
    names = segment_names(info)
    for task, labels in task_labels.items():
        if names and names <= set(labels):
            return task
    return None


REVIEW_KEY = "review"
"""Key of a ``final`` label's info holding its review: ``{"status", "comment", "reviewer", "time"}`` (written by
``PUT /mri/review/<image>``, :mod:`lib.review`; removed when a new ``final`` label is saved)."""
PENDING, APPROVED, NEEDS_CHANGES = "pending", "approved", "needs_changes"
#: What a reviewer may decide.
REVIEW_DECISIONS = (APPROVED, NEEDS_CHANGES)
#: Every review state of a ``final`` label: pending (not reviewed since it was saved) or a decision.
REVIEW_STATES = (PENDING, *REVIEW_DECISIONS)


def review_status(info: Dict) -> str:
    """The review state of a ``final`` label from its info: the reviewer's decision, or ``pending`` without one."""
    review = info.get(REVIEW_KEY)
    status = review.get("status") if isinstance(review, dict) else None
    return status if status in REVIEW_DECISIONS else PENDING
