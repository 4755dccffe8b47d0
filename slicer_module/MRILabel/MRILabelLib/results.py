"""Server answers turned into what the panel shows: class tables, gate summary, measurement text, and the voxel
uncertainty summary (the slices to correct first)."""

import math
from typing import Dict, Iterable, List, NamedTuple, Optional, cast

UNIT_SYMBOLS = {"mm3": "mm³", "mm2": "mm²"}


class ClassRow(NamedTuple):
    """One row of the classification table."""

    name: str
    probability: float
    predicted: bool


class ClassificationResult(NamedTuple):
    """A classifier's answer (``sequence``, ``dementia_stage``, ``tumor_gate``)."""

    task: str
    label: str
    rows: List[ClassRow]
    threshold: Optional[float]
    tumor_probability: Optional[float]
    fired_slices: List[int]
    raw: Dict

    def summary(self) -> str:
        """One line for the panel, e.g. ``Predicted class: T2`` or the gate's decision with its threshold."""
        if self.threshold is None:
            return f"Predicted class: {self.label}"
        verdict = (
            "tumor" if self.tumor_probability is not None and self.tumor_probability >= self.threshold else "no tumor"
        )
        relation = "≥" if verdict == "tumor" else "<"
        fired = ", ".join(str(s) for s in self.fired_slices) or "none"
        return (
            f"Tumor gate: {verdict} (p(tumor) = {self.tumor_probability:.3f} {relation} threshold "
            f"{self.threshold:.2f}); "
            f"slices at or over the threshold: {fired}"
        )


class Measurements(NamedTuple):
    """Volumes (mm³) or areas (mm²) of a label map."""

    unit: str
    per_label: Dict[str, float]
    total: float
    left: Optional[float]
    right: Optional[float]
    check: Optional[str] = None
    lesions: Optional[str] = None

    def text(self) -> str:
        """Multi-line text: one line per label, the total, left/right when known, the lesions (count and the
        largest one's axial diameters) where the server measured them, and the volume check's warning when the
        server flagged a volume."""
        symbol = UNIT_SYMBOLS.get(self.unit, self.unit)
        lines = [f"{name}: {value:,.1f} {symbol}" for name, value in self.per_label.items()]
        lines.append(f"Total: {self.total:,.1f} {symbol}")
        if self.left is not None and self.right is not None:
            lines.append(f"Left: {self.left:,.1f} {symbol}; Right: {self.right:,.1f} {symbol}")
        if self.lesions:
            lines.append(self.lesions)
        if self.check:
            lines.append(self.check)
        return "\n".join(lines)


class SegmentationResult(NamedTuple):
    """A segmentation's answer (``tumor_seg``, ``hippocampus``, ``tumor_pipeline``)."""

    task: str
    mask_path: Optional[str]
    label_names: Dict[str, int]
    measurements: Optional[Measurements]
    raw: Dict

    def summary(self) -> str:
        """One line for the panel (the pipeline adds its gate decision, and the tumor type where the gate fired)."""
        if "tumor" in self.raw and "threshold" in self.raw:
            fired = ", ".join(str(s) for s in self.raw.get("fired_slices") or []) or "none"
            line = (
                f"Tumor pipeline: gate {'fired' if self.raw['tumor'] else 'did not fire'} "
                f"(p(tumor) = {float(self.raw.get('probability', 0)):.3f}, threshold "
                f"{float(self.raw['threshold']):.2f}); "
                f"segmented slices: {fired}"
            )
            kind = self.raw.get("tumor_type")
            if isinstance(kind, dict) and kind.get("label") is not None:
                p = (kind.get("probabilities") or {}).get(kind["label"])
                line += f"; tumor type: {kind['label']}" + (f" (p = {float(p):.3f})" if p is not None else "")
            return line
        return f"{self.task}: mask with labels {', '.join(self.label_names) or 'none'}"


def _probability(value, name: str) -> float:
    try:
        p = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"probability of class {name!r} must be a number, got {value!r}") from None
    if math.isnan(p) or not 0.0 <= p <= 1.0:
        raise ValueError(f"probability of class {name!r} must be in [0, 1], got {value!r}")
    return p


def parse_classification(result: Dict, task: str = "") -> ClassificationResult:
    """Turn a classifier's JSON into table rows (in the server's class order) plus the gate fields.

    Args:
        result: the infer JSON (``label``, ``probabilities``; for the gate ``probability``, ``threshold``...).
        task: task name, used when the JSON does not carry ``task``.

    Raises:
        ValueError: ``result`` has no ``probabilities`` or they are not a distribution.
    """
    probabilities = result.get("probabilities") if isinstance(result, dict) else None
    if not isinstance(probabilities, dict) or not probabilities:
        raise ValueError(f"result must hold a non-empty 'probabilities' mapping, got {result!r:.200}")
    values = {str(name): _probability(p, name) for name, p in probabilities.items()}
    label = str(result.get("label") or max(values, key=values.__getitem__))
    rows = [ClassRow(name, p, name == label) for name, p in values.items()]
    total = sum(values.values())
    if abs(total - 1.0) > 1e-3:
        raise ValueError(f"probabilities must sum to 1, got {total:.4f} from {probabilities}")
    threshold = result.get("threshold")
    return ClassificationResult(
        task=str(result.get("task") or task),
        label=label,
        rows=rows,
        threshold=None if threshold is None else float(threshold),
        tumor_probability=None if result.get("probability") is None else float(result["probability"]),
        fired_slices=[int(s) for s in result.get("fired_slices") or []],
        raw=result,
    )


def parse_measurements(measurements: Optional[Dict]) -> Optional[Measurements]:
    """Read the server's ``measurements`` (``mm3`` or ``mm2`` per label, ``total_*``, ``left_mm3``, ``right_mm3``,
    ``volume_check``: a flagged volume becomes :attr:`Measurements.check`).

    Returns:
        :class:`Measurements`, or None when ``measurements`` is empty.

    Raises:
        ValueError: neither ``mm3`` nor ``mm2`` is present, or a value is not a number.
    """
    if not measurements:
        return None
    unit = next((u for u in ("mm3", "mm2") if isinstance(measurements.get(u), dict)), None)
    if unit is None:
        raise ValueError(f"measurements must hold an 'mm3' or 'mm2' mapping, got {measurements!r:.200}")
    per_label = {str(k): float(v) for k, v in measurements[unit].items()}
    total = measurements.get(f"total_{unit}")
    left, right = measurements.get("left_mm3"), measurements.get("right_mm3")
    volume_check = measurements.get("volume_check") or {}
    flagged = isinstance(volume_check, dict) and volume_check.get("status") not in (None, "ok", "not checked")
    return Measurements(
        unit=unit,
        per_label=per_label,
        total=float(sum(per_label.values()) if total is None else total),
        left=None if left is None else float(left),
        right=None if right is None else float(right),
        check=f"{str(volume_check['status']).upper()}: {volume_check.get('reason', '')}" if flagged else None,
        lesions=_lesions_line(measurements.get("lesions")),
    )


def _lesions_line(lesions) -> Optional[str]:
    """One line from the server's ``measurements["lesions"]``: the number of lesions and the largest one's
    RANO-style axial diameters; None where there are none or the value is not such a mapping."""
    if not isinstance(lesions, dict) or not lesions.get("lesions"):
        return None
    largest = lesions["lesions"][0]
    try:
        d1, d2 = float(largest["largest_diameter_mm"]), float(largest["perpendicular_diameter_mm"])
        slice_index = int(largest["slice"])
    except (KeyError, TypeError, ValueError):
        return None
    count = int(lesions.get("components") or len(lesions["lesions"]))
    return f"Lesions: {count}; largest {d1:.1f} × {d2:.1f} mm on slice {slice_index}" + (
        "" if largest.get("measurable") else " (not measurable: a diameter under 10 mm)"
    )


def parse_segmentation(result: Dict, mask_path: Optional[str], task: str = "") -> SegmentationResult:
    """Bundle a segmentation answer: mask file, label names (name -> value) and measurements."""
    names = result.get("label_names") or {}
    if not isinstance(names, dict):
        raise ValueError(f"label_names must be a mapping of name -> value, got {names!r}")
    return SegmentationResult(
        task=str(result.get("task") or task),
        mask_path=mask_path,
        label_names={str(k): int(v) for k, v in names.items()},
        measurements=parse_measurements(result.get("measurements")),
        raw=result,
    )


def label_info_for(segment_names: Iterable[str], task_labels: Dict[str, int]) -> List[Dict]:
    """The ``label_info`` of a corrected segmentation: each segment's name with the task's label value.

    Args:
        segment_names: names of the segments being submitted.
        task_labels: the task's labels (name -> value) from ``/info``.

    Raises:
        ValueError: a segment name is not one of the task's labels.
    """
    names = list(segment_names)
    unknown = [n for n in names if n not in task_labels]
    if unknown:
        raise ValueError(
            f"segment_names {unknown} are not labels of this task; rename them to one of {list(task_labels)}"
        )
    return [{"name": n, "idx": int(task_labels[n])} for n in sorted(set(names), key=lambda n: task_labels[n])]


# --- voxel uncertainty ------------------------------------------------------------------------------------------------

#: How a summary that cannot be read begins (the map itself is still shown).
UNREADABLE_SUMMARY = "The server's uncertainty summary cannot be read"


class UncertainSlice(NamedTuple):
    """One slice of the uncertainty summary: its voxel index along the summary's axis, how many of its voxels are
    uncertain (normalised entropy at or over ``uncertain_from``) and its mean normalised entropy."""

    slice: int
    uncertain_voxels: int
    mean: float

    def text(self) -> str:
        """The list entry, e.g. ``slice 41: 1,203 uncertain voxels (mean 0.31)``."""
        return f"slice {self.slice}: {_voxels(self.uncertain_voxels)} (mean {self.mean:.2f})"


class UncertaintySummary(NamedTuple):
    """The JSON ``uncertainty`` of an infer answered with ``{"uncertainty": true}`` (``lib/uncertainty.py`` of the
    server): the whole map's mean and max, the fraction of uncertain voxels, and the most uncertain slices along voxel
    ``axis`` (0 = I, 1 = J, 2 = K of the image as the server holds it), most uncertain first (the server's order)."""

    task: str
    measure: str
    mean: Optional[float]
    max: Optional[float]
    uncertain_fraction: Optional[float]
    uncertain_from: Optional[float]
    axis: int
    slices: List[UncertainSlice]
    raw: Dict

    def sentence(self) -> str:
        """What to correct first, e.g. ``Correct first: slice 41 (1,203 uncertain voxels), slice 40 (980 uncertain
        voxels).``; the slices the server listed without uncertain voxels are left out of it."""
        threshold = "" if self.uncertain_from is None else f" (normalised entropy ≥ {self.uncertain_from:g})"
        if not self.slices:
            return "The server listed no slices to correct first."
        uncertain = [s for s in self.slices if s.uncertain_voxels > 0]
        if not uncertain:
            listed = ", ".join(f"slice {s.slice}" for s in self.slices)
            return f"No voxel is uncertain{threshold}; the highest mean uncertainty is on {listed}."
        listed = ", ".join(f"slice {s.slice} ({_voxels(s.uncertain_voxels)})" for s in uncertain)
        return f"Correct first: {listed}."

    def statistics(self) -> str:
        """One line on the whole map, e.g. ``Mean uncertainty 0.031, max 0.970; 1.2% of voxels uncertain (≥ 0.5).``
        (what the server left out is not mentioned)."""
        parts = []
        if self.mean is not None:
            parts.append(f"mean uncertainty {self.mean:.3f}")
        if self.max is not None:
            parts.append(f"max {self.max:.3f}")
        line = ", ".join(parts)
        if self.uncertain_fraction is not None:
            threshold = "" if self.uncertain_from is None else f" (≥ {self.uncertain_from:g})"
            share = f"{100 * self.uncertain_fraction:.1f}% of voxels uncertain{threshold}"
            line = f"{line}; {share}" if line else share
        return (line[:1].upper() + line[1:] + ".") if line else ""

    def rows(self) -> List[str]:
        """The entries of the panel's slice list, in the server's order."""
        return [s.text() for s in self.slices]


class UncertaintyMap(NamedTuple):
    """An uncertainty answer: the map file, its summary, and the sentence saying why there is no summary."""

    task: str
    path: str
    summary: Optional[UncertaintySummary]
    problem: Optional[str] = None

    def message(self) -> str:
        """The panel's text: the slices to correct first and the statistics line, or why they are missing."""
        if self.summary is None:
            return f"{self.problem or UNREADABLE_SUMMARY + '.'} The map is shown without the slice list."
        return "\n".join(line for line in (self.summary.sentence(), self.summary.statistics()) if line)


def _voxels(count: int) -> str:
    return f"{count:,} uncertain voxel" + ("" if count == 1 else "s")


def _unreadable(reason: str) -> ValueError:
    return ValueError(f"{UNREADABLE_SUMMARY}: {reason}")


def _whole(value, what: str) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value != int(value)
        or value < 0
    ):
        raise _unreadable(f"{what} must be a whole number ≥ 0, got {value!r:.60}")
    return int(value)


def _fraction(value, what: str, required: bool = False) -> Optional[float]:
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise _unreadable(f"{what} must be a number from 0 to 1, got {value!r:.60}")
    return float(value)


def parse_uncertainty(summary, task: str = "") -> UncertaintySummary:
    """Read the server's ``uncertainty`` summary (``{"measure", "mean", "max", "uncertain_fraction",
    "uncertain_from", "axis", "slices": [{"slice", "uncertain_voxels", "mean"}, ...]}``), keeping its slice order.

    ``axis`` and ``slices`` are needed (they say where each listed slice is); the statistics may be missing.

    Raises:
        ValueError: one sentence beginning with :data:`UNREADABLE_SUMMARY` that names what is wrong.
    """
    if not isinstance(summary, dict):
        raise _unreadable(f"expected a mapping, got {type(summary).__name__}")
    axis = summary.get("axis")
    if isinstance(axis, bool) or axis not in (0, 1, 2):
        raise _unreadable(f"axis must be 0, 1 or 2, got {axis!r:.60}")
    listed = summary.get("slices")
    if not isinstance(listed, list):
        raise _unreadable(f"slices must be a list, got {type(listed).__name__}")
    slices = []
    for position, entry in enumerate(listed):
        if not isinstance(entry, dict):
            raise _unreadable(f"slices[{position}] must be a mapping, got {type(entry).__name__}")
        slices.append(
            UncertainSlice(
                _whole(entry.get("slice"), f"slices[{position}].slice"),
                _whole(entry.get("uncertain_voxels"), f"slices[{position}].uncertain_voxels"),
                cast(float, _fraction(entry.get("mean"), f"slices[{position}].mean", required=True)),
            )
        )
    measure = summary.get("measure")
    return UncertaintySummary(
        task=task,
        measure=measure if isinstance(measure, str) else "",
        mean=_fraction(summary.get("mean"), "mean"),
        max=_fraction(summary.get("max"), "max"),
        uncertain_fraction=_fraction(summary.get("uncertain_fraction"), "uncertain_fraction"),
        uncertain_from=_fraction(summary.get("uncertain_from"), "uncertain_from"),
        axis=int(axis),
        slices=slices,
        raw=summary,
    )


def read_uncertainty(result: Dict, path: str, task: str = "") -> UncertaintyMap:
    """An :class:`UncertaintyMap` from an infer answer's JSON and its map file: the summary parsed where it can be,
    else None with the sentence saying why (the map is still worth showing)."""
    try:
        summary: Optional[UncertaintySummary] = parse_uncertainty(result.get("uncertainty"), task)
    except ValueError as error:
        return UncertaintyMap(task, path, None, f"{error}.")
    return UncertaintyMap(task, path, summary)
