"""The review of ``final`` labels as the panel shows it: the states, the checks made before a decision is sent, and
``GET /mri/review``'s answer turned into list entries.

The server (``apps/mri_app/lib/review.py``): ``PUT /mri/review/<image>`` takes ``{"status": "approved" |
"needs_changes", "comment": "..."}`` (comment at most :data:`MAX_COMMENT` characters) and answers
``{"image", "review": {"status", "comment", "reviewer", "time"}}``; ``GET /mri/review?status=...`` answers
``{"status", "count", "images": [{"image", "task", "status", "review"}, ...]}``. A ``final`` label without a review
is ``pending``; a new ``final`` label is pending again.
"""

from typing import Any, List, NamedTuple, Optional

from .errors import UnexpectedAnswerError, answer_text, shown

PENDING, APPROVED, NEEDS_CHANGES = "pending", "approved", "needs_changes"
#: Every review state, in the order of the panel's filter.
REVIEW_STATES = (PENDING, APPROVED, NEEDS_CHANGES)
#: What a reviewer may decide.
DECISIONS = (APPROVED, NEEDS_CHANGES)
#: Longest comment the server takes, in characters (``lib/review.py``: ``MAX_COMMENT``).
MAX_COMMENT = 2000
#: How the panel names each state.
STATE_LABELS = {PENDING: "pending", APPROVED: "approved", NEEDS_CHANGES: "needs changes"}


def review_state(text: Any, allowed=REVIEW_STATES) -> str:
    """The state a filter or button names (``needs changes`` or ``needs_changes`` alike).

    Raises:
        ValueError: not one of ``allowed`` (one sentence naming them).
    """
    value = str(text or "").strip().lower().replace(" ", "_")
    if value not in allowed:
        names = ", ".join(STATE_LABELS[s] for s in allowed)
        raise ValueError(f"the review status must be one of {names}, got {str(text)[:40]!r}")
    return value


def check_comment(comment: Any) -> str:
    """The comment to send (surrounding blanks removed), checked before anything is sent.

    Raises:
        ValueError: not a text, or longer than :data:`MAX_COMMENT` characters (the sentence gives its length).
    """
    if comment is None:
        return ""
    if not isinstance(comment, str):
        raise ValueError(f"the review comment must be a text, got {type(comment).__name__}")
    comment = comment.strip()
    if len(comment) > MAX_COMMENT:
        raise ValueError(
            f"the review comment is {len(comment):,} characters long; the server takes at most {MAX_COMMENT:,}, "
            "so shorten it and send the decision again"
        )
    return comment


class Review(NamedTuple):
    """A reviewer's decision on a final label."""

    status: str
    comment: str
    reviewer: Optional[str]
    time: Optional[str]

    def text(self) -> str:
        """``approved by rita.reviewer, 2025-01-31 12:00 UTC: clean margins``."""
        who = f" by {self.reviewer}" if self.reviewer else ""
        when = f", {self.time.replace('T', ' ').replace('Z', ' UTC')}" if self.time else ""
        said = f": {' '.join(self.comment.split())}" if self.comment else ""
        return f"{STATE_LABELS.get(self.status, self.status)}{who}{when}{said}"


class ReviewItem(NamedTuple):
    """One image of the review list: its id, the task its final label belongs to (None: no task the server serves)
    and its review state (with the review, once there is one)."""

    image: str
    task: Optional[str]
    status: str
    review: Optional[Review]

    def text(self) -> str:
        """The list entry: ``synth01_flair — tumor_seg`` and, once reviewed, the decision and comment."""
        line = f"{self.image} — {self.task or 'no served task'}"
        if self.review is not None:
            comment = self.review.text()
            line += f" — {comment if len(comment) <= 120 else comment[:117] + '...'}"
        return line


def parse_review(value: Any, what: str = "review") -> Optional[Review]:
    """A stored review (``{"status", "comment", "reviewer", "time"}``), or None for null.

    Raises:
        UnexpectedAnswerError: not a mapping with a known decision, or a field of the wrong type.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise UnexpectedAnswerError(f"{what} must be a mapping or null, got {shown(value)}")
    status = value.get("status")
    if status not in DECISIONS:
        raise UnexpectedAnswerError(f"{what}.status must be approved or needs_changes, got {shown(status)}")
    return Review(
        status=status,
        comment=answer_text(value.get("comment"), f"{what}.comment") or "",
        reviewer=answer_text(value.get("reviewer"), f"{what}.reviewer"),
        time=answer_text(value.get("time"), f"{what}.time"),
    )


def parse_reviews(answer: Any) -> List[ReviewItem]:
    """``GET /mri/review``'s answer as list entries, in the server's order.

    Raises:
        UnexpectedAnswerError: the answer is not of the documented shape (the sentence names the field).
    """
    if not isinstance(answer, dict):
        raise UnexpectedAnswerError(f"the review list must be a mapping, got {shown(answer)}")
    images = answer.get("images")
    if not isinstance(images, list):
        raise UnexpectedAnswerError(f"the review list's images must be a list, got {shown(images)}")
    items = []
    for index, entry in enumerate(images):
        where = f"images[{index}]"
        if not isinstance(entry, dict):
            raise UnexpectedAnswerError(f"{where} must be a mapping, got {shown(entry)}")
        image = entry.get("image")
        if not isinstance(image, str) or not image:
            raise UnexpectedAnswerError(f"{where}.image must be an image id, got {shown(image)}")
        status = entry.get("status")
        if status not in REVIEW_STATES:
            raise UnexpectedAnswerError(
                f"{where}.status must be one of {', '.join(REVIEW_STATES)}, got {shown(status)}"
            )
        items.append(
            ReviewItem(
                image,
                answer_text(entry.get("task"), f"{where}.task"),
                status,
                parse_review(entry.get("review"), f"{where}.review"),
            )
        )
    return items


def parse_decision(answer: Any) -> Review:
    """``PUT /mri/review/<image>``'s answer: the review the server stored.

    Raises:
        UnexpectedAnswerError: no stored review in the answer.
    """
    review = parse_review(answer.get("review") if isinstance(answer, dict) else answer)
    if review is None:
        raise UnexpectedAnswerError(f"the review answer holds no stored review, got {shown(answer)}")
    return review


class ReviewList(NamedTuple):
    """The review list the panel shows: the state it was asked for and its entries."""

    status: str
    items: List[ReviewItem]

    def sentence(self) -> str:
        """The status line after the list was read."""
        label = STATE_LABELS.get(self.status, self.status)
        count = len(self.items)
        if not count:
            return f"No final label is {label}."
        return f"{count} final label{'s' if count != 1 else ''} {label}; select one and press Load to see it."


class ReviewDecision(NamedTuple):
    """A decision the server stored, with the review list read again after it."""

    image: str
    review: Review
    listing: ReviewList

    def sentence(self) -> str:
        """The status line after a decision: ``synth01_flair: approved by rita.reviewer; ...``."""
        who = f" by {self.review.reviewer}" if self.review.reviewer else ""
        return f"{self.image}: {STATE_LABELS.get(self.review.status, self.review.status)}{who}; the list is up to date."
