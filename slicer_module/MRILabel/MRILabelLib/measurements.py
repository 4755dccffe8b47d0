"""What the panel's *Measurements* section shows of a segmentation result: the numbers a clinician reads, as rows
of a two-column table (what, value with its unit), and the sentences that do not fit a cell (why something was not
computed, a flagged volume, a change measured by another checkpoint) as notes under it.

It reads the infer JSON of the mri-label server (issue 20): ``measurements`` (``hippocampus``: volumes per label and
side, ``head_size`` with eTIV and per mille of it, ``volume_check``; ``tumor_seg`` and ``tumor_pipeline``:
``lesions`` with the volume in mL and RANO-style diameters) and ``change_over_time`` (computed since the previous
study, or not computed with the reason). Numbers are rounded as the server's one-page report prints them (volumes
in mm³ and areas in mm² to 0.1, mL to 0.01, diameters to 0.1 mm, per mille and percent to 0.01; eTIV in mL to 0.1),
so the panel and the page read alike.
"""

import math
from typing import Any, Dict, List, Mapping, NamedTuple, Optional

#: Unit symbols of the quantities' keys (their last part: ``total_mm3``, ``volume_ml``, ``area_mm2``).
UNITS = {"mm3": "mm³", "ml": "mL", "mm2": "mm²"}
#: Decimals of each unit, as the report page prints them.
DIGITS = {"mm3": 1, "ml": 2, "mm2": 1}
#: How the change over time names each quantity (``change_over_time.changes`` keys).
CHANGE_NAMES = {
    "total_mm3": "total volume",
    "left_mm3": "left side",
    "right_mm3": "right side",
    "total_mm2": "total area",
    "volume_ml": "volume",
    "area_mm2": "area",
    "sum_of_products_mm2": "sum of products",
}
#: RANO calls a lesion measurable when both diameters are at least this (mm; the server decides, this is its text).
MEASURABLE_MM = 10.0
#: The title of the section when there is nothing to show.
NOTHING_MEASURED = "Run hippocampus or tumor_seg on a volume: its measurements show here."


class MeasurementRow(NamedTuple):
    """One row of the table: what is measured, its value with the unit, and whether it asks for a second look
    (a volume outside the training range, a change measured by another checkpoint)."""

    label: str
    value: str
    flagged: bool = False


class MeasurementsView(NamedTuple):
    """The section's content for one result.

    Attributes:
        task: the task that answered.
        kind: ``volumes`` (volumes per label and side) or ``lesions`` (tumor lesions).
        rows: the table, in reading order: the measurements, then the change since the previous study.
        notes: sentences under the table, each ending with a full stop.
        reportable: whether the task makes a one-page report (its result carries ``change_over_time``, which the
            server adds to the results of exactly the tasks whose config declares measurements: the ones
            ``output=report`` accepts).
    """

    task: str
    kind: str
    rows: List[MeasurementRow]
    notes: List[str]
    reportable: bool

    def text(self) -> str:
        """The rows as ``label: value`` lines, then the notes (for a log, or copying)."""
        lines = [f"{row.label}: {row.value}" for row in self.rows]
        return "\n".join(lines + self.notes)


def _number(value: Any) -> Optional[float]:
    """A finite number, or None (missing, null, text, bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        return None
    return float(value)


def _fixed(value: Any, unit: str) -> str:
    """A number with the unit's decimals and symbol (``3040.0 mm³``, ``12.35 mL``), ``n/a`` when missing."""
    number = _number(value)
    if number is None:
        return "n/a"
    return f"{number:.{DIGITS.get(unit, 2)}f} {UNITS.get(unit, unit)}"


def _sentence(text: str) -> str:
    text = " ".join(str(text).split())
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _mapping(value: Any) -> Dict:
    return dict(value) if isinstance(value, Mapping) else {}


# --- volumes (hippocampus) -----------------------------------------------------------------------------------------


def _per_mille(value: Any) -> str:
    number = _number(value)
    return "" if number is None else f" ({number:.2f} ‰ of eTIV)"


def _volume_rows(measured: Dict, rows: List[MeasurementRow], notes: List[str]) -> None:
    """Left, right and both sides (per mille of eTIV where the server gives it), the volume per label, eTIV, and
    the volume check; a crop has no sides, a 2D picture areas instead of volumes."""
    head = _mapping(measured.get("head_size"))
    etiv = _number(head.get("etiv_ml"))
    fractions = _mapping(head.get("per_mille_of_etiv")) if etiv is not None else {}
    if isinstance(measured.get("mm2"), Mapping) and not isinstance(measured.get("mm3"), Mapping):  # a 2D picture
        rows.append(MeasurementRow("Total area", _fixed(measured.get("total_mm2"), "mm2")))
        for name, value in _mapping(measured.get("mm2")).items():
            rows.append(MeasurementRow(str(name), _fixed(value, "mm2")))
        return
    sides = [side for side in ("left", "right") if isinstance(measured.get(side), Mapping)]
    for side in sides:
        volume = measured[side].get("total_mm3", measured.get(f"{side}_mm3"))
        rows.append(MeasurementRow(side.capitalize(), _fixed(volume, "mm3") + _per_mille(fractions.get(side))))
    if sides:
        rows.append(
            MeasurementRow("Both sides", _fixed(measured.get("total_mm3"), "mm3") + _per_mille(fractions.get("total")))
        )
    else:
        rows.append(MeasurementRow("Total (side not known)", _fixed(measured.get("total_mm3"), "mm3")))
    for name, value in _mapping(measured.get("mm3")).items():
        per_side = [f"{side} {_fixed(measured[side].get(f'{name}_mm3'), 'mm3')}" for side in sides]
        rows.append(MeasurementRow(str(name), _fixed(value, "mm3") + (f" ({', '.join(per_side)})" if per_side else "")))
    if etiv is not None:
        rows.append(MeasurementRow("eTIV (head size)", f"{etiv:.1f} mL"))
    elif head:  # a whole head the server could not register, or boxes given: it says why
        rows.append(MeasurementRow("eTIV (head size)", "not computed"))
        notes.append(_sentence(f"Head size (eTIV) {head.get('note') or 'not computed'}"))
    _volume_check(_mapping(measured.get("volume_check")), rows, notes)


def _volume_check(check: Dict, rows: List[MeasurementRow], notes: List[str]) -> None:
    if not check:
        return
    status = str(check.get("status") or "not checked")
    value, flagged = status, status not in ("ok", "not checked")
    window = check.get("range_mm3")
    if isinstance(window, (list, tuple)) and len(window) == 2 and all(_number(v) is not None for v in window):
        value += f" (training labels {float(window[0]):.0f}-{float(window[1]):.0f} mm³ per hippocampus)"
    rows.append(MeasurementRow("Volume check", value, flagged))
    if check.get("reason"):
        notes.append(_sentence(f"Volume check: {check['reason']}"))


# --- lesions (tumor_seg, tumor_pipeline) -----------------------------------------------------------------------------


def _lesion_rows(measured: Dict, rows: List[MeasurementRow], notes: List[str]) -> None:
    """Tumor volume (area on a 2D picture), the number of lesions, the largest one's volume, diameters and their
    product, and the sum of products of the measurable lesions."""
    lesions = _mapping(measured.get("lesions"))
    listed = [lesion for lesion in lesions.get("lesions") or [] if isinstance(lesion, Mapping)]
    flat = isinstance(measured.get("mm2"), Mapping) or _number(measured.get("total_mm2")) is not None
    if flat:  # a 2D picture: mL of the measures are mm² x 1 mm, so say what they are, an area
        area = _number(measured.get("total_mm2"))
        rows.append(MeasurementRow("Tumor area", _fixed(area, "mm2")))
        notes.append("A single 2D slice: an area, no volume.")
    else:
        volume = _number(lesions.get("volume_ml"))
        if volume is None and _number(measured.get("total_mm3")) is not None:
            volume = float(measured["total_mm3"]) / 1000.0
        rows.append(MeasurementRow("Tumor volume", _fixed(volume, "ml")))
    components = _number(lesions.get("components"))
    count = int(components) if components is not None else len(listed)
    rows.append(MeasurementRow("Lesions (connected components)", str(count)))
    if not listed:
        rows.append(MeasurementRow("Largest lesion", "none (nothing segmented)"))
        return
    big = listed[0]
    slices = big.get("slices")
    if flat:
        lesion_ml = _number(big.get("volume_ml"))
        where = _fixed(None if lesion_ml is None else 1000.0 * lesion_ml, "mm2")
    else:
        where = _fixed(big.get("volume_ml"), "ml")
        if _number(big.get("slice")) is not None:
            where += f" on slice {int(big['slice'])}"
        if isinstance(slices, (list, tuple)) and len(slices) == 2 and all(_number(v) is not None for v in slices):
            first, last = int(slices[0]), int(slices[1])
            where += f" (spans slices {first}-{last})"
    rows.append(MeasurementRow("Largest lesion", where))
    d1, d2 = _number(big.get("largest_diameter_mm")), _number(big.get("perpendicular_diameter_mm"))
    if d1 is not None and d2 is not None:
        rows.append(MeasurementRow("Diameters (largest × perpendicular)", f"{d1:.1f} × {d2:.1f} mm"))
        measurable = big.get("measurable")
        product = _fixed(big.get("product_mm2"), "mm2")
        if measurable is True:
            product += " (measurable)"
        elif measurable is False:
            product += f" (not measurable: a diameter under {MEASURABLE_MM:g} mm)"
        rows.append(MeasurementRow("Bidimensional product", product))
    if _number(lesions.get("sum_of_products_mm2")) is not None:
        rows.append(
            MeasurementRow("Sum of products (measurable lesions)", _fixed(lesions["sum_of_products_mm2"], "mm2"))
        )


# --- change over time ------------------------------------------------------------------------------------------------


def _signed(value: Any, digits: int) -> Optional[str]:
    number = _number(value)
    return None if number is None else f"{number:+.{digits}f}"


def change_value(quantity: str, change: Mapping[str, Any]) -> str:
    """One quantity's change as a cell: ``1.23 → 1.10 mL, -0.13 mL (-10.57 %)``, and ``; per year -0.09 mL
    (-7.05 %)`` where the server gives the change per year."""
    unit_key = quantity.rsplit("_", 1)[-1]
    digits = DIGITS.get(unit_key, 2)
    unit = str(change.get("unit") or UNITS.get(unit_key, unit_key))
    before, now = _number(change.get("previous")), _number(change.get("current"))
    shown = (
        f"{before:.{digits}f} → {now:.{digits}f} {unit}" if before is not None and now is not None else f"n/a {unit}"
    )
    absolute = _signed(change.get("absolute"), digits)
    if absolute is not None:
        shown += f", {absolute} {unit}"
    percent = _signed(change.get("percent"), 2)
    shown += " (percent: previous 0)" if percent is None else f" ({percent} %)"
    per_year = _signed(change.get("absolute_per_year"), digits)
    if per_year is not None:
        shown += f"; per year {per_year} {unit}"
        yearly_percent = _signed(change.get("percent_per_year"), 2)
        if yearly_percent is not None:
            shown += f" ({yearly_percent} %)"
    return shown


def _change_rows(change: Dict, rows: List[MeasurementRow], notes: List[str]) -> None:
    """The change since the previous study (its date, the interval, each quantity, the checkpoints), or *not
    computed* with the server's reason as a note."""
    if not change.get("computed"):
        rows.append(MeasurementRow("Change since the previous study", "not computed"))
        reason = change.get("reason") or str(change.get("text") or "").replace("not computed: ", "", 1)
        notes.append(_sentence(f"Change over time not computed: {reason or 'the server gave no reason'}"))
        return
    previous = _mapping(change.get("previous"))
    rows.append(
        MeasurementRow("Previous study", f"{previous.get('study_date', '?')} (image {previous.get('image', '?')})")
    )
    days, years = _number(change.get("interval_days")), _number(change.get("interval_years"))
    interval = f"{change.get('study_date', '?')}"
    if days is not None:
        interval += f", {int(days)} days later" + (f" ({years:.2f} years)" if years is not None else "")
    rows.append(MeasurementRow("This study", interval))
    for quantity, values in _mapping(change.get("changes")).items():
        if isinstance(values, Mapping):
            name = CHANGE_NAMES.get(str(quantity), str(quantity))
            rows.append(MeasurementRow(f"Change of {name}", change_value(str(quantity), values)))
    same = change.get("same_checkpoint")
    if same is True:
        rows.append(MeasurementRow("Checkpoint", "the same for both studies"))
    elif same is False:
        rows.append(MeasurementRow("Checkpoint", "another one measured the previous study", True))
    else:
        rows.append(MeasurementRow("Checkpoint", "not known whether the same for both studies"))
    notes.extend(_sentence(f"Change over time: {note}") for note in change.get("notes") or [] if note)


# --- the view ---------------------------------------------------------------------------------------------------------


def measurement_view(result: Any, task: str = "") -> Optional[MeasurementsView]:
    """The *Measurements* section of an infer result JSON, or None when it holds no ``measurements`` (a classifier,
    an uncertainty answer).

    Args:
        result: the infer JSON (``measurements``; ``change_over_time`` where the task compares studies).
        task: the task's name, where the JSON does not carry ``task``.

    Values the server left out read ``n/a``; nothing is computed here that the server did not measure (an eTIV, a
    percentile, a change over time are shown as the server gives them, or as *not computed*).
    """
    if not isinstance(result, Mapping):
        return None
    measured = result.get("measurements")
    if not isinstance(measured, Mapping) or not measured:
        return None
    measured = dict(measured)
    rows: List[MeasurementRow] = []
    notes: List[str] = []
    kind = "lesions" if isinstance(measured.get("lesions"), Mapping) else "volumes"
    if kind == "lesions":
        _lesion_rows(measured, rows, notes)
    else:
        _volume_rows(measured, rows, notes)
    change = result.get("change_over_time")
    if isinstance(change, Mapping):
        _change_rows(dict(change), rows, notes)
    return MeasurementsView(str(result.get("task") or task), kind, rows, notes, isinstance(change, Mapping))
