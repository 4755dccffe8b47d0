"""Review of submitted ``final`` labels: a reviewer approves a label or asks for changes.

The review lives in the label's info in the datastore (:data:`lib.label_info.REVIEW_KEY`)::

    "review": {"status": "approved" | "needs_changes", "comment": "...", "reviewer": "rita.reviewer",
               "time": "2025-01-31T12:00:00Z"}

A ``final`` label without one is ``pending``; saving a new ``final`` label drops the review of the old one
(:func:`lib.datastore.without_review`), so every new label is pending again. With ``--conf train_on approved``
training uses only approved labels (:func:`lib.datalists.trainable_final_labels`).
"""

import time
from typing import Any, Dict, List, Optional

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag

from lib.errors import ImageNotFound, bad_input
from lib.label_info import REVIEW_DECISIONS, REVIEW_KEY, REVIEW_STATES, label_task, review_status

MAX_COMMENT = 2000
"""Longest review comment, in characters."""
FIELDS = ("status", "comment")


def check_review(body: Any) -> Dict[str, str]:
    """The ``status`` and ``comment`` of a review request body; 422 naming the field that is wrong."""
    if not isinstance(body, dict):
        raise bad_input(
            422, 'the review must be a JSON object: {"status": "approved" | "needs_changes", "comment": "..."}'
        )
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise bad_input(422, f"unknown review field(s) {unknown[:5]}; a review has status and comment")
    status = body.get("status")
    if status not in REVIEW_DECISIONS:
        shown = repr(status)[:80]
        raise bad_input(422, f"status must be one of {', '.join(REVIEW_DECISIONS)}, got {shown}")
    comment = body.get("comment")
    if comment is None:
        comment = ""
    if not isinstance(comment, str):
        raise bad_input(422, f"comment must be a string, got {type(comment).__name__}")
    if len(comment) > MAX_COMMENT:
        raise bad_input(422, f"comment must be at most {MAX_COMMENT} characters, got {len(comment)}")
    return {"status": status, "comment": comment}


def _final_label_id(datastore: Datastore, image_id: str) -> str:
    """The id of the image's ``final`` label; 404 when the image or its final label does not exist. (The image's
    file is not asked for: on a DICOMweb datastore that would download the series.)"""
    label_id = datastore.get_label_by_image_id(image_id, DefaultLabelTag.FINAL)
    if label_id:
        return label_id
    if image_id not in datastore.list_images():
        raise ImageNotFound(image_id)
    raise bad_input(404, f"image {image_id!r} has no final label to review")


def set_review(datastore: Datastore, image_id: str, body: Any, reviewer: str) -> Dict[str, str]:
    """Store a review of the image's ``final`` label (replacing an earlier one); return it.

    Raises:
        BadInput: 422 for a bad body (:func:`check_review`), 404 for an unknown image or one without a final label.
    """
    review = check_review(body)
    label_id = _final_label_id(datastore, image_id)
    review.update(reviewer=reviewer, time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    datastore.update_label_info(label_id, DefaultLabelTag.FINAL, {REVIEW_KEY: review})
    return review


def reviews(
    datastore: Datastore, task_labels: Dict[str, Dict[str, int]], status: Optional[str] = None
) -> List[Dict[str, Any]]:
    """The images with a ``final`` label in review state ``status`` (every state when None), in datastore order:
    ``{"image", "task" (lib.label_info.label_task; None for a label of no served task), "status", "review"}``.

    Raises:
        BadInput: 422 for an unknown ``status``.
    """
    if status is not None and status not in REVIEW_STATES:
        raise bad_input(422, f"status must be one of {', '.join(REVIEW_STATES)}, got {status[:80]!r}")
    found = []
    for image_id in datastore.list_images():
        label_id = datastore.get_label_by_image_id(image_id, DefaultLabelTag.FINAL)
        if not label_id:
            continue
        info = datastore.get_label_info(label_id, DefaultLabelTag.FINAL) or {}
        state = review_status(info)
        if status is None or state == status:
            review = info.get(REVIEW_KEY)
            found.append(
                {
                    "image": image_id,
                    "task": label_task(info, task_labels),
                    "status": state,
                    "review": dict(review) if isinstance(review, dict) else None,
                }
            )
    return found
