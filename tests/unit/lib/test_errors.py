"""lib.errors: a refusal is an HTTP status and a message, written in one place."""

import re
from pathlib import Path

from fastapi import HTTPException

from lib.errors import BadInput, ImageNotFound, bad_input, refused
from lib.request_checks import RequestError

APP = Path(__file__).resolve().parents[3] / "apps" / "mri_app"


def test_bad_input_is_an_http_answer_with_its_status_and_message():
    error = bad_input(413, "too big")
    assert isinstance(error, BadInput) and isinstance(error, HTTPException)
    assert (error.status_code, error.detail, error.status, error.message) == (413, "too big", 413, "too big")


def test_image_not_found_is_a_404_naming_the_image():
    error = ImageNotFound("synth01")
    assert isinstance(error, BadInput) and error.image_id == "synth01"
    assert (error.status_code, error.detail) == (404, "image 'synth01' is not in the datastore")


def test_a_refused_request_value_keeps_its_status_and_message():
    assert (refused(RequestError("params x must be y")).status_code, refused(RequestError("m")).detail) == (422, "m")
    forbidden = refused(RequestError("params save_label needs a role", status=403))
    assert (forbidden.status_code, forbidden.detail) == (403, "params save_label needs a role")


def writing(pattern: str) -> list:
    """The app's source files (``main.py``, ``lib/**``) that match ``pattern``, relative to the app folder."""
    sources = [APP / "main.py", *sorted((APP / "lib").rglob("*.py"))]
    return [p.relative_to(APP).as_posix() for p in sources if re.search(pattern, p.read_text(encoding="utf-8"))]


def test_the_image_not_found_message_is_written_once():
    """Every 'not in the datastore' answer is an ImageNotFound: the text appears in lib/errors.py only."""
    assert writing(r"is not in the datastore") == ["lib/errors.py"]


def test_http_errors_are_made_in_lib_errors_only():
    """Refusals go through lib.errors; only lib.access makes its own (401/403/502/503 with auth headers)."""
    assert writing(r"\bHTTPException\s*\(") == ["lib/access.py"]
