"""Change over time (issue 20, item 4): a measured result compared with the previous study of the same subject.

A task whose config declares ``measures`` (one of :data:`MEASURES`) has its infer results' ``measurements``
reduced to a few :func:`quantities` (a scope and values). The app stores them with the subject, the study date and
the checkpoint as a :func:`measured_record` (in the image's info, :mod:`lib.follow_up`); a later result of the same
task and subject finds the latest earlier record of the same scope (:func:`previous_record`) and reports
:func:`change_since` it: the absolute and percent change of each quantity, per year too where the kind of
measurement says so (:data:`ANNUALISED`), and whether the previous result was measured by another checkpoint.

Nothing is guessed: without a subject, a study date, or an earlier study with a stored result, the change is
:func:`not_computed` with the reason. Study dates are calendar dates (DICOM ``DA`` ``YYYYMMDD`` or ISO
``YYYY-MM-DD``); an interval is whole days, a year 365.25 days.

This module imports nothing of the app or the CLI (``mri_label.core``); pydicom only to read a DICOM file's
``StudyDate`` (:func:`dicom_study_date`).
"""

from __future__ import annotations

import math
import os
import re
from datetime import date
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

MEASURES = {
    "volumes": "volume per label (mm³), per side where the result gives sides; change over time also per year",
    "lesions": "lesion volume (mL) and RANO-style diameters; change over time of the volume and of the sum of "
    "products (absolute and percent, not per year)",
}
"""The ``measures`` a task config may declare: what ``output=report`` / ``mri-label report`` show and what change
over time compares."""
ANNUALISED = ("volumes",)
"""Kinds of measurement whose change is also given per year (atrophy rates); a lesion's change is not."""
DAYS_PER_YEAR = 365.25
SHORT_INTERVAL_DAYS = 180
"""Below this interval the per-year change carries a note: measurement noise dominates an extrapolated rate."""

UNITS = {"mm3": "mm³", "ml": "mL", "mm2": "mm²"}
DIGITS = {"mm3": 1, "ml": 2, "mm2": 1}
PERCENT_DIGITS = 2
NAMES = {
    "total_mm3": "total volume",
    "left_mm3": "left side",
    "right_mm3": "right side",
    "total_mm2": "total area",
    "volume_ml": "volume",
    "area_mm2": "area",
    "sum_of_products_mm2": "sum of products of measurable lesions",
}
"""How each quantity is named on the page (its key ends with its unit)."""

_DA = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_UNKNOWN = ("", "UNK", "UNKNOWN", "NONE")


# --- study dates ---------------------------------------------------------------------------------------------------


def parse_study_date(value: Any, what: str = "study_date") -> Optional[date]:
    """A study date from DICOM ``DA`` (``20240131``) or ISO (``2024-01-31``) text; None for no value (None, empty,
    ``UNK`` as MONAI Label's DICOMweb datastore records a missing ``StudyDate``).

    Raises:
        ValueError: naming ``what``, for any other text, a date that does not exist, or a year before 1900.
    """
    if value is None or (isinstance(value, str) and value.strip().upper() in _UNKNOWN):
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a date as YYYY-MM-DD or YYYYMMDD, got {value!r}")
    text = value.strip()
    match = _DA.match(text) or _ISO.match(text)
    if not match:
        raise ValueError(f"{what} must be a date as YYYY-MM-DD or YYYYMMDD, got {value!r}")
    try:
        parsed = date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        raise ValueError(f"{what} {value!r} is not a calendar date") from None
    if parsed.year < 1900:
        raise ValueError(f"{what} {value!r} lies before 1900")
    return parsed


def dicom_study_date(path: str | os.PathLike) -> Optional[str]:
    """``StudyDate`` (ISO) of a DICOM file, or of the first readable DICOM file of a series folder; None when there
    is none, it is empty, or nothing there is DICOM. Headers only (no pixel data is read)."""
    import pydicom

    path = os.fspath(path)
    files = [path] if os.path.isfile(path) else sorted(os.path.join(path, n) for n in os.listdir(path))
    for file in files:
        if not os.path.isfile(file):
            continue
        try:
            header = pydicom.dcmread(file, stop_before_pixels=True, specific_tags=["StudyDate"])
        except Exception:  # not DICOM (a NIfTI, a stray file): no date from it
            continue
        try:
            found = parse_study_date(str(header.get("StudyDate") or ""), "StudyDate")
        except ValueError:
            return None  # a malformed StudyDate: no date, never a guessed one
        return None if found is None else found.isoformat()
    return None


# --- what is compared ---------------------------------------------------------------------------------------------


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        return None
    return float(value)


def quantities(measures: str, measurements: Mapping[str, Any]) -> Tuple[Optional[str], Dict[str, float]]:
    """``(scope, {quantity: value})`` of a result's ``measurements``, for comparison with another result of the same
    scope only.

    ``volumes``: a volume with sides (``left_mm3``/``right_mm3``): scope ``"left and right"``, ``total_mm3``,
    ``left_mm3``, ``right_mm3``; a volume without sides (a crop): ``"as given, no sides"``, ``total_mm3``; a 2D
    slice: ``"single slice"``, ``total_mm2``. ``lesions``: a volume: ``"volume"``, ``volume_ml`` and
    ``sum_of_products_mm2``; a 2D slice: ``"single slice"``, ``area_mm2`` and ``sum_of_products_mm2``.
    ``(None, {})`` when the measurements hold nothing of these.

    Raises:
        ValueError: ``measures`` is not one of :data:`MEASURES`.
    """
    if measures not in MEASURES:
        raise ValueError(f"measures must be one of {', '.join(MEASURES)}, got {measures!r}")
    m = dict(measurements or {})
    values: Dict[str, Optional[float]]
    if measures == "volumes":
        if _number(m.get("total_mm3")) is not None:
            sides = {k: _number(m.get(k)) for k in ("left_mm3", "right_mm3")}
            if all(v is not None for v in sides.values()):
                scope, values = "left and right", {"total_mm3": _number(m["total_mm3"]), **sides}
            else:
                scope, values = "as given, no sides", {"total_mm3": _number(m["total_mm3"])}
        elif _number(m.get("total_mm2")) is not None:
            scope, values = "single slice", {"total_mm2": _number(m["total_mm2"])}
        else:
            return None, {}
    else:
        found = m.get("lesions")
        lesions: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        products = _number(lesions.get("sum_of_products_mm2"))
        if _number(m.get("total_mm2")) is not None:
            scope, values = "single slice", {"area_mm2": _number(m["total_mm2"])}
        elif _number(lesions.get("volume_ml")) is not None:
            scope, values = "volume", {"volume_ml": _number(lesions["volume_ml"])}
        elif _number(m.get("total_mm3")) is not None:
            scope, values = "volume", {"volume_ml": float(m["total_mm3"]) / 1000.0}
        else:
            return None, {}
        if products is not None:
            values["sum_of_products_mm2"] = products
    return scope, {k: float(v) for k, v in values.items() if v is not None}


def measured_record(
    measures: str,
    measurements: Mapping[str, Any],
    checkpoint: Optional[Mapping[str, Any]],
    subject: Optional[str],
    study_date: Optional[str],
) -> Dict[str, Any]:
    """What is stored of one result for later comparison: ``{"measures", "scope", "values", "checkpoint",
    "subject", "study_date"}`` (``study_date`` ISO or None; ``checkpoint`` the result's ``name``/``modified``/
    ``mtime``)."""
    scope, values = quantities(measures, measurements)
    kept = {k: checkpoint.get(k) for k in ("name", "modified", "mtime") if k in checkpoint} if checkpoint else None
    return {
        "measures": measures,
        "scope": scope,
        "values": values,
        "checkpoint": kept,
        "subject": subject,
        "study_date": study_date,
    }


# --- the previous study -------------------------------------------------------------------------------------------


def not_computed(reason: str) -> Dict[str, Any]:
    """The change over time when it cannot be computed: ``{"computed": False, "reason", "text"}``."""
    return {"computed": False, "reason": reason, "text": f"not computed: {reason}"}


def _record_date(record: Mapping[str, Any]) -> Optional[date]:
    try:
        return parse_study_date(record.get("study_date"))
    except ValueError:
        return None


def previous_record(
    records: Iterable[Tuple[str, Mapping[str, Any]]],
    current: Mapping[str, Any],
    image: Optional[str] = None,
) -> Tuple[Optional[Tuple[str, Mapping[str, Any]]], str]:
    """The stored record a result is compared with: among ``records`` (``(image id, record)`` of one task) those of
    the current record's subject, on another image than ``image``, with a study date before the current one and
    the same scope; the latest of them (then the most recently measured, then the image id).

    Returns:
        ``((image id, record), "")``, or ``(None, reason)`` saying why there is none.
    """
    subject, when = current.get("subject"), _record_date(current)
    if not subject:
        return None, "no subject is recorded for this image (image info subject, or params subject)"
    if when is None:
        return None, "no study date for this image (params study_date, image info study_date or DICOM StudyDate)"
    same = [(i, r) for i, r in records if i != image and r.get("subject") == subject]
    if not same:
        return None, f"no other study of subject {subject!r} has a stored result of this task"
    dated = [(i, r) for i, r in same if _record_date(r) is not None]
    earlier = [(i, r) for i, r in dated if _record_date(r) < when]  # type: ignore[operator]
    if not earlier:
        undated = len(same) - len(dated)
        detail = f"; {undated} without a study date" if undated else ""
        return None, (
            f"no earlier study of subject {subject!r} with a stored result of this task: {len(dated)} on "
            f"{when.isoformat()} or later{detail}"
        )
    comparable = [(i, r) for i, r in earlier if r.get("scope") == current.get("scope")]
    if not comparable:
        scopes = sorted({str(r.get("scope")) for _, r in earlier})
        return None, (
            f"the earlier studies of subject {subject!r} were measured with another scope ({'; '.join(scopes)}) "
            f"than this one ({current.get('scope')}): not comparable"
        )
    best = max(comparable, key=lambda ir: (_record_date(ir[1]), float(ir[1].get("ts") or 0), ir[0]))
    return best, ""


# --- the change ---------------------------------------------------------------------------------------------------


def unit_of(quantity: str) -> str:
    """The unit key of a quantity (its name's last part: ``mm3``, ``ml``, ``mm2``)."""
    return quantity.rsplit("_", 1)[-1]


def same_checkpoint(a: Optional[Mapping[str, Any]], b: Optional[Mapping[str, Any]]) -> Optional[bool]:
    """Whether two results' ``checkpoint`` entries name the same checkpoint (name and modification time); None when
    either does not say."""
    if not a or not b or a.get("name") is None or b.get("name") is None:
        return None
    ta, tb = _number(a.get("mtime")), _number(b.get("mtime"))
    if ta is None or tb is None:
        return None
    return a["name"] == b["name"] and abs(ta - tb) < 1e-6


def _checkpoint_text(checkpoint: Optional[Mapping[str, Any]]) -> str:
    if not checkpoint:
        return "an unknown checkpoint"
    return f"{checkpoint.get('name', '?')}, modified {checkpoint.get('modified', '?')}"


def change_since(current: Mapping[str, Any], image: str, previous: Mapping[str, Any]) -> Dict[str, Any]:
    """The change of each quantity of ``current`` since ``previous`` (records of :func:`measured_record`, both with
    study dates, the previous one earlier; ``image``: the previous one's image id).

    Returns:
        ``{"computed": True, "subject", "study_date", "previous": {"image", "study_date", "checkpoint"},
        "interval_days", "interval_years", "annualised", "changes": {quantity: {"unit", "previous", "current",
        "absolute", "percent"[, "absolute_per_year", "percent_per_year"]}}, "same_checkpoint", "notes", "text"}``;
        values rounded as printed (mm³ and mm² to 0.1, mL to 0.01, percent to 0.01); ``percent`` None where the
        previous value is 0.

    Raises:
        ValueError: a record without a study date, a previous one not earlier, or records of other measures.
    """
    now, then = _record_date(current), _record_date(previous)
    if now is None or then is None or not then < now:
        raise ValueError("change_since needs two dated records, the previous one earlier")
    if current.get("measures") != previous.get("measures") or current.get("scope") != previous.get("scope"):
        raise ValueError("change_since compares records of the same measures and scope only")
    days = (now - then).days
    years = days / DAYS_PER_YEAR
    annualised = current.get("measures") in ANNUALISED
    changes: Dict[str, Dict[str, Any]] = {}
    for quantity, value in (current.get("values") or {}).items():
        before = (previous.get("values") or {}).get(quantity)
        if before is None:
            continue
        unit = unit_of(quantity)
        digits = DIGITS.get(unit, 2)
        absolute = float(value) - float(before)
        percent = None if float(before) == 0 else 100.0 * absolute / float(before)
        row: Dict[str, Any] = {
            "unit": UNITS.get(unit, unit),
            "previous": round(float(before), digits),
            "current": round(float(value), digits),
            "absolute": round(absolute, digits),
            "percent": None if percent is None else round(percent, PERCENT_DIGITS),
        }
        if annualised:
            row["absolute_per_year"] = round(absolute / years, digits)
            row["percent_per_year"] = None if percent is None else round(percent / years, PERCENT_DIGITS)
        changes[quantity] = row
    same = same_checkpoint(current.get("checkpoint"), previous.get("checkpoint"))
    notes: List[str] = []
    if same is False:
        notes.append(
            f"the previous result was measured by another checkpoint ({_checkpoint_text(previous.get('checkpoint'))}) "
            f"than this one ({_checkpoint_text(current.get('checkpoint'))}): part of the change may be the model's"
        )
    elif same is None:
        notes.append("whether the previous result was measured by the same checkpoint is not known")
    if annualised and days < SHORT_INTERVAL_DAYS:
        notes.append(f"per-year change over {days} days: measurement noise dominates a rate over so short a time")
    if any(row["percent"] is None for row in changes.values()):
        notes.append("percent change not computed where the previous value is 0")
    summary = {
        "computed": True,
        "subject": current.get("subject"),
        "study_date": now.isoformat(),
        "previous": {"image": image, "study_date": then.isoformat(), "checkpoint": previous.get("checkpoint")},
        "interval_days": days,
        "interval_years": round(years, 2),
        "annualised": annualised,
        "changes": changes,
        "same_checkpoint": same,
        "notes": notes,
    }
    lines = change_lines(summary)
    summary["text"] = lines[0].rstrip(":") + ": " + "; ".join(line.strip() for line in lines[1:])
    return summary


def _signed(value: float, digits: int) -> str:
    return f"{value:+.{digits}f}"


def change_lines(change: Mapping[str, Any]) -> List[str]:
    """The text lines of a change over time (:func:`change_since` or :func:`not_computed`), as the page prints them:
    the numbers with the digits they are rounded to."""
    if not change.get("computed"):
        return [str(change.get("text") or "not computed")]
    previous = change["previous"]
    lines = [
        f"since {previous['study_date']} (image {previous['image']}), {change['interval_days']} days "
        f"({change['interval_years']:.2f} years) before this study of {change['study_date']}:"
    ]
    for quantity, row in change["changes"].items():
        digits = DIGITS.get(unit_of(quantity), 2)
        unit = row["unit"]
        text = (
            f"  {NAMES.get(quantity, quantity)}: {row['previous']:.{digits}f} -> {row['current']:.{digits}f} {unit}, "
            f"{_signed(row['absolute'], digits)} {unit}"
        )
        text += " (percent: previous 0)" if row["percent"] is None else f" ({_signed(row['percent'], 2)} %)"
        if "absolute_per_year" in row:
            text += f"; per year {_signed(row['absolute_per_year'], digits)} {unit}"
            if row["percent_per_year"] is not None:
                text += f" ({_signed(row['percent_per_year'], 2)} %)"
        lines.append(text)
    if change.get("same_checkpoint"):
        lines.append("both measured by the same checkpoint")
    lines += list(change.get("notes") or [])
    return lines
