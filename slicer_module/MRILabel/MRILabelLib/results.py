"""Server answers turned into what the panel shows: class tables, gate summary and measurement text."""

import math
from typing import Dict, Iterable, List, NamedTuple, Optional

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
