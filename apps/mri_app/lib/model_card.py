"""``model.json`` beside a checkpoint (nnU-Net style): the checkpoint says what it is, and the app refuses one
that does not fit the network and labels it would load it into."""

import json
import os
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
