"""The one-page report on one measured image (issue 20, item 5), drawn from arrays and dicts: what both
``mri-label report`` (:mod:`mri_label.patient_report`) and the server's ``output=report`` (:mod:`lib.report`) write.

The page holds the key slice with the mask over the grey image and a scale bar, the task's numbers (``volumes``:
volumes per label and side, the volume check, the head size; ``lesions``: volume, lesions, the largest lesion's
diameters and the slices it spans), the change over time (:mod:`mri_label.core.change`), what is not computed yet
(normative percentiles) and the model's card (checkpoint, held-out metrics, training data). Which numbers a task
gets is its config's ``measures`` declaration (:data:`mri_label.core.change.MEASURES`), passed in by the caller.

:func:`render` writes three files into a folder: ``report.pdf`` (one A4 page), ``report.png`` (the same page) and
``report.json`` (the same numbers, and the page's text lines as printed).

The page is drawn with matplotlib's object API only (``matplotlib.figure.Figure``; no pyplot state, no GUI
backend): :func:`key_slice`, :func:`build_report` and :func:`render` need neither 3D Slicer nor a server nor the
app. This module is in ``mri_label.core``: it imports nothing of the app or the CLI.
"""

from __future__ import annotations

import hashlib
import math
import os
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from mri_label.core.atomic import atomic_write_json
from mri_label.core.change import MEASURES, change_lines, not_computed

RESEARCH_USE = "Research use only: not for clinical decisions"
PERCENTILES_NOT_COMPUTED = "not computed (no normative table shipped yet)"
NO_EARLIER_STUDY = "no earlier study linked"
SEXES = ("F", "M")
AGE_RANGE = (0.0, 120.0)
"""Ages (years) a report accepts."""
A4_INCHES = (8.27, 11.69)
"""A4 portrait (210 x 297 mm), in inches."""
PNG_DPI = 150
FILES = ("report.pdf", "report.png", "report.json")
LABEL_COLOURS = ("#ff3b30", "#00c7ff", "#ffcc00", "#34c759", "#af52de", "#ff9500")
"""Overlay colour of label value 1, 2, ... (cycled)."""
VERSION = "0.1.0"


# --- arguments ----------------------------------------------------------------------------------------------------


def check_subject(age: Optional[float] = None, sex: Optional[str] = None) -> Optional[str]:
    """Check the subject's age and sex as a report takes them; return ``sex`` upper-cased (None when not given).

    Args:
        age: years, within :data:`AGE_RANGE`, or None.
        sex: ``F`` or ``M`` (any case), or None.

    Raises:
        ValueError: naming the parameter (``age`` or ``sex``) that is wrong.
    """
    if age is not None:
        if isinstance(age, bool) or not isinstance(age, (int, float)) or not math.isfinite(float(age)):
            raise ValueError(f"age must be a number of years, got {age!r}")
        if not AGE_RANGE[0] <= float(age) <= AGE_RANGE[1]:
            raise ValueError(f"age must lie between {AGE_RANGE[0]:.0f} and {AGE_RANGE[1]:.0f} years, got {age:g}")
    if sex is None:
        return None
    if not isinstance(sex, str) or sex.strip().upper() not in SEXES:
        raise ValueError(f"sex must be F or M, got {sex!r}")
    return sex.strip().upper()


def check_measures(measures: Any) -> str:
    """``measures`` if it is one of :data:`~mri_label.core.change.MEASURES`, else ValueError naming it."""
    if measures not in MEASURES:
        raise ValueError(f"measures must be one of {', '.join(MEASURES)}, got {measures!r}")
    return str(measures)


def _check_grids(image: np.ndarray, mask: np.ndarray, spacing: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """``(image, mask)`` squeezed to the same 2D or 3D shape; ValueError naming the parameter otherwise."""
    image, mask = np.asarray(image), np.asarray(mask)
    image = np.squeeze(image)
    mask = np.squeeze(mask)
    if image.ndim == mask.ndim + 1 and image.shape[:-1] == mask.shape and image.shape[-1] in (3, 4):
        image = image[..., :3].mean(axis=-1)  # an RGB picture: its luminance
    if mask.ndim not in (2, 3):
        raise ValueError(f"mask must be a 2D or 3D label map, got shape {mask.shape}")
    if image.shape != mask.shape:
        raise ValueError(f"image must have the mask's size {mask.shape}, got {image.shape}")
    if len(spacing) != mask.ndim or not all(math.isfinite(float(s)) and float(s) > 0 for s in spacing):
        raise ValueError(f"spacing must give {mask.ndim} positive voxel sizes (mm), got {list(spacing)}")
    return image, mask


# --- the key slice ------------------------------------------------------------------------------------------------


def key_slice(mask: np.ndarray, axis: int = 2, lesions: Optional[Sequence[Dict]] = None) -> Tuple[int, str]:
    """The slice the page shows, and why.

    Args:
        mask: label map ``(H, W)`` or ``(H, W, D)``; non-zero voxels are labelled.
        axis: the voxel axis of the axial slices (0, 1 or 2; 3D only).
        lesions: ``measurements["lesions"]["lesions"]`` of a tumor result (largest lesion first), or None.

    Returns:
        ``(index, reason)``: 0 for a 2D mask; else the largest lesion's ``slice`` (where its diameters were
        measured) when ``lesions`` lists one; else the axial slice with the largest labelled area (the first of
        equals); the middle slice when nothing is labelled.

    Raises:
        ValueError: ``mask`` is not 2D or 3D, ``axis`` is not a voxel axis, or a lesion's slice lies outside.
    """
    mask = np.asarray(mask)
    if mask.ndim == 2:
        return 0, "the image is a single slice"
    if mask.ndim != 3:
        raise ValueError(f"mask must be 2D or 3D, got shape {mask.shape}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    count = mask.shape[axis]
    if lesions:
        index = int(lesions[0]["slice"])
        if not 0 <= index < count:
            raise ValueError(f"lesions[0]['slice'] is {index}, outside the mask's {count} slices along axis {axis}")
        return index, "the slice where the largest lesion's diameters were measured"
    areas = (mask != 0).sum(axis=tuple(d for d in range(3) if d != axis))
    if not areas.any():
        return count // 2, "nothing segmented: the middle slice"
    return int(np.argmax(areas)), "the axial slice with the largest labelled area"


# --- the numbers --------------------------------------------------------------------------------------------------


def _r(value: Any, digits: int) -> Optional[float]:
    """``value`` rounded as the page prints it (None stays None)."""
    return None if value is None else round(float(value), digits)


def mm3(value: Optional[float]) -> str:
    """A volume as printed: one decimal, ``mm³``."""
    return "n/a" if value is None else f"{value:.1f} mm³"


def _volume_numbers(measured: Dict) -> Tuple[Dict, List[str]]:
    """(numbers, page lines) of a ``volumes`` result's ``measurements`` (hippocampus: per label and side)."""
    labels = list(measured.get("mm3") or {})
    sides = [s for s in ("left", "right") if isinstance(measured.get(s), dict)]
    volumes: Dict[str, Dict[str, Optional[float]]] = {}
    for name in labels + ["total"]:
        row: Dict[str, Optional[float]] = {}
        for side in sides:
            key = "total_mm3" if name == "total" else f"{name}_mm3"
            row[side] = _r(measured[side].get(key), 1)
        row["total"] = _r(measured.get("total_mm3") if name == "total" else measured["mm3"].get(name), 1)
        volumes[name] = row
    lines = []
    for name, row in volumes.items():
        if sides:
            parts = ", ".join(f"{side} {mm3(row[side])}" for side in sides)
            lines.append(f"{name}: {parts}; both sides {mm3(row['total'])}")
        else:
            lines.append(f"{name}: {mm3(row['total'])}")
    if not sides:
        lines.append("side: not known (the input is a hippocampus crop)")
    check = measured.get("volume_check") or {}
    volume_check = {k: check.get(k) for k in ("status", "reason", "range_mm3", "range_from") if k in check}
    line = f"volume check: {check.get('status', 'not checked')}"
    if check.get("range_mm3"):
        low, high = check["range_mm3"]
        line += f" (training labels {low:.0f}-{high:.0f} mm³ per hippocampus)"
    lines.append(line)
    if check.get("reason"):
        lines.append(f"  {check['reason']}")
    head = measured.get("head_size")
    if head is None:
        head_size: Dict[str, Any] = {
            "etiv_ml": None,
            "note": "not computed: the input is a crop, so no registration to the template ran",
        }
    elif head.get("etiv_ml") is None:
        head_size = {"etiv_ml": None, "note": head.get("note") or "not computed"}
    else:
        head_size = {
            "etiv_ml": _r(head["etiv_ml"], 1),
            "per_mille_of_etiv": {k: _r(v, 2) for k, v in (head.get("per_mille_of_etiv") or {}).items()},
            "method": head.get("method"),
        }
    if head_size["etiv_ml"] is None:
        lines.append(f"head size (eTIV): {head_size['note']}")
    else:
        lines.append(f"head size (eTIV): {head_size['etiv_ml']:.1f} mL")
        fractions = [f"{k} {v:.2f}" for k, v in head_size["per_mille_of_etiv"].items() if v is not None]
        if fractions:
            lines.append("hippocampus per mille of eTIV: " + ", ".join(fractions))
    numbers = {
        "volumes_mm3": volumes,
        "total_mm3": volumes["total"]["total"],
        "volume_check": volume_check,
        "head_size": head_size,
    }
    return numbers, lines


def _lesion_numbers(measured: Dict, dims: int = 3) -> Tuple[Dict, List[str]]:
    """(numbers, page lines) of a ``lesions`` result's ``measurements`` (tumor_seg) on a volume (``dims`` 3: volumes
    in mL) or a single 2D slice (``dims`` 2: areas in mm², no volume)."""
    lesion_info = measured.get("lesions") or {}
    listed = lesion_info.get("lesions") or []
    numbers: Dict[str, Any] = {"volume_ml": None}
    if dims == 2:  # a slice: the measures' mL are mm² x a 1 mm thickness; say what they are, an area
        area = measured.get("total_mm2", 1000.0 * float(lesion_info.get("volume_ml") or 0.0))
        numbers["area_mm2"] = _r(area, 1)
        lines = [f"tumor area: {numbers['area_mm2']:.1f} mm² (a single 2D slice: no volume)"]
    else:
        total = measured.get("total_mm3")
        numbers["volume_ml"] = _r(lesion_info.get("volume_ml", None if total is None else float(total) / 1000.0), 2)
        lines = [
            f"tumor volume: {numbers['volume_ml']:.2f} mL" if numbers["volume_ml"] is not None else "tumor volume: n/a"
        ]
    numbers.update(
        lesions=int(lesion_info.get("components", len(listed))),
        sum_of_products_mm2=_r(lesion_info.get("sum_of_products_mm2"), 1),
        largest_lesion=None,
    )
    lines.append(f"lesions (connected components): {numbers['lesions']}")
    if not listed:
        lines.append("largest lesion: none (nothing segmented)")
        return numbers, lines
    big = listed[0]
    first, last = (int(v) for v in big["slices"])
    lesion: Dict[str, Any] = {
        "largest_diameter_mm": _r(big["largest_diameter_mm"], 1),
        "perpendicular_diameter_mm": _r(big["perpendicular_diameter_mm"], 1),
        "product_mm2": _r(big["product_mm2"], 1),
        "measurable": bool(big.get("measurable")),
        "slice": int(big["slice"]),
        "slices": [first, last],
        "slices_spanned": last - first + 1,
    }
    diameters = f"diameters {lesion['largest_diameter_mm']:.1f} x {lesion['perpendicular_diameter_mm']:.1f} mm"
    if dims == 2:
        lesion["area_mm2"] = _r(1000.0 * float(big["volume_ml"]), 1)
        lines.append(f"largest lesion: {lesion['area_mm2']:.1f} mm², {diameters}")
    else:
        lesion["volume_ml"] = _r(big["volume_ml"], 2)
        lines.append(f"largest lesion: {lesion['volume_ml']:.2f} mL, {diameters} on slice {lesion['slice']}")
    numbers["largest_lesion"] = lesion
    rano = (
        "measurable: both diameters at least 10 mm"
        if lesion["measurable"]
        else "not measurable: RANO needs both diameters at least 10 mm"
    )
    lines.append(f"bidimensional product: {lesion['product_mm2']:.1f} mm² ({rano})")
    if dims == 3:
        lines.append(f"slices spanned: {first}-{last} ({lesion['slices_spanned']} slices)")
    if numbers["sum_of_products_mm2"] is not None:
        lines.append(f"sum of products of measurable lesions: {numbers['sum_of_products_mm2']:.1f} mm²")
    return numbers, lines


def _metric_lines(held_out: Optional[Dict]) -> List[str]:
    if not held_out:
        return ["held-out metrics: none recorded in model.json"]
    metrics = held_out.get("metrics") or {}
    figures = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, (int, float)))
    lines = [
        f"held-out ({held_out.get('split', 'test subjects')}): {held_out.get('subjects', '?')} subjects, "
        f"{held_out.get('images', '?')} images",
        f"  {figures or 'no figures'}",
    ]
    by_source = (metrics.get("breakdown") or {}).get("source") or {}
    if len(by_source) > 1:
        parts = []
        for source, row in by_source.items():
            means = [f"{k} {v:.3f}" for k, v in row.items() if k != "n" and isinstance(v, (int, float))]
            parts.append(f"{source} (n={row.get('n', '?')}): {', '.join(means)}")
        lines.append("  per source: " + "; ".join(parts))
    return lines


def _card(card: Optional[Dict], checkpoint: Optional[Dict], sha256: Optional[str]) -> Tuple[Dict, List[str]]:
    """(model section, page lines) from ``model.json`` and the result's ``checkpoint`` entry."""
    checkpoint = dict(checkpoint or {})
    if sha256 and "sha256" not in checkpoint:
        checkpoint["sha256"] = sha256
    name = checkpoint.get("name") or "unknown"
    line = f"checkpoint: {name}"
    if checkpoint.get("modified"):
        line += f", modified {checkpoint['modified']}"
    if checkpoint.get("mtime") is not None:
        line += f" (mtime {float(checkpoint['mtime']):.0f})"
    lines = [line]
    if checkpoint.get("sha256"):
        lines.append(f"sha256: {checkpoint['sha256']}")
    if not card:
        return {"checkpoint": checkpoint, "card": None}, lines + [
            "no model.json beside the checkpoint: held-out metrics and training data are unknown"
        ]
    held_out = (card.get("metrics") or {}).get("held_out")
    training = card.get("training") or {}
    data = training.get("data") or {}
    sources = data.get("images_by_source") or {}
    subjects = data.get("subjects") or {}
    summary = {
        "description": card.get("description"),
        "date": card.get("date"),
        "code_version": card.get("code_version"),
        "images_by_source": sources,
        "subjects": subjects,
        "items": training.get("items"),
        "epochs": training.get("epochs"),
        "device": training.get("device"),
        "split_seed": data.get("split_seed"),
    }
    if card.get("description"):
        lines.append(str(card["description"]))
    lines += _metric_lines(held_out)
    images = ", ".join(f"{s} {n}" for s, n in sources.items())
    split = ", ".join(f"{side} {n}" for side, n in subjects.items())
    lines.append(
        f"training data: {sum(sources.values()) if sources else '?'} images ({images or 'sources not recorded'}); "
        f"subjects {split or 'not recorded'} (split seed {data.get('split_seed', '?')})"
    )
    lines.append(
        f"training: {training.get('items', '?')} items, {training.get('epochs', '?')} epochs on "
        f"{training.get('device', '?')}; model of {card.get('date', '?')}, code {card.get('code_version', '?')}"
    )
    held = None
    if held_out:
        held = {k: held_out.get(k) for k in ("split", "subjects", "images")}
        held["metrics"] = {k: v for k, v in (held_out.get("metrics") or {}).items() if k != "breakdown"}
    return {"checkpoint": checkpoint, "held_out": held, "training": summary}, lines


def build_report(
    result: Dict,
    task: str,
    image: np.ndarray,
    mask: np.ndarray,
    spacing: Sequence[float],
    axis: int,
    card: Optional[Dict],
    image_name: str,
    *,
    measures: str,
    age: Optional[float] = None,
    sex: Optional[str] = None,
    checkpoint_sha256: Optional[str] = None,
    change: Optional[Mapping[str, Any]] = None,
) -> Dict:
    """The report's JSON: the numbers, the key slice, the model's card and the page's text lines as printed.

    Args:
        result: the infer task's result JSON (``measurements``, ``checkpoint``, ``label_names``, ``input``).
        task: the task's name (the page's title).
        image: grey image ``(H, W)`` or ``(H, W, D)`` (or ``(H, W, 3)`` RGB beside a 2D mask), any intensity unit.
        mask: label map, the image's shape (the infer's answer in the input grid).
        spacing: voxel size per axis of ``mask`` (mm).
        axis: the voxel axis of the axial slices (3D).
        card: ``model.json`` beside the checkpoint, or None.
        image_name: the input's name as the page shows it.
        age: years (0-120) or None; sex: ``F``/``M`` or None. Recorded; no figure uses them yet.
        measures: the task config's ``measures`` (:data:`~mri_label.core.change.MEASURES`): ``volumes`` or
            ``lesions`` numbers (and key slice).
        checkpoint_sha256: the checkpoint file's SHA-256, when the result's ``checkpoint`` entry does not give it.
        change: the change over time (:func:`mri_label.core.change.change_since` or ``not_computed``); default the
            result's ``change_over_time``, else "not computed: no earlier study linked".

    Returns:
        ``{"title", "task", "research_use", "created", "input", "subject", "key_slice", "measurements",
        "normative_percentiles", "change_over_time", "model", "sections"}``; volumes in mm³ or mL, diameters in mm,
        rounded as printed; ``sections``: ``[{"heading", "lines"}]``, the page's text.

    Raises:
        ValueError: naming the parameter: ``measures``, ``age``, ``sex``, an ``image`` of another size than
        ``mask``, ``spacing``, ``axis``.
    """
    by_lesion = check_measures(measures) == "lesions"
    sex = check_subject(age, sex)
    image, mask = _check_grids(image, mask, spacing)
    measured = (result or {}).get("measurements") or {}
    if change is None:
        change = (result or {}).get("change_over_time") or not_computed(NO_EARLIER_STUDY)
    lesions = (measured.get("lesions") or {}).get("lesions") if by_lesion else None
    index, why = key_slice(mask, axis, lesions)
    view_axis = axis if mask.ndim == 3 else 2
    in_plane = [d for d in range(mask.ndim) if d != view_axis][:2]
    plane = np.take(mask, index, axis=view_axis) if mask.ndim == 3 else mask
    pixel_mm2 = float(spacing[in_plane[0]]) * float(spacing[in_plane[1]])
    numbers, measure_lines = _lesion_numbers(measured, mask.ndim) if by_lesion else _volume_numbers(measured)
    model, model_lines = _card(card, (result or {}).get("checkpoint"), checkpoint_sha256)
    subject_line = "age, sex: not given"
    if age is not None or sex is not None:
        given = [f"age {float(age):g} years" if age is not None else None, f"sex {sex}" if sex else None]
        subject_line = ", ".join(g for g in given if g) + " (given; no figure uses them yet)"
    percentile_lines = [PERCENTILES_NOT_COMPUTED]
    if age is not None or sex is not None:
        percentile_lines.append("age and sex were given, but no percentile is guessed without a normative table")
    key = {
        "axis": int(view_axis),
        "index": int(index),
        "slices": int(mask.shape[view_axis]) if mask.ndim == 3 else 1,
        "why": why,
        "labelled_area_mm2": round(float((plane != 0).sum()) * pixel_mm2, 1),
    }
    slice_line = (
        f"slice {key['index']} of {key['slices']} along voxel axis {key['axis']}: {why}"
        if mask.ndim == 3
        else "a single slice"
    )
    return {
        "title": f"mri-label report: {task}",
        "task": task,
        "research_use": RESEARCH_USE,
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        "tool": f"mri-label {VERSION}",
        "input": {
            "file": image_name,
            "shape": [int(n) for n in mask.shape],
            "spacing_mm": [round(float(s), 4) for s in spacing],
            "how": (result or {}).get("input"),
        },
        "subject": {"age_years": None if age is None else float(age), "sex": sex},
        "key_slice": key,
        "labels": {str(k): int(v) for k, v in ((result or {}).get("label_names") or {}).items()},
        "measurements": numbers,
        "normative_percentiles": {"computed": False, "text": PERCENTILES_NOT_COMPUTED},
        "change_over_time": dict(change),
        "model": model,
        "sections": [
            {"heading": "Measurements", "lines": measure_lines},
            {"heading": "Key slice", "lines": [slice_line, f"labelled area on it: {key['labelled_area_mm2']:.1f} mm²"]},
            {"heading": "Normative percentiles", "lines": percentile_lines},
            {"heading": "Change over time", "lines": change_lines(change)},
            {"heading": "Model", "lines": model_lines},
            {"heading": "Subject", "lines": [subject_line]},
        ],
    }


# --- the page -----------------------------------------------------------------------------------------------------


def _window(plane: np.ndarray) -> Tuple[float, float]:
    """Grey window of a slice: from its 0.5th percentile (the background, usually) to the 99.5th percentile of its
    non-zero values, so that neither a bright lesion nor a dark background takes the whole grey scale."""
    values = plane[np.isfinite(plane)]
    if not values.size:
        return 0.0, 1.0
    nonzero = values[values != 0]
    low = float(np.percentile(values, 0.5))
    high = float(np.percentile(nonzero if nonzero.size else values, 99.5))
    return (low, high) if high > low else (low, low + 1.0)


def _scale_bar_mm(width_mm: float) -> float:
    """A round length (mm) near a quarter of ``width_mm``."""
    for length in (100, 50, 20, 10, 5, 2, 1, 0.5):
        if length <= width_mm / 3.0:
            return float(length)
    return 0.1


def _edge_letters(affine: np.ndarray, in_plane: Sequence[int]) -> Tuple[str, str, str, str]:
    """(left, right, bottom, top) patient-direction letters of a slice shown with its first in-plane voxel axis to
    the right and its second upwards, from the voxel -> RAS ``affine`` (4x4)."""
    letters = []
    for axis in in_plane:
        column = np.asarray(affine, dtype=float)[:3, axis]
        world = int(np.argmax(np.abs(column)))
        positive, negative = "RAS"[world], "LPI"[world]
        letters += [negative, positive] if column[world] > 0 else [positive, negative]
    return letters[0], letters[1], letters[2], letters[3]


def oriented_slice(
    image: np.ndarray, mask: np.ndarray, axis: int, index: int, spacing: Sequence[float], affine: Optional[np.ndarray]
) -> Tuple[np.ndarray, np.ndarray, Tuple[float, float], Optional[Tuple[str, str, str, str]]]:
    """The key slice as the page shows it: radiological view (the patient's right on the viewer's left, anterior
    up) when the volume's in-plane axes run along R-L and A-P, else as stored.

    Args:
        image, mask: ``(H, W, D)`` volumes of one grid.
        axis, index: the slice (voxel axis, index).
        spacing: voxel size per axis (mm).
        affine: voxel -> RAS ``(4, 4)``, or None (as stored, no letters).

    Returns:
        ``(image2d, mask2d, (horizontal_mm, vertical_mm), letters)``: arrays indexed ``[horizontal, vertical]``
        (first index to the right, second upwards), the pixel size along each, and the (left, right, bottom, top)
        patient-direction letters (None without an affine).
    """
    in_plane = [d for d in range(3) if d != axis]
    plane_image, plane_mask = np.take(image, index, axis=axis), np.take(mask, index, axis=axis)
    size = (float(spacing[in_plane[0]]), float(spacing[in_plane[1]]))
    if affine is None or np.asarray(affine).shape != (4, 4):
        return plane_image, plane_mask, size, None
    columns = np.asarray(affine, dtype=float)[:3, in_plane]
    world = [int(w) for w in np.argmax(np.abs(columns), axis=0)]
    if sorted(world) != [0, 1]:  # not an axial plane: as stored, with its letters
        return plane_image, plane_mask, size, _edge_letters(affine, in_plane)
    if world[0] == 1:  # the first in-plane axis runs A-P: it goes upwards
        plane_image, plane_mask, size, columns = plane_image.T, plane_mask.T, size[::-1], columns[:, ::-1]
    if columns[0, 0] > 0:  # towards R as the index grows: flipped, so that R is on the left
        plane_image, plane_mask = plane_image[::-1], plane_mask[::-1]
    if columns[1, 1] < 0:  # towards P as the index grows: flipped, so that A is up
        plane_image, plane_mask = plane_image[:, ::-1], plane_mask[:, ::-1]
    return plane_image, plane_mask, size, ("R", "L", "P", "A")


def _draw_slice(ax, report: Dict, image: np.ndarray, mask: np.ndarray, spacing, affine) -> Optional[str]:
    """Draw the key slice into ``ax``; the view's note for under it (radiological view), or None."""
    from matplotlib import patheffects
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    key = report["key_slice"]
    letters = None
    if mask.ndim == 3:
        plane_image, plane_mask, (sx, sy), letters = oriented_slice(
            image, mask, key["axis"], key["index"], spacing, affine
        )
    else:
        plane_image, plane_mask, (sx, sy) = image, mask, (float(spacing[0]), float(spacing[1]))
    width, height = plane_image.shape[0] * sx, plane_image.shape[1] * sy
    extent = (0.0, width, 0.0, height)
    low, high = _window(plane_image.astype(float))
    # in mm (pixels keep their proportions), the first index to the right; a volume: the second upwards; a 2D
    # picture: its rows downwards, as stored
    origin = "lower" if mask.ndim == 3 else "upper"
    ax.imshow(plane_image.T, cmap="gray", vmin=low, vmax=high, origin=origin, extent=extent, interpolation="nearest")
    values = sorted(int(v) for v in np.unique(plane_mask) if v != 0)
    names = {v: k for k, v in report.get("labels", {}).items()}
    if values:
        top = max(values)
        colours = ["#00000000"] + [LABEL_COLOURS[(v - 1) % len(LABEL_COLOURS)] for v in range(1, top + 1)]
        overlay = np.ma.masked_equal(plane_mask.T.astype(int), 0)
        ax.imshow(
            overlay,
            cmap=ListedColormap(colours),
            vmin=-0.5,
            vmax=top + 0.5,
            origin=origin,
            extent=extent,
            interpolation="nearest",
            alpha=0.5,
        )
        handles = [
            Patch(color=LABEL_COLOURS[(v - 1) % len(LABEL_COLOURS)], label=names.get(v, f"label {v}")) for v in values
        ]
        ax.legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.7)
    outline = [patheffects.withStroke(linewidth=2.5, foreground="black")]  # readable on bright and dark images
    bar = _scale_bar_mm(width)
    x0, y0 = width * 0.05, height * 0.05
    ax.plot(
        [x0, x0 + bar],
        [y0, y0],
        color="white",
        linewidth=3,
        solid_capstyle="butt",
        path_effects=[patheffects.withStroke(linewidth=5, foreground="black")],
    )
    ax.text(
        x0 + bar / 2,
        y0 + height * 0.025,
        f"{bar:g} mm",
        color="white",
        ha="center",
        va="bottom",
        fontsize=8,
        path_effects=outline,
    )
    if letters:
        style = {"color": "yellow", "fontsize": 8, "fontweight": "bold", "path_effects": outline}
        ax.text(width * 0.01, height / 2, letters[0], ha="left", va="center", **style)
        ax.text(width * 0.99, height / 2, letters[1], ha="right", va="center", **style)
        ax.text(width / 2, height * 0.01, letters[2], ha="center", va="bottom", **style)
        ax.text(width / 2, height * 0.99, letters[3], ha="center", va="top", **style)
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_xticks([])
    ax.set_yticks([])
    if letters == ("R", "L", "P", "A"):
        return "radiological view: the patient's right on the left, anterior up"
    return None


def _flow(fig, sections: List[Dict], x: float, y: float, width_chars: int, size: float) -> float:
    """Write ``sections`` (heading + lines, wrapped at ``width_chars``) from ``(x, y)`` down; the y below them."""
    step = size * 1.45 / (A4_INCHES[1] * 72.0)
    for section in sections:
        fig.text(x, y, section["heading"], fontsize=size + 1.5, fontweight="bold", va="top")
        y -= step * 1.4
        for line in section["lines"]:
            indent = len(line) - len(line.lstrip(" "))
            for part in textwrap.wrap(line.strip(), width_chars - indent) or [""]:
                fig.text(x + indent * 0.006, y, part, fontsize=size, va="top")
                y -= step
        y -= step * 0.6
    return y


def render(
    report: Dict,
    image: np.ndarray,
    mask: np.ndarray,
    spacing: Sequence[float],
    out_folder: str | os.PathLike,
    affine: Optional[np.ndarray] = None,
) -> Dict[str, str]:
    """Draw the page of ``report`` (:func:`build_report`) and write ``report.pdf``, ``report.png``, ``report.json``.

    Args:
        report: :func:`build_report`'s dict (its ``key_slice`` picks the slice shown).
        image: grey image ``(H, W[, D])`` (or RGB ``(H, W, 3)`` beside a 2D mask), any intensity unit.
        mask: label map of the image's shape.
        spacing: voxel size per axis (mm): the slice is shown in mm, with a scale bar.
        out_folder: created if missing; the three files in it are replaced.
        affine: voxel -> RAS matrix ``(4, 4)``, for the patient-direction letters at the slice's edges (optional).

    Returns:
        ``{"pdf", "png", "json"}``: the paths written.

    Raises:
        ValueError: naming the parameter: an ``image`` of another size than ``mask``, ``spacing``, a ``report``
        without ``key_slice``.
    """
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    image, mask = _check_grids(image, mask, spacing)
    if "key_slice" not in (report or {}) or "sections" not in report:
        raise ValueError("report must be build_report()'s dict (key_slice, sections)")
    out = Path(out_folder)
    out.mkdir(parents=True, exist_ok=True)
    sections = {s["heading"]: s for s in report["sections"]}
    paths = {"pdf": str(out / FILES[0]), "png": str(out / FILES[1]), "json": str(out / FILES[2])}
    # TrueType fonts in the PDF, so that its text can be searched and extracted
    with rc_context({"pdf.fonttype": 42, "font.family": "DejaVu Sans"}):
        for size in (9.0, 8.0, 7.0, 6.0):
            fig = Figure(figsize=A4_INCHES)
            fig.text(0.06, 0.975, report["title"], fontsize=17, fontweight="bold", va="top")
            fig.text(0.06, 0.948, report["research_use"], fontsize=12, fontweight="bold", color="#c00000", va="top")
            info = report["input"]
            described = (
                f"input: {info['file']}, {' x '.join(str(n) for n in info['shape'])} "
                f"{'voxels' if len(info['shape']) == 3 else 'pixels'} of "
                f"{' x '.join(f'{s:g}' for s in info['spacing_mm'])} mm; made {report['created']}"
            )
            for row, part in enumerate(textwrap.wrap(described, 125)[:2]):  # a long file name: two lines at most
                fig.text(0.06, 0.929 - row * 0.012, part, fontsize=8, va="top")
            ax = fig.add_axes((0.06, 0.55, 0.44, 0.35))
            view = _draw_slice(ax, report, image, mask, spacing, affine)
            ax.apply_aspect()  # the axes shrunk to the slice's proportions: the caption goes right below it
            below = ax.get_position().y0 - 0.004
            if view:
                fig.text(ax.get_position().x0, below, view, fontsize=7, va="top")
                below -= 0.014
            y_left = _flow(fig, [sections["Key slice"]], 0.06, below - 0.008, 60, size - 1)
            y_right = _flow(fig, [sections["Measurements"]], 0.53, 0.9, 48, size)
            rest = [sections[h] for h in ("Normative percentiles", "Change over time", "Model", "Subject")]
            y = _flow(fig, rest, 0.06, min(y_left, y_right) - 0.01, 105, size)
            if y > 0.06:
                break
        fig.text(0.06, 0.03, f"{report['research_use']}. {report['tool']}; page 1 of 1.", fontsize=8, va="bottom")
        metadata = {"Title": report["title"], "Subject": report["research_use"], "Creator": report["tool"]}
        fig.savefig(paths["pdf"], format="pdf", metadata=metadata)
        fig.savefig(paths["png"], format="png", dpi=PNG_DPI)
    atomic_write_json(paths["json"], report, indent=1, ensure_ascii=False)
    return paths


# --- the checkpoint ----------------------------------------------------------------------------------------------


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
