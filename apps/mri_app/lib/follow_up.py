"""Change over time on the server (issue 20, item 4): every result of a task whose config declares ``measures`` is
stored with its subject and study date, and compared with the previous study of the same subject.

Where results are stored: the image's info in the datastore, ``info["measured"][<task>]`` (written with
:func:`lib.datastore.update_info_entry`, so ``datastore_v2.json`` holds it; on a DICOMweb datastore the cache's
index): ``{"measures", "scope", "values", "checkpoint", "subject", "study_date", "ts"}``
(:func:`mri_label.core.change.measured_record`). The latest result of a task on an image replaces the earlier one.
Clients cannot write it (``measured`` is a server-managed info key, :data:`lib.store_routes.MANAGED_INFO_KEYS`).
Uploads and sessions have no datastore record: their results are compared (with params ``subject`` and
``study_date``) but not stored.

Where the subject and study date come from (:func:`study_of`), first found:

- subject: params ``subject``; the image's info ``subject`` (what imports write, and the split's unit);
- study date: params ``study_date``; the image's info ``study_date``; its info ``StudyDate`` (what MONAI Label's
  DICOMweb datastore records of each series); a DICOM file's or series folder's own ``StudyDate``.

Params that contradict the image's info are refused (422), never preferred. A stored record lacking a subject or a
date takes it from its image's info when compared, so ``subject`` / ``study_date`` written into the info later
(``PUT /datastore/image/info``) link results measured before.
"""

import os
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from lib.datastore import update_info_entry
from mri_label.core.change import (
    change_since,
    dicom_study_date,
    measured_record,
    not_computed,
    parse_study_date,
    previous_record,
)

FIELD = "measured"
"""The image-info field holding each task's latest measured result."""
SUBJECT_PARAM, DATE_PARAM = "subject", "study_date"
_SUBJECT = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")


def check_subject(value: Any, what: str = "params subject") -> Optional[str]:
    """A subject id as given (1-128 printable characters), or None for none.

    Raises:
        ValueError: naming ``what``.
    """
    if value is None:
        return None
    if not isinstance(value, str) or not _SUBJECT.match(value) or not value.strip():
        raise ValueError(f"{what} must be 1-128 printable characters, got {value!r}")
    return value


def info_study_date(info: Mapping[str, Any]) -> Tuple[Optional[str], Optional[str]]:
    """``(ISO date, where from)`` of an image's info (``study_date``, else DICOM ``StudyDate``), or ``(None,
    problem)`` where a value is there but is no date (None, None: no value)."""
    for key in (DATE_PARAM, "StudyDate"):
        if info.get(key) in (None, ""):
            continue
        try:
            found = parse_study_date(info.get(key), f"image info {key}")
        except ValueError as error:
            return None, str(error)
        if found is not None:
            return found.isoformat(), f"image info {key}"
    return None, None


def study_of(
    datastore, image_id: Optional[str], path: Optional[str], params: Mapping[str, Any]
) -> Dict[str, Optional[str]]:
    """The subject and study date of an infer request's image: ``{"subject", "study_date", "date_from",
    "problem"}`` (``problem``: why a date present in the info is not used).

    Args:
        datastore: the app's datastore.
        image_id: the datastore image id, or None for an upload or session.
        path: the image's file or folder (its DICOM ``StudyDate`` is read where the info gives none).
        params: the request (params ``subject`` and ``study_date``).

    Raises:
        ValueError: params ``subject`` or ``study_date`` malformed, or contradicting the image's info.
    """
    subject = check_subject(params.get(SUBJECT_PARAM))
    given = parse_study_date(params.get(DATE_PARAM), f"params {DATE_PARAM}")
    info = dict(datastore.get_image_info(image_id) or {}) if image_id else {}
    recorded_subject = info.get(SUBJECT_PARAM)
    if subject is not None and recorded_subject not in (None, "") and str(recorded_subject) != subject:
        raise ValueError(
            f"params subject {subject!r} differs from the subject recorded in image {image_id!r}'s info "
            f"({recorded_subject!r}): correct the info, or leave params subject out"
        )
    recorded_date, where = info_study_date(info)
    if given is not None and recorded_date is not None and given.isoformat() != recorded_date:
        raise ValueError(
            f"params study_date {given.isoformat()} differs from {where} of image {image_id!r} ({recorded_date})"
        )
    study: Dict[str, Optional[str]] = {
        "subject": subject or (str(recorded_subject) if recorded_subject not in (None, "") else None),
        "study_date": None,
        "date_from": None,
        "problem": None,
    }
    if given is not None:
        study.update(study_date=given.isoformat(), date_from=f"params {DATE_PARAM}")
    elif recorded_date is not None:
        study.update(study_date=recorded_date, date_from=where)
    elif where is not None:  # a value in the info that is no date
        study["problem"] = where
    elif path and (os.path.isdir(path) or path.lower().endswith(".dcm")):
        found = dicom_study_date(path)
        if found is not None:
            study.update(study_date=found, date_from="DICOM StudyDate")
    return study


def stored_records(datastore, task: str) -> List[Tuple[str, Dict[str, Any]]]:
    """``(image id, record)`` of every image whose info holds a stored result of ``task``; a record without a
    subject or date takes its image's info ``subject`` / study date."""
    found = []
    objects = (datastore.json() or {}).get("objects") or {}
    for image_id, entry in objects.items():
        info = ((entry or {}).get("image") or {}).get("info") or {}
        record = (info.get(FIELD) or {}).get(task)
        if not isinstance(record, dict):
            continue
        record = dict(record)
        if not record.get("subject") and info.get(SUBJECT_PARAM) not in (None, ""):
            record["subject"] = str(info[SUBJECT_PARAM])
        if not record.get("study_date"):
            record["study_date"] = info_study_date(info)[0]
        found.append((str(image_id), record))
    return found


def follow_up(
    datastore,
    task: str,
    measures: str,
    image_id: Optional[str],
    study: Mapping[str, Optional[str]],
    result: Mapping[str, Any],
    params: Mapping[str, Any],
) -> Dict[str, Any]:
    """The change over time of one result (``change_over_time`` of the result JSON), and the result stored in the
    image's info (datastore images only; not when params ``slices`` limited what was segmented).

    Args:
        datastore: the app's datastore.
        task: the task that answered; measures: its config's ``measures``.
        image_id: the datastore image id, or None (an upload or session: compared, not stored).
        study: :func:`study_of`'s answer, taken before the inference.
        result: the result JSON (``measurements``, ``checkpoint``).
        params: the request.
    """
    if params.get("slices") is not None:
        return not_computed("params slices limited the slices segmented: the measurements are not the whole image's")
    current = measured_record(
        measures, result.get("measurements") or {}, result.get("checkpoint"), study["subject"], study["study_date"]
    )
    if not current["values"]:
        return not_computed("the result holds no measurements to compare")
    if study.get("problem"):
        change = not_computed(f"no study date for this image: {study['problem']}")
    else:
        previous, reason = previous_record(stored_records(datastore, task), current, image_id)
        if previous is None:
            change = not_computed(reason)
        else:
            change = change_since(current, previous[0], previous[1])
    if study.get("date_from") and change.get("computed"):
        change["study_date_from"] = study["date_from"]
    if image_id:
        update_info_entry(datastore, image_id, FIELD, task, current)
    return change
