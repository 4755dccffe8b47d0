"""``model.json`` beside a checkpoint (nnU-Net style): the checkpoint says what it is (:func:`run_card`, written by a
training), and the app refuses one that does not fit the network and labels it would load it into."""

import json
import os
import time
from typing import Dict, List, Optional

CARD = "model.json"
CHECKED = ("task", "labels", "network", "input")
"""Fields that must agree between a checkpoint's ``model.json`` and the app's task config."""


def read_card(checkpoint: str) -> Optional[Dict]:
    """The ``model.json`` beside ``checkpoint``, or None when there is none.

    Raises:
        ValueError: the file exists but is not a JSON object.
    """
    path = os.path.join(os.path.dirname(checkpoint), CARD)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            card = json.load(handle)
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(card, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(card).__name__}")
    return card


def mismatches(card: Dict, expected: Dict) -> List[str]:
    """Human-readable differences between ``card`` and ``expected`` over :data:`CHECKED` (JSON-normalised)."""
    differences = []
    for field in CHECKED:
        if field not in expected:
            continue
        have, want = _plain(card.get(field)), _plain(expected[field])
        if have != want:
            differences.append(
                f"{field} is {json.dumps(have)} in model.json but {json.dumps(want)} in this app's config"
            )
    return differences


def check_checkpoint(checkpoint: str, expected: Dict, required: bool, remedy: str) -> Optional[Dict]:
    """Raise ValueError naming ``checkpoint``'s ``model.json`` when it is missing (and ``required``) or does not
    fit ``expected``; return the card (None when absent and not required)."""
    card = read_card(checkpoint)
    where = os.path.join(os.path.dirname(checkpoint), CARD)
    if card is None:
        if required:
            raise ValueError(f"{checkpoint} has no {CARD} beside it, so it cannot be checked before loading; {remedy}")
        return None
    differences = mismatches(card, expected)
    if differences:
        raise ValueError(
            f"{where} does not fit this app's {expected.get('task')} model: " + "; ".join(differences) + f". {remedy}"
        )
    return card


def _plain(value):
    return json.loads(json.dumps(value))


def run_card(
    static: Dict,
    task: str,
    network: Dict,
    checkpoint: str,
    context,
    stats: Dict,
    finished: bool,
    amp: bool,
    training: Dict,
) -> Dict:
    """The ``model.json`` of a checkpoint a training run published: the task config's ``static`` card, the run's
    facts (items, subject split, epochs, device, AMP, distributed split, energy, ``training`` extras of the task) and
    its best validation metric.

    Args:
        checkpoint: file name of the checkpoint beside the card.
        context: the run's context (data, split, device), or None.
        stats: MONAI Label's training statistics (epoch, best validation metric) with the run's extras.
        finished: False for the card written at each publish during the run (``training.finished``; it stays so if
            the run is killed or stopped before its end).
    """
    evaluation = stats.get("eval") or stats.get("train") or {}
    card = dict(static)
    card.update(
        {
            "task": task,
            "network": network,
            "checkpoint": checkpoint,
            "training": {
                "items": len(context.datalist) if context else None,
                "split": getattr(context, "split", None),
                "epochs": stats.get("epoch"),
                "max_epochs": getattr(context, "max_epochs", None),
                "finished": finished,
                "device": str(context.device) if context else None,
                "amp": amp,
                "distributed": stats.get("distributed"),
                "energy": stats.get("energy"),
                **training,
            },
            "metrics": {
                "key_metric": evaluation.get("key_metric_name"),
                "best": evaluation.get("best_metric"),
                "best_epoch": evaluation.get("best_metric_epoch"),
                "split": "validation subjects" if stats.get("eval") else "training items",
            },
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "code_version": code_version(),
        }
    )
    return card


def code_version() -> str:
    """The installed ``mri-label`` version, or ``unknown``."""
    try:
        from importlib.metadata import version

        return version("mri-label")
    except Exception:  # not installed as a package
        return "unknown"
