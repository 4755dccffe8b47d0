"""Fine-tuning the served checkpoint without putting it at risk (a request ``{"finetune": true}``): the run starts
from the served checkpoint (the shipped one while nothing was trained), publishes its best one to a candidate
beside it, and afterwards the candidate replaces the served checkpoint only when its validation metric is not
worse (the replaced one is archived in the task's model history, :mod:`lib.history`)."""

import contextlib
import logging
import os
from typing import Callable, Dict, Optional

from lib.history import record_decision
from mri_label.core.atomic import atomic_write_json

logger = logging.getLogger(__name__)

RESULT_FILE = "finetune_result.json"  # beside the served checkpoint; read by the server's retrain scheduler


class FineTune:
    """The promotion policy of one fine-tune run.

    Args:
        served: the served checkpoint (the task's publish path).
        shipped: the checkpoint shipped with the app, served while nothing was trained, or None.
        run_model: the run folder's best checkpoint (``<model_dir>/<run name>/model.pt``).

    On construction (every rank, before it decides what to load, so all ranks decide alike) the candidate and
    ``run_model`` left by an earlier run are removed: the run starts from :attr:`start`, not from them.
    """

    def __init__(self, served: str, shipped: Optional[str], run_model: str):
        self.served = served
        self.start: Optional[str] = served if os.path.exists(served) else shipped  # what the run starts from
        self.candidate = candidate_path(served)
        self.baseline: Optional[Dict] = None  # {"name", "value"} of the start checkpoint on the validation items
        for stale in (self.candidate, run_model):
            with contextlib.suppress(FileNotFoundError):
                os.remove(stale)

    def measure_baseline(self, evaluate: Callable[[str], Dict], task: str) -> None:
        """The start checkpoint's validation metric, ``evaluate(path)`` (on every rank: the metric is reduced over
        all of them), before the run changes anything."""
        if self.start:
            self.baseline = evaluate(self.start)
            logger.info(f"{task}: served checkpoint scores {self.baseline} on the validation items before fine-tuning")

    def metrics(self, stats: Dict) -> Dict:
        """The decision's metric entries from the run's statistics: ``metric``, ``metric_before``, ``metric_after``."""
        evaluation = stats.get("eval") or {}
        before = self.baseline
        return {
            "metric": evaluation.get("key_metric_name") or (before or {}).get("name"),
            "metric_before": before["value"] if before else None,
            "metric_after": evaluation.get("best_metric") if evaluation else None,
        }

    def decide(self, record: Dict, keep: int, task: str) -> Dict:
        """Promote the candidate if not worse than the served checkpoint (:func:`promote_candidate`, archiving the
        one it replaces); append the decision to the task's model history (:func:`lib.history.record_decision`,
        ``keep`` archives) and write ``record`` with it to ``finetune_result.json`` beside the checkpoint.

        Args:
            record: the run's facts, with :meth:`metrics`' entries.

        Returns:
            ``record`` with ``promoted``, ``reason`` and ``archive``.
        """

        def promote(archive: Callable[[], Optional[str]]):
            return promote_candidate(
                self.candidate,
                self.served,
                record["metric_before"],
                record["metric_after"],
                had_served=self.start is not None,
                archive=archive,
            )

        folder = os.path.dirname(self.served)
        entry = record_decision(folder, record, promote, keep=keep)
        record.update(promoted=entry["promoted"], reason=entry["reason"], archive=entry["archive"])
        archived = f" (the checkpoint it replaced is archived as {entry['archive']})" if entry["archive"] else ""
        logger.info(
            f"{task}: fine-tuned checkpoint {'promoted' if entry['promoted'] else 'NOT promoted'}: "
            f"{entry['reason']}{archived}"
        )
        atomic_write_json(os.path.join(folder, RESULT_FILE), record, indent=2, default=str)
        return record


def candidate_path(served: str) -> str:
    """Where a fine-tune run publishes its best checkpoint before promotion (``model.candidate.pt``)."""
    root, extension = os.path.splitext(served)
    return f"{root}.candidate{extension}"


def promote_candidate(
    candidate: str,
    served: str,
    before,
    after,
    had_served: bool = True,
    archive: Optional[Callable[[], Optional[str]]] = None,
):
    """Replace ``served`` by ``candidate`` (``os.replace``) when its validation metric ``after`` is not worse than
    the served checkpoint's ``before`` (higher is better); otherwise delete the candidate and keep ``served``.
    Returns ``(promoted, reason)``. With no served checkpoint yet (``had_served`` False: neither a trained nor
    a shipped one), any candidate is promoted; without a validation metric on either side nothing can be
    compared and the served checkpoint stays. ``before`` may be a shipped checkpoint's: ``served`` is then
    the path training publishes to, which does not exist yet. ``archive()``, when given, is called right before
    an existing ``served`` file is replaced (the model history keeps a copy of it)."""
    if not os.path.exists(candidate):
        return False, "the run published no candidate checkpoint"

    def replace():
        if archive is not None and os.path.exists(served):
            archive()
        os.replace(candidate, served)

    if not had_served:
        replace()
        return True, "no checkpoint was served yet"
    if before is None or after is None:
        os.remove(candidate)
        return (
            False,
            "no validation metric on the fixed split to compare with (no validation items); served checkpoint kept",
        )
    if float(after) < float(before):
        os.remove(candidate)
        return (
            False,
            f"validation metric {float(after):.4f} is worse than the served checkpoint's {float(before):.4f}; "
            "served checkpoint kept",
        )
    replace()
    return True, f"validation metric {float(after):.4f} >= served checkpoint's {float(before):.4f}"
