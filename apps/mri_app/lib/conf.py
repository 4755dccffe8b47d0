"""Typed access to MONAI Label ``--conf`` strings, validated (no ``eval``); also to a request's ``params``.

Each reader raises ``ValueError`` naming the value's source, ``where`` (``--conf`` by default, ``params`` for a
request's parameters), and its key: ``--conf tumor_seg_lr must be a number, got 'x'``,
``params finetune must be true or false, got 'maybe'``.
"""

import json
from typing import Any, Mapping, Optional, Sequence

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def conf_bool(conf: Mapping[str, Any], key: str, default: bool, where: str = "--conf") -> bool:
    """Read a boolean option (true/false/yes/no/1/0) of ``conf`` (the ``where`` of the message)."""
    value = conf.get(key)
    if value is None or value == "":
        return default
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{where} {key} must be true or false, got {value!r}")


def conf_float(
    conf: Mapping[str, Any],
    key: str,
    default: float,
    low: Optional[float] = None,
    high: Optional[float] = None,
    where: str = "--conf",
) -> float:
    """Read a float option and check ``low <= value <= high``."""
    value = conf.get(key)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} {key} must be a number, got {value!r}") from None
    if number != number or (low is not None and number < low) or (high is not None and number > high):
        raise ValueError(f"{where} {key} must lie in [{low}, {high}], got {number}")
    return number


def conf_int(conf: Mapping[str, Any], key: str, default: int, low: int = 1, where: str = "--conf") -> int:
    """Read an integer option and check ``value >= low``."""
    value = conf.get(key)
    if value is None or value == "":
        return default
    try:
        number = int(str(value))
    except ValueError:
        raise ValueError(f"{where} {key} must be an integer, got {value!r}") from None
    if number < low:
        raise ValueError(f"{where} {key} must be >= {low}, got {number}")
    return number


def conf_ints(
    conf: Mapping[str, Any], key: str, default: Sequence[int], length: Optional[int] = None, where: str = "--conf"
) -> tuple:
    """Read a list of positive integers given as JSON (``[16, 32, 64]``) or comma separated (``16,32,64``)."""
    value = conf.get(key)
    if value is None or value == "":
        return tuple(default)
    text = str(value).strip()
    try:
        items = json.loads(text) if text.startswith("[") else [int(v) for v in text.split(",")]
        if not isinstance(items, list) or any(type(v) is not int for v in items):
            raise ValueError
        numbers = tuple(items)
    except (ValueError, TypeError):
        raise ValueError(f"{where} {key} must be a list of integers like [16,32,64], got {value!r}") from None
    if not numbers or any(n < 1 for n in numbers) or (length is not None and len(numbers) != length):
        need = f"{length} positive integers" if length else "positive integers"
        raise ValueError(f"{where} {key} must hold {need}, got {value!r}")
    return numbers


def conf_choice(conf: Mapping[str, Any], key: str, choices: Sequence[str], default: str, where: str = "--conf") -> str:
    """Read an option that takes one of ``choices`` (case and surrounding spaces ignored)."""
    value = conf.get(key)
    if value is None or value == "":
        return default
    text = str(value).strip().lower()
    if text not in choices:
        raise ValueError(f"{where} {key} must be one of {', '.join(choices)}, got {value!r}")
    return text
