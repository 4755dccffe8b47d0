"""The one-page report of one infer result (issue 20, item 5): what ``POST /infer/<task>?output=report`` answers and
what ``mri-label report`` writes (:mod:`mri_label.patient_report` runs the task in process and calls
:func:`write_report`).

The page itself is drawn by :mod:`mri_label.core.report_page` (the layer the app and the CLI share); here the image
and the mask are read in the input's grid, the axial axis and voxel size found, the ``model.json`` beside the
checkpoint read, and the request's report params checked (:func:`report_options`).

Over HTTP the answer is the PDF (``application/pdf``, shown inline by a browser; 3D Slicer saves it and opens it
with the system's viewer); with params ``{"report_format": "zip"}`` it is a ZIP of ``report.pdf``, ``report.png``
and ``report.json`` (:func:`answer_bytes`).
"""

import io
import os
import re
import zipfile
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from lib.model_card import read_card
from lib.transforms import axial_axis
from mri_label.core.report_page import FILES, build_report, check_subject, render, sha256_of

FORMATS = {"pdf": "application/pdf", "zip": "application/zip"}
"""``params report_format`` -> the answer's media type; ``pdf`` unless asked."""


def report_options(measures: Optional[str], task: str, reporting: Mapping[str, str], params: Mapping[str, Any]):
    """Check an ``output=report`` request before the model runs: ``(measures, age, sex, format)``.

    Args:
        measures: the task config's ``measures`` declaration (None: the task makes no report).
        task: the task asked.
        reporting: task -> its ``measures``, of every served task that makes a report (for the message).
        params: the request's params (``age``, ``sex``, ``report_format``, ``uncertainty``).

    Raises:
        ValueError: naming what is wrong: a task without a report, an uncertainty map asked, ``params age``,
        ``params sex``, ``params report_format``.
    """
    if not measures:
        able = ", ".join(sorted(reporting)) or "none"
        raise ValueError(f"output=report: {task} declares no measurements to report; tasks with a report: {able}")
    if params.get("uncertainty") is True:
        raise ValueError("output=report reports the labels: leave params uncertainty out")
    try:
        sex = check_subject(params.get("age"), params.get("sex"))
    except ValueError as error:
        raise ValueError(f"params {error}") from None
    form = params.get("report_format", "pdf")
    if form not in FORMATS:
        raise ValueError(f"params report_format must be one of {', '.join(FORMATS)}, got {form!r}")
    return measures, params.get("age"), sex, form


def _load(path_or_array) -> Tuple[np.ndarray, np.ndarray]:
    """``(array, voxel -> RAS affine)`` of an image file or folder (MONAI's reader, as the infer tasks read it), or
    of an array as it is (identity affine)."""
    if isinstance(path_or_array, (str, os.PathLike)):
        from monai.transforms import LoadImage

        loaded = LoadImage(image_only=True)(os.fspath(path_or_array))
        return np.asarray(loaded), np.asarray(getattr(loaded, "affine", np.eye(4)), dtype=float)
    return np.asarray(path_or_array), np.eye(4)


def write_report(
    task: str,
    measures: str,
    image: str,
    mask,
    result: Mapping[str, Any],
    checkpoint: str,
    out_folder: str,
    image_name: str,
    age: Optional[float] = None,
    sex: Optional[str] = None,
    change: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """Write ``report.pdf``, ``report.png`` and ``report.json`` of one result into ``out_folder``.

    Args:
        task: the task that answered; measures: its config's ``measures``.
        image: the input's file or DICOM folder (read in its own grid, as the infer read it).
        mask: the infer's label map in the input grid: a file, or the array itself.
        result: the result JSON (``measurements``, ``checkpoint``, ``label_names``, ``input``, ``change_over_time``).
        checkpoint: the checkpoint file that answered (its ``model.json`` and SHA-256).
        out_folder: created if missing.
        image_name: the input's name as the page shows it.
        age, sex: of the subject, as given (checked: :func:`mri_label.core.report_page.check_subject`).
        change: the change over time; default the result's ``change_over_time``.

    Returns:
        ``{"files": {"pdf", "png", "json"}, "report": the JSON}``.
    """
    array, affine = _load(image)
    mask_array = np.squeeze(_load(mask)[0])
    if mask_array.ndim == 3:
        spacing: Tuple[float, ...] = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
        axis, shown_affine = axial_axis(affine), affine
    else:  # a 2D picture carries no spacing: 1 mm pixels, as the infer's measurements assume
        spacing, axis, shown_affine = (1.0, 1.0), 2, None
    report = build_report(
        dict(result),
        task,
        array,
        mask_array,
        spacing,
        axis,
        read_card(checkpoint),
        image_name,
        measures=measures,
        age=age,
        sex=sex,
        checkpoint_sha256=sha256_of(checkpoint),
        change=change,
    )
    files = render(report, array, mask_array, spacing, out_folder, affine=shown_affine)
    return {"files": files, "report": report}


def answer_name(image_id: Optional[str], task: str) -> str:
    """The answer's file name (without extension): ``<image id>-<task>-report``, ``upload`` for an upload; only
    letters, digits, ``.``, ``_`` and ``-``."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", image_id or "upload")[:100]
    return f"{base}-{task}-report"


def answer_bytes(files: Mapping[str, str], form: str) -> bytes:
    """The answer's body: the PDF, or a ZIP of the three files (named as :data:`FILES`)."""
    if form == "pdf":
        with open(files["pdf"], "rb") as handle:
            return handle.read()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, name in zip(("pdf", "png", "json"), FILES):
            archive.write(files[key], name)
    return buffer.getvalue()
