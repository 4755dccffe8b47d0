"""The panel's study fields (subject, study date, age, sex) as infer params, checked before anything is sent.

The mri-label server links a result with the subject's earlier studies by params ``subject`` and ``study_date``
(where the image's info gives none: an image sent from Slicer has no info), and prints ``age`` and ``sex`` on the
one-page report (``POST /infer/<task>?output=report``; :meth:`MRILabelLib.client.ServerClient.report`). The fields
are optional: an empty one is not sent, so the server uses what the image's info records, or says *not computed*.
The checks are the server's (``apps/mri_app/lib/follow_up.py``, ``mri_label/core/report_page.py``), made here so a
typing slip is one sentence before any upload.
"""

import re
from datetime import date
from typing import Any, Dict, Optional, Union

#: Ages the report accepts (years).
AGE_RANGE = (0.0, 120.0)
#: Sexes the report accepts.
SEXES = ("F", "M")
#: The sex choice that sends nothing (the panel's combo box shows it first).
NOT_GIVEN = "not given"
#: Subject ids the server accepts: 1-128 characters, no control characters.
_SUBJECT = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
_DATES = (re.compile(r"^(\d{4})-(\d{2})-(\d{2})$"), re.compile(r"^(\d{4})(\d{2})(\d{2})$"))


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def check_subject(value: Any) -> Optional[str]:
    """The subject id as typed (surrounding spaces dropped), or None when empty.

    Raises:
        ValueError: over 128 characters, or with a control character (a tab, a line break).
    """
    text = _text(value)
    if not text:
        return None
    if not _SUBJECT.match(text):
        raise ValueError(f"subject must be 1-128 characters without tabs or line breaks, got {text[:40]!r}")
    return text


def check_study_date(value: Any) -> Optional[str]:
    """The study date as ``YYYY-MM-DD`` from ``YYYY-MM-DD`` or DICOM's ``YYYYMMDD``, or None when empty.

    Raises:
        ValueError: another form, a day that does not exist, a year before 1900.
    """
    text = _text(value)
    if not text:
        return None
    match = _DATES[0].match(text) or _DATES[1].match(text)
    if not match:
        raise ValueError(f"study date must be a date as YYYY-MM-DD (or YYYYMMDD), got {text!r}")
    try:
        day = date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        raise ValueError(f"study date {text!r} is not a calendar date") from None
    if day.year < 1900:
        raise ValueError(f"study date {text!r} lies before 1900")
    return day.isoformat()


def check_age(value: Any) -> Optional[Union[int, float]]:
    """The age in years (a whole number stays whole; a decimal comma is read as a point), or None when empty.

    Raises:
        ValueError: not a number, or outside 0-120 years.
    """
    text = _text(value).replace(",", ".")
    if not text:
        return None
    try:
        years = float(text)
    except ValueError:
        raise ValueError(f"age must be a number of years, got {text!r}") from None
    if not AGE_RANGE[0] <= years <= AGE_RANGE[1]:  # NaN fails too
        raise ValueError(f"age must lie between {AGE_RANGE[0]:.0f} and {AGE_RANGE[1]:.0f} years, got {text}")
    return int(years) if years.is_integer() else years


def check_sex(value: Any) -> Optional[str]:
    """``F`` or ``M`` (any case), or None for an empty choice or :data:`NOT_GIVEN`.

    Raises:
        ValueError: anything else.
    """
    text = _text(value)
    if not text or text.lower() == NOT_GIVEN:
        return None
    if text.upper() not in SEXES:
        raise ValueError(f"sex must be F or M (or {NOT_GIVEN}), got {text!r}")
    return text.upper()


def study_params(
    subject: Any = "", study_date: Any = "", age: Any = "", sex: Any = "", report: bool = False
) -> Dict[str, Any]:
    """Infer params from the panel's study fields (texts as typed; an empty field is left out).

    Args:
        subject, study_date: sent with every run (they link the result with the subject's earlier studies).
        age, sex: sent with a report only (``report``): the page records them; a run does not read them, so they
            are neither checked nor sent then.
        report: the params of ``output=report``.

    Raises:
        ValueError: one sentence naming the field that is wrong (nothing has been sent).
    """
    params: Dict[str, Any] = {}
    checked: Dict[str, Any] = {"subject": check_subject(subject), "study_date": check_study_date(study_date)}
    if report:
        checked.update(age=check_age(age), sex=check_sex(sex))
    params.update({key: value for key, value in checked.items() if value is not None})
    return params
