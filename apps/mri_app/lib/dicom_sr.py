"""A final label's measurements as DICOM SR (issue 20, item 6): a TID 1500 measurement report (highdicom's
``Comprehensive3DSR`` holding a ``MeasurementReport``) that references the segments of the label's DICOM-SEG, stored
in the PACS next to it (:mod:`lib.dicomweb`).

The numbers are a segmentation result's ``measurements`` (what the infer answers in its JSON); :func:`carried` picks
the part the report holds, in the same shape, and :func:`read_report` reads a stored report back into that shape, so
``read_report(sr)["measurements"] == carried(result["measurements"], labels, lesions)``. What is measured comes from
the task config's declarations: its ``task_labels`` and the label it declares as ``lesions``; nothing here branches
on a task's name.

The report holds, with UCUM units:

- **One group per segment** (TID 1411, a task label with voxels; it references its segment number in the SEG and the
  source series): the volume (SCT Volume, ``mm3``); for the ``lesions`` label the volume in ``mL`` instead, the
  number of lesions (SCT, ``{lesions}``) and the sum of the products of the measurable lesions' diameters (private
  code, ``mm2``). Where the result splits volumes by side (``measurements["left"]``, ``["right"]``: a whole-head
  hippocampus), the segment's volume on each side (finding site SCT Brain with laterality Left or Right).
- **One group per lesion** (TID 1411, finding type SCT Lesion, tracking identifier ``<label> lesion <k>``, largest
  first, as ``measurements["lesions"]["lesions"]``), referencing the ``lesions`` label's segment: volume (``mL``),
  largest axial diameter (SCT Long axis, ``mm``), the diameter perpendicular to it (SCT Perpendicular axis, ``mm``)
  and their product (RANO's bidimensional product; private code, ``mm2``).
- **One image-level group** (TID 1501) where the result gives sides or a head size: the total volume and each side's
  (``mm3``), the estimated total intracranial volume (SCT Volume of the cranial cavity, method eTIV, ``mL``) and the
  volumes per mille of it (DCM Volume Ratio, ``[ppth]``; laterality as above, none for both sides).

Not held: the slices a lesion spans and the slice its diameters were measured on (voxel indices of the converted
volume), whether it is measurable (both diameters at least 10 mm, from the diameters), the volume check, and the
left/right split at the field of view's centre that every 3D result carries.

The report is a machine measurement: complete, unverified, preliminary, "research use only" in its series
description. It carries the patient and study of the SEG it references (DICOM requires them); nothing of them is
logged.
"""

import math
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

VERSION = "0.1.0"
"""The app's version, recorded as the measuring algorithm's."""

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
"""SOP class UID of a Comprehensive 3D SR."""

SERIES_NUMBER = 301
"""Series number of a report (its DICOM-SEG is series 300, MONAI Label's)."""

SIDES = ("left", "right")
LESION_FIELDS = ("volume_ml", "largest_diameter_mm", "perpendicular_diameter_mm", "product_mm2")
"""The numbers of each lesion the report holds (the names of ``measurements["lesions"]["lesions"][i]``)."""
IMAGE_GROUP = "all segments"
"""Tracking identifier of the image-level group."""

VOLUME = Code("118565006", "SCT", "Volume")
LONG_AXIS = Code("103339001", "SCT", "Long axis")
PERPENDICULAR_AXIS = Code("131189007", "SCT", "Perpendicular Axis")
NUMBER_OF_LESIONS = Code("246206008", "SCT", "Number of lesions")
VOLUME_RATIO = Code("113288", "DCM", "Volume Ratio")
LESION = Code("52988006", "SCT", "Lesion")
BRAIN = Code("12738006", "SCT", "Brain")
CRANIAL_CAVITY = Code("1101003", "SCT", "Cranial Cavity")
BRAIN_MRI = Code("24590-2", "LN", "Brain MRI")
DEVICE = Code("121007", "DCM", "Device")
"""The standard concepts the report uses (as in pydicom's ``codes``: SNOMED CT, DICOM, LOINC)."""

PRIVATE_SCHEME = "99MRILBL"
"""Coding scheme designator of the concepts no standard code names (private: ``99`` prefix)."""
PRODUCT = Code("PRODUCT", PRIVATE_SCHEME, "Product of perpendicular diameters")
SUM_OF_PRODUCTS = Code("SPD", PRIVATE_SCHEME, "Sum of products of diameters of measurable lesions")
ETIV_METHOD = Code("ETIV", PRIVATE_SCHEME, "Estimated total intracranial volume, atlas registration")

UNITS = {
    "mm3": Code("mm3", "UCUM", "cubic millimeter"),
    "mL": Code("mL", "UCUM", "milliliter"),
    "mm": Code("mm", "UCUM", "millimeter"),
    "mm2": Code("mm2", "UCUM", "square millimeter"),
    "{lesions}": Code("{lesions}", "UCUM", "lesions"),
    "[ppth]": Code("[ppth]", "UCUM", "parts per thousand"),
}
"""UCUM code of each unit the report uses."""
LATERALITY = {"left": Code("7771000", "SCT", "Left"), "right": Code("24028007", "SCT", "Right")}

_LESION_ID = re.compile(r"^(?P<label>.+) lesion (?P<rank>[0-9]+)$")


# --- the numbers --------------------------------------------------------------------------------------------------


def _number(value: Any, where: str) -> float:
    """``value`` as a finite float; ValueError naming ``where`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _check_labels(labels: Mapping[str, int], lesions: Optional[str]) -> None:
    if not isinstance(labels, Mapping) or not labels:
        raise ValueError(f"labels must map the task's label names to their values, got {labels!r}")
    for name, value in labels.items():
        if not isinstance(name, str) or isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"labels must map names to label values >= 1, got {name!r}: {value!r}")
    if lesions is not None and lesions not in labels:
        raise ValueError(f"lesions must name one of the labels {list(labels)}, got {lesions!r}")


def carried(measurements: Mapping[str, Any], labels: Mapping[str, int], lesions: Optional[str] = None) -> Dict:
    """The part of a segmentation result's ``measurements`` a report holds, in the result's own shape.

    Args:
        measurements: ``result["measurements"]`` of the task's infer (or of its final label, measured alike).
        labels: the task's label names and values (``task_labels``); a label is reported when its volume is > 0.
        lesions: the label the task config declares as ``lesions`` (measured per connected component), or None.

    Returns:
        ``{"mm3": {label: mm³}}`` for the reported labels but the ``lesions`` one; where the result splits by side
        also ``"left"``/``"right": {"<label>_mm3", "total_mm3"}`` and ``"total_mm3"``; with a head size
        ``"head_size": {"etiv_ml", "per_mille_of_etiv": {"total"|"left"|"right": ‰}}``; for a reported ``lesions``
        label ``"lesions": {"volume_ml", "components", "sum_of_products_mm2", "lesions": [{LESION_FIELDS}]}``.

    Raises:
        ValueError: naming the argument or entry that is missing or not a finite number.
    """
    _check_labels(labels, lesions)
    if not isinstance(measurements, Mapping):
        raise ValueError(f"measurements must be a result's measurements (a dict), got {type(measurements).__name__}")
    volumes = measurements.get("mm3")
    if not isinstance(volumes, Mapping):
        raise ValueError(f"measurements['mm3'] must map label names to volumes in mm³, got {volumes!r}")
    present = [n for n in labels if _number(volumes.get(n, 0.0), f"measurements['mm3'][{n!r}]") > 0]
    numbers: Dict[str, Any] = {"mm3": {n: float(volumes[n]) for n in present if n != lesions}}
    sides = [side for side in SIDES if isinstance(measurements.get(side), Mapping)]
    for side in sides:
        row = measurements[side]
        numbers[side] = {
            f"{n}_mm3": _number(row.get(f"{n}_mm3"), f"measurements[{side!r}]['{n}_mm3']") for n in present
        }
        numbers[side]["total_mm3"] = _number(row.get("total_mm3"), f"measurements[{side!r}]['total_mm3']")
    if sides:
        numbers["total_mm3"] = _number(measurements.get("total_mm3"), "measurements['total_mm3']")
    head = measurements.get("head_size")
    if isinstance(head, Mapping) and head.get("etiv_ml") is not None:
        fractions = head.get("per_mille_of_etiv") or {}
        numbers["head_size"] = {
            "etiv_ml": _number(head["etiv_ml"], "measurements['head_size']['etiv_ml']"),
            "per_mille_of_etiv": {
                k: _number(fractions[k], f"measurements['head_size']['per_mille_of_etiv'][{k!r}]")
                for k in ("total",) + SIDES
                if fractions.get(k) is not None
            },
        }
    if lesions in present:
        found = measurements.get("lesions")
        if not isinstance(found, Mapping) or not isinstance(found.get("lesions"), list):
            raise ValueError(f"measurements['lesions'] must hold the lesions of label {lesions!r}, got {found!r}")
        components = found.get("components")
        if isinstance(components, bool) or not isinstance(components, int) or components < 0:
            raise ValueError(f"measurements['lesions']['components'] must be a count, got {components!r}")
        numbers["lesions"] = {
            "volume_ml": _number(found.get("volume_ml"), "measurements['lesions']['volume_ml']"),
            "components": components,
            "sum_of_products_mm2": _number(
                found.get("sum_of_products_mm2"), "measurements['lesions']['sum_of_products_mm2']"
            ),
            "lesions": [
                {k: _number(item.get(k), f"measurements['lesions']['lesions'][{i}][{k!r}]") for k in LESION_FIELDS}
                for i, item in enumerate(found["lesions"])
            ],
        }
    return numbers


# --- writing ------------------------------------------------------------------------------------------------------


def _measure(
    name: Code, value: float, unit: str, site: Optional[Code] = None, side: Optional[str] = None, method=None
) -> hd.sr.Measurement:
    sites = [hd.sr.FindingSite(site, laterality=LATERALITY[side] if side else None)] if site else None
    return hd.sr.Measurement(name=name, value=value, unit=UNITS[unit], finding_sites=sites, method=method)


def _segment_numbers(seg: Dataset) -> Dict[int, str]:
    """Segment number -> label of a DICOM-SEG; ValueError when ``seg`` is none."""
    if not isinstance(seg, Dataset) or getattr(seg, "Modality", None) != "SEG" or "SegmentSequence" not in seg:
        raise ValueError(f"seg must be a DICOM-SEG dataset, got Modality {getattr(seg, 'Modality', None)!r}")
    return {int(s.SegmentNumber): str(getattr(s, "SegmentLabel", "")) for s in seg.SegmentSequence}


def measurement_report(
    seg: Dataset,
    measurements: Mapping[str, Any],
    labels: Mapping[str, int],
    task: str,
    lesions: Optional[str] = None,
) -> hd.sr.Comprehensive3DSR:
    """A TID 1500 measurement report of a result's measurements, referencing the segments of its DICOM-SEG.

    Args:
        seg: the DICOM-SEG of the label measured; a label value is its segment number (as MONAI Label writes it).
        measurements: the task's ``measurements`` of that label (see :func:`carried` for the part held).
        labels: the task's label names and values.
        task: the task's name (observer device, series description).
        lesions: the label the task config declares as ``lesions``, or None.

    Returns:
        A Comprehensive 3D SR in the SEG's study (series :data:`SERIES_NUMBER`, new UIDs), to store beside it.

    Raises:
        ValueError: ``seg`` is no DICOM-SEG or has no source series; a reported label has no segment in it; the
            measurements lack what :func:`carried` needs; nothing is reported (no task label has voxels).
    """
    segments = _segment_numbers(seg)
    if not isinstance(task, str) or not task:
        raise ValueError(f"task must be the task's name, got {task!r}")
    numbers = carried(measurements, labels, lesions)
    reported = list(numbers["mm3"]) + ([lesions] if "lesions" in numbers else [])
    if not reported:
        raise ValueError(f"measurements give no label of {list(labels)} a volume: nothing to report")
    try:
        source_series = str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
    except (AttributeError, IndexError):
        raise ValueError("seg must reference its source series (ReferencedSeriesSequence)") from None
    algorithm = hd.sr.AlgorithmIdentification(name="mri-label", version=VERSION, parameters=[f"task={task}"])
    sides = [side for side in SIDES if side in numbers]
    groups: List[Any] = []
    for name in (n for n in labels if n in reported):
        if labels[name] not in segments:
            raise ValueError(
                f"label {name!r} (value {labels[name]}) has a volume but seg has no segment {labels[name]}"
            )
        segment = hd.sr.ReferencedSegment(
            seg.SOPClassUID,
            seg.SOPInstanceUID,
            labels[name],
            source_series=hd.sr.SourceSeriesForSegmentation(source_series),
        )
        if name == lesions:
            found = numbers["lesions"]
            values = [
                _measure(VOLUME, found["volume_ml"], "mL"),
                _measure(NUMBER_OF_LESIONS, found["components"], "{lesions}"),
                _measure(SUM_OF_PRODUCTS, found["sum_of_products_mm2"], "mm2"),
            ]
        else:
            values = [_measure(VOLUME, numbers["mm3"][name], "mm3")]
        values += [_measure(VOLUME, numbers[s][f"{name}_mm3"], "mm3", BRAIN, s) for s in sides]
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=name),
                referenced_segment=segment,
                algorithm_id=algorithm,
                measurements=values,
            )
        )
        for rank, lesion in enumerate(numbers["lesions"]["lesions"] if name == lesions else [], start=1):
            groups.append(
                hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{name} lesion {rank}"),
                    referenced_segment=segment,
                    finding_type=LESION,
                    algorithm_id=algorithm,
                    measurements=[
                        _measure(VOLUME, lesion["volume_ml"], "mL"),
                        _measure(LONG_AXIS, lesion["largest_diameter_mm"], "mm"),
                        _measure(PERPENDICULAR_AXIS, lesion["perpendicular_diameter_mm"], "mm"),
                        _measure(PRODUCT, lesion["product_mm2"], "mm2"),
                    ],
                )
            )
    whole: List[hd.sr.Measurement] = []
    if sides:
        whole.append(_measure(VOLUME, numbers["total_mm3"], "mm3"))
        whole += [_measure(VOLUME, numbers[s]["total_mm3"], "mm3", BRAIN, s) for s in sides]
    if "head_size" in numbers:
        head = numbers["head_size"]
        whole.append(_measure(VOLUME, head["etiv_ml"], "mL", CRANIAL_CAVITY, method=ETIV_METHOD))
        for key, value in head["per_mille_of_etiv"].items():
            side = key if key in SIDES else None
            whole.append(_measure(VOLUME_RATIO, value, "[ppth]", BRAIN, side, ETIV_METHOD))
    if whole:
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=IMAGE_GROUP),
                algorithm_id=algorithm,
                measurements=whole,
            )
        )
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        # one observer UID per task, the same in every report
        uid=generate_uid(entropy_srcs=["mri-label", task]),
        name="mri-label",
        manufacturer_name="mri-label",
        model_name=task,
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=hd.sr.ObserverContext(
                observer_type=hd.sr.CodedConcept(DEVICE.value, DEVICE.scheme_designator, DEVICE.meaning),
                observer_identifying_attributes=device,
            )
        ),
        procedure_reported=BRAIN_MRI,
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[seg],
        content=report,
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="mri-label",
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=f"{task} measurements, research use only"[:64],
        software_versions=VERSION,
        coding_schemes=[hd.coding_schemes.CodingSchemeIdentificationItem(PRIVATE_SCHEME, name="mri-label")],
    )


# --- reading ------------------------------------------------------------------------------------------------------


def _unit(measurement, allowed: Sequence[str], where: str) -> str:
    unit = str(measurement.unit.value)
    if measurement.unit.scheme_designator != "UCUM" or unit not in allowed:
        raise ValueError(f"{where}: unit must be UCUM {' or '.join(allowed)}, got {measurement.unit!r}")
    return unit


def _side(measurement) -> Optional[str]:
    """``left``/``right`` from the measurement's finding site laterality; None without one."""
    for site in measurement.finding_sites or []:
        for side, code in LATERALITY.items():
            if _is(site.laterality, code):
                return side
    return None


def _is(concept, code: Code) -> bool:
    return concept is not None and concept.value == code.value and concept.scheme_designator == code.scheme_designator


def _at(measurement, code: Code) -> bool:
    """Whether one of the measurement's finding sites is the anatomic location ``code``."""
    return any(_is(site.value, code) for site in measurement.finding_sites or [])


def read_report(dataset: Dataset) -> Dict[str, Any]:
    """Read back a report :func:`measurement_report` wrote (e.g. retrieved from the PACS with WADO-RS).

    Returns:
        ``{"measurements": ..., "segments": {label: segment number}, "seg": SEG SOP instance UID,
        "source_series": series UID}``; ``measurements`` in :func:`carried`'s shape.

    Raises:
        ValueError: ``dataset`` is no Comprehensive 3D SR measurement report, or a measurement has a unit other
            than the one written.
    """
    sop_class = getattr(dataset, "SOPClassUID", None) if isinstance(dataset, Dataset) else None
    if sop_class != COMPREHENSIVE_3D_SR:
        raise ValueError(f"dataset must be a Comprehensive 3D SR (SOP class {COMPREHENSIVE_3D_SR}), got {sop_class}")
    content = hd.sr.Comprehensive3DSR.from_dataset(dataset).content
    if not isinstance(content, hd.sr.MeasurementReport):
        raise ValueError("dataset must hold a TID 1500 measurement report")
    numbers: Dict[str, Any] = {"mm3": {}}
    found: Dict[str, Any] = {"segments": {}, "seg": None, "source_series": None}
    lesion_rows: Dict[int, Dict[str, float]] = {}
    for group in content.get_volumetric_roi_measurement_groups():
        name = str(group.tracking_identifier)
        segment = group.referenced_segment
        if segment is not None:
            found["seg"] = str(segment.referenced_sop_instance_uid)
            series = segment.source_series_for_segmentation
            found["source_series"] = None if series is None else str(series.value)
        lesion = _LESION_ID.fullmatch(name)
        if group.finding_type is not None and _is(group.finding_type, LESION) and lesion:
            row: Dict[str, float] = {}
            for m in group.get_measurements():
                if _is(m.name, VOLUME):
                    _unit(m, ["mL"], f"{name}: volume")
                    row["volume_ml"] = float(m.value)
                elif _is(m.name, LONG_AXIS):
                    _unit(m, ["mm"], f"{name}: long axis")
                    row["largest_diameter_mm"] = float(m.value)
                elif _is(m.name, PERPENDICULAR_AXIS):
                    _unit(m, ["mm"], f"{name}: perpendicular axis")
                    row["perpendicular_diameter_mm"] = float(m.value)
                elif _is(m.name, PRODUCT):
                    _unit(m, ["mm2"], f"{name}: product")
                    row["product_mm2"] = float(m.value)
            lesion_rows[int(lesion["rank"])] = row
            continue
        if segment is not None:
            found["segments"][name] = int((segment.referenced_segment_numbers or [0])[0])
        for m in group.get_measurements():
            side = _side(m)
            if _is(m.name, VOLUME) and side:
                _unit(m, ["mm3"], f"{name}: {side} volume")
                numbers.setdefault(side, {})[f"{name}_mm3"] = float(m.value)
            elif _is(m.name, VOLUME):
                if _unit(m, ["mm3", "mL"], f"{name}: volume") == "mm3":
                    numbers["mm3"][name] = float(m.value)
                else:
                    numbers.setdefault("lesions", {})["volume_ml"] = float(m.value)
            elif _is(m.name, NUMBER_OF_LESIONS):
                _unit(m, ["{lesions}"], f"{name}: number of lesions")
                numbers.setdefault("lesions", {})["components"] = int(m.value)
            elif _is(m.name, SUM_OF_PRODUCTS):
                _unit(m, ["mm2"], f"{name}: sum of products")
                numbers.setdefault("lesions", {})["sum_of_products_mm2"] = float(m.value)
    if "lesions" in numbers:
        numbers["lesions"]["lesions"] = [lesion_rows[k] for k in sorted(lesion_rows)]
    for image_group in content.get_image_measurement_groups():
        for m in image_group.get_measurements():
            side = _side(m)
            if _is(m.name, VOLUME) and _at(m, CRANIAL_CAVITY):
                _unit(m, ["mL"], "eTIV")
                numbers.setdefault("head_size", {"per_mille_of_etiv": {}})["etiv_ml"] = float(m.value)
            elif _is(m.name, VOLUME):
                _unit(m, ["mm3"], f"{side or 'total'} volume")
                if side:
                    numbers.setdefault(side, {})["total_mm3"] = float(m.value)
                else:
                    numbers["total_mm3"] = float(m.value)
            elif _is(m.name, VOLUME_RATIO):
                _unit(m, ["[ppth]"], f"{side or 'total'} per mille of eTIV")
                head = numbers.setdefault("head_size", {"per_mille_of_etiv": {}})
                head["per_mille_of_etiv"][side or "total"] = float(m.value)
    return dict(found, measurements=numbers)
