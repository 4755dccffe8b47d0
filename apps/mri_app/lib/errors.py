"""Requests this app refuses, and their HTTP answers: the one place a refusal becomes a status and a message.

Every refusal is a :class:`BadInput`: an HTTP status and a message meant for the person who sent the request.
It is FastAPI's ``HTTPException`` (status code, ``detail`` = the message), so FastAPI answers it as
``{"detail": message}`` with that status wherever it is raised (a route, an infer task, the datastore, a
strategy) and code or tests that catch ``HTTPException`` see it. Refusals that occur in several places have
their own class, whose message is written here only:

- :class:`ImageNotFound` (404): ``image 'x' is not in the datastore``.
- :func:`refused`: a :class:`lib.request_checks.RequestError` (a refused request value, with its status).

Checks that know nothing of HTTP (:mod:`lib.request_checks`, :mod:`lib.conf`) raise ``ValueError``\\ s; the routes
turn those into answers here.
"""

from fastapi import HTTPException

from lib.request_checks import RequestError


class BadInput(HTTPException):
    """A request refused: ``status`` (4xx, or 502/504 for a PACS that fails) and a message for its sender."""

    def __init__(self, status: int, message: str):
        super().__init__(status_code=status, detail=message)
        self.status = status
        self.message = message


class ImageNotFound(BadInput):
    """404: the datastore has no image ``image_id``."""

    def __init__(self, image_id: str):
        super().__init__(404, f"image {image_id!r} is not in the datastore")
        self.image_id = image_id


def bad_input(status: int, message: str) -> BadInput:
    """:class:`BadInput` ``(status, message)``, to ``raise``: the app's spelling at its many call sites."""
    return BadInput(status, message)


def refused(error: RequestError) -> BadInput:
    """The answer to a refused request value: its status (422 unless it says otherwise) and its message."""
    return BadInput(error.status, str(error))
