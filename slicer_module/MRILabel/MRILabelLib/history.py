"""A task's model history as the panel shows it: ``GET /mri/history/<task>`` turned into table rows and the served
checkpoint's line, and the answer of ``POST /mri/rollback/<task>`` turned into one sentence.

The server's answer (``apps/mri_app/lib/mri_routes.py``, ``lib/history.py``)::

    {"task": "tumor_seg",
     "served": {"name": "model/tumor_seg/model.pt", "modified": "2025-01-31T12:00:00", "mtime": 1738324800.0},
     "entries": [  # newest first
        {"event": "promoted" | "kept", "time": "2025-01-31T12:00:00Z", "metric": "val_mean_dice",
         "metric_before": 0.41, "metric_after": 0.44, "reason": "...", "archive": "20250131T120000.000000Z", ...},
        {"event": "rolled back", "time": "...", "by": "adam.admin", "restored": "<archive>", "archive": "<archive>",
         "from": {checkpoint info}, "to": {checkpoint info}}]}

An answer that is not of this shape raises :class:`~MRILabelLib.errors.UnexpectedAnswerError` naming what is wrong
(one plain sentence through :func:`~MRILabelLib.errors.plain_sentence`); keys the panel does not show are ignored.
"""

import math
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from .errors import UnexpectedAnswerError, answer_text, shown

PROMOTED, KEPT, ROLLED_BACK = "promoted", "kept", "rolled back"
#: The table's column titles, in order.
COLUMNS = ("Time", "Event", "Metric (before → after)", "Reason")
NO_VALUE = "–"


class Checkpoint(NamedTuple):
    """What a checkpoint info of the server says: its name (relative to the model folder or the app) and when it
    was written (server local time, as the server gives it)."""

    name: str
    modified: Optional[str]
    mtime: Optional[float]

    def text(self) -> str:
        """``model/tumor_seg/model.pt (written 2025-01-31 12:00:00)``."""
        return self.name + (f" (written {self.modified.replace('T', ' ')})" if self.modified else "")


class HistoryRow(NamedTuple):
    """One entry of the history, as the table shows it."""

    time: str
    event: str
    metric: str
    reason: str
    archive: Optional[str]

    def cells(self) -> Tuple[str, str, str, str]:
        """The row's cells, in :data:`COLUMNS` order."""
        return self.time, self.event, self.metric, self.reason


class ModelHistory(NamedTuple):
    """A task's history: the checkpoint served now and the entries, newest first."""

    task: str
    served: Optional[Checkpoint]
    rows: List[HistoryRow]

    def served_line(self) -> str:
        """The line under the table: what the task serves now."""
        if self.served is None:
            return f"{self.task} serves no checkpoint yet (train it first)."
        return f"{self.task} serves {self.served.text()}."

    @property
    def newest_archive(self) -> Optional[str]:
        """The newest archive the entries still name (what a rollback would serve again), or None."""
        names = [row.archive for row in self.rows if row.archive]
        return max(names) if names else None

    def sentence(self) -> str:
        """The status line after the history was read."""
        count = len(self.rows)
        if not count:
            return f"{self.task} has no model history yet: no fine-tune run or rollback so far."
        return f"Model history of {self.task}: {count} entr{'ies' if count != 1 else 'y'}, newest first."


def rollback_question(task: str, history: Optional[ModelHistory] = None) -> str:
    """What the panel asks before a rollback of ``task`` (the admin confirms with OK); names the archive and the
    served checkpoint where ``history`` (the task's last history read) knows them.

    Raises:
        ValueError: no task given.
    """
    if not task or not str(task).strip():
        raise ValueError("Choose the task to roll back in Model history first")
    known = history if history is not None and history.task == task else None
    archive = known.newest_archive if known is not None else None
    target = f"the checkpoint archived as {archive}" if archive else "its newest archived checkpoint"
    now = f" instead of {known.served.text()}" if known is not None and known.served is not None else ""
    return (
        f"Roll {task} back: serve {target} again{now}? Every user's next inference of {task} uses it. "
        "The checkpoint served now is archived, so a second rollback undoes this one."
    )


class RollbackResult(NamedTuple):
    """The answer of a rollback: the task, what it serves now and the history entry the server appended."""

    task: str
    served: Optional[Checkpoint]
    row: HistoryRow
    restored: Optional[str]

    def sentence(self) -> str:
        """One sentence for the status line."""
        what = f"the checkpoint archived as {self.restored}" if self.restored else "its previous checkpoint"
        now = f" ({self.served.text()})" if self.served else ""
        kept = f"; the one it replaced is archived as {self.row.archive}" if self.row.archive else ""
        return f"{self.task} was rolled back: it serves {what} again{now}{kept}."


def _number(value: Any, what: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UnexpectedAnswerError(f"{what} must be a number, got {shown(value)}")
    return float(value)


def parse_checkpoint(value: Any, what: str = "served") -> Optional[Checkpoint]:
    """A checkpoint info (``{"name", "modified", "mtime"}``), or None for null.

    Raises:
        UnexpectedAnswerError: not a mapping with a ``name``.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise UnexpectedAnswerError(f"{what} must be a checkpoint description or null, got {shown(value)}")
    return Checkpoint(
        name=str(answer_text(value.get("name"), f"{what}.name", required=True)),
        modified=answer_text(value.get("modified"), f"{what}.modified"),
        mtime=_number(value.get("mtime"), f"{what}.mtime"),
    )


def when(time: Optional[str]) -> str:
    """A history time for people: ``2025-01-31T12:00:00Z`` -> ``2025-01-31 12:00:00 UTC``."""
    if not time:
        return NO_VALUE
    return time.replace("T", " ").replace("Z", " UTC") if time.endswith("Z") else time.replace("T", " ")


def _metric(entry: Dict, where: str) -> str:
    before = _number(entry.get("metric_before"), f"{where}.metric_before")
    after = _number(entry.get("metric_after"), f"{where}.metric_after")
    name = answer_text(entry.get("metric"), f"{where}.metric")
    if before is None and after is None:
        return NO_VALUE
    values = " → ".join(NO_VALUE if v is None else f"{v:.4f}" for v in (before, after))
    return f"{name}: {values}" if name else values


def parse_entry(entry: Any, where: str = "entry") -> HistoryRow:
    """One history entry as a table row.

    Raises:
        UnexpectedAnswerError: the entry is not a mapping, or a shown field has the wrong type.
    """
    if not isinstance(entry, dict):
        raise UnexpectedAnswerError(f"{where} must be a mapping, got {shown(entry)}")
    event = str(answer_text(entry.get("event"), f"{where}.event", required=True))
    time = answer_text(entry.get("time"), f"{where}.time")
    archive = answer_text(entry.get("archive"), f"{where}.archive")
    if event == ROLLED_BACK:
        restored = answer_text(entry.get("restored"), f"{where}.restored")
        by = answer_text(entry.get("by"), f"{where}.by")
        reason = "served " + (f"the checkpoint archived as {restored}" if restored else "an archived checkpoint")
        reason += " again" + (f" (by {by})" if by else "")
        metric = NO_VALUE
    else:
        reason = answer_text(entry.get("reason"), f"{where}.reason") or ""
        metric = _metric(entry, where)
    if archive:
        reason += ("; " if reason else "") + f"the checkpoint it replaced is archived as {archive}"
    return HistoryRow(when(time), event, metric, reason, archive)


def parse_history(answer: Any, task: str = "") -> ModelHistory:
    """``GET /mri/history/<task>``'s answer as :class:`ModelHistory` (entries kept newest first, as sent).

    Raises:
        UnexpectedAnswerError: the answer is not of the documented shape (the sentence names the field).
    """
    if not isinstance(answer, dict):
        raise UnexpectedAnswerError(f"the model history must be a mapping, got {shown(answer)}")
    entries = answer.get("entries")
    if not isinstance(entries, list):
        raise UnexpectedAnswerError(f"the model history's entries must be a list, got {shown(entries)}")
    name = answer_text(answer.get("task"), "task") or task
    rows = [parse_entry(entry, f"entries[{index}]") for index, entry in enumerate(entries)]
    return ModelHistory(name, parse_checkpoint(answer.get("served")), rows)


def parse_rollback(answer: Any, task: str = "") -> RollbackResult:
    """``POST /mri/rollback/<task>``'s answer as :class:`RollbackResult`.

    Raises:
        UnexpectedAnswerError: the answer is not of the documented shape.
    """
    if not isinstance(answer, dict):
        raise UnexpectedAnswerError(f"the rollback answer must be a mapping, got {shown(answer)}")
    entry = answer.get("entry")
    row = parse_entry(entry, "entry")
    restored = answer_text(entry.get("restored"), "entry.restored") if isinstance(entry, dict) else None
    name = answer_text(answer.get("task"), "task") or task
    return RollbackResult(name, parse_checkpoint(answer.get("served")), row, restored)
