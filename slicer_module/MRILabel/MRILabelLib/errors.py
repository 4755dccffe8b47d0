"""Errors raised by the client and logic, and the one plain sentence a clinician is shown for each.

Every failure the module can meet is turned into a single sentence by :func:`plain_sentence`; the widget
shows that sentence and never a traceback.
"""

import re
from typing import Any, Optional

#: Shown when a classifier answer carries no class-activation map file.
NO_CAM_SENTENCE = "This server does not provide class-activation maps."

_NOT_TRAINED = re.compile(r"model '([^']+)' is not trained yet")


class MRILabelError(Exception):
    """Base class of the errors this package raises on purpose."""


class ServerUnreachableError(MRILabelError):
    """No connection could be made to the server (refused, reset, unknown host).

    Args:
        url: base URL of the server.
        reason: what the network layer reported.
    """

    def __init__(self, url: str, reason: str):
        super().__init__(f"{url}: {reason}")
        self.url, self.reason = url, reason


class ServerTimeoutError(MRILabelError):
    """The server accepted the connection but did not answer in time.

    Args:
        url: base URL of the server.
        timeout_s: the time limit, in seconds.
    """

    def __init__(self, url: str, timeout_s: float):
        super().__init__(f"{url}: no answer within {timeout_s} s")
        self.url, self.timeout_s = url, timeout_s


class ServerHTTPError(MRILabelError):
    """The server answered with an HTTP error status.

    Args:
        status: HTTP status code.
        detail: the server's ``detail`` message, as one line of text.
        method: HTTP method of the request.
        path: request path (without the server URL).
    """

    def __init__(self, status: int, detail: str, method: str = "", path: str = ""):
        super().__init__(f"HTTP {status} on {method} {path}: {detail}")
        self.status, self.detail, self.method, self.path = status, detail, method, path


class ImageTooLargeError(MRILabelError):
    """An image is over the upload limit (checked before sending, or a 413 from the server).

    Args:
        size_bytes: size of the file, or None when the server refused it without saying.
        limit_bytes: the configured limit, or None when the server's own limit applied.
    """

    def __init__(self, size_bytes=None, limit_bytes=None):
        super().__init__(f"image of {size_bytes} bytes is over the limit of {limit_bytes} bytes")
        self.size_bytes, self.limit_bytes = size_bytes, limit_bytes


class TrainingFailedError(MRILabelError):
    """A training run ended with ERROR or STOPPED, or did not end in time.

    Args:
        task: the task that was trained.
        status: the run's last status (ERROR, STOPPED or TIMEOUT).
        last_line: the last line the training printed, if any.
    """

    def __init__(self, task: str, status: str, last_line: str = ""):
        super().__init__(f"training of {task} ended with {status}: {last_line}")
        self.task, self.status, self.last_line = task, status, last_line


class UnexpectedAnswerError(MRILabelError):
    """The server answered, but not with what this module expects (e.g. a different server).

    Args:
        what: a short description of what was wrong with the answer.
    """

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


class Cancelled(MRILabelError):
    """The user cancelled an action (or the scene was closed while it ran).

    Args:
        title: the action, as the panel names it (e.g. ``Running sequence``).
    """

    def __init__(self, title: str):
        super().__init__(f"{title} was cancelled")
        self.title = title


class BusyError(MRILabelError):
    """An action was started while another one still runs (the panel runs one at a time).

    Args:
        title: the action that is still running.
    """

    def __init__(self, title: str):
        super().__init__(f"{title} is still running")
        self.title = title


def _one_line(text: str) -> str:
    """Collapse whitespace and make sure the text ends with a full stop."""
    text = " ".join(str(text).split()).rstrip()
    return text if text.endswith((".", "!", "?")) else text + "."


def _megabytes(size_bytes: float) -> str:
    """A file size for people: ``12.3 MB``, or ``85 kB`` under a megabyte."""
    return f"{size_bytes / 1e6:.1f} MB" if size_bytes >= 1e6 else f"{size_bytes / 1e3:.0f} kB"


def _http_sentence(error: ServerHTTPError) -> str:
    status, detail = error.status, error.detail
    not_trained = _NOT_TRAINED.search(detail or "")
    if status == 409 and not_trained:
        return (
            f"The model '{not_trained.group(1)}' is not trained yet; "
            "start a training for it (Training section) or ask for a trained checkpoint."
        )
    if status == 401:
        if error.path == "/auth/token":
            return "The server did not accept this user name and password; check them and connect again."
        return "This server needs a login: enter your user name and password, then press Connect."
    if status == 403:
        return _one_line(f"Your account may not do this: {detail or 'HTTP 403'}; ask an administrator for the role")
    if status == 413:
        return _image_too_large_sentence(ImageTooLargeError())
    if status == 429:
        return "A training is already running on the server; wait for it to finish, then try again."
    if status in (502, 503, 504):
        return f"The server is temporarily unavailable (HTTP {status}); try again in a moment."
    if 400 <= status < 500:
        return _one_line(f"The server refused the request: {detail or f'HTTP {status}'}")
    return f"The server failed while handling the request (HTTP {status}); the server log (GET /logs/) has the details."


def _image_too_large_sentence(error: ImageTooLargeError) -> str:
    if error.size_bytes is not None and error.limit_bytes is not None:
        return (
            f"The image is too large to send ({_megabytes(error.size_bytes)}; the limit is "
            f"{_megabytes(error.limit_bytes)}); crop or resample it, or raise the limit in the module settings."
        )
    return "The image is too large for the server; crop or resample it before sending."


def plain_sentence(error: BaseException) -> str:
    """The one sentence a clinician is shown for ``error``.

    Args:
        error: any exception raised by this package (or, as a last resort, any exception at all).

    Returns:
        One line of plain text ending with a full stop; never a traceback.
    """
    if isinstance(error, ServerUnreachableError):
        return (
            f"The MONAI Label server at {error.url} cannot be reached; "
            "check that it is running and that the address is right."
        )
    if isinstance(error, ServerTimeoutError):
        return (
            f"The server at {error.url} did not answer within {error.timeout_s:g} seconds; "
            "it may be busy, so try again in a moment."
        )
    if isinstance(error, ServerHTTPError):
        return _http_sentence(error)
    if isinstance(error, ImageTooLargeError):
        return _image_too_large_sentence(error)
    if isinstance(error, TrainingFailedError):
        if error.status == "TIMEOUT":
            return (
                f"The training of '{error.task}' did not finish in the time allowed; "
                "it may still be running on the server."
            )
        return f"The training of '{error.task}' ended with {error.status}; the server log (GET /logs/) has the details."
    if isinstance(error, Cancelled):
        return f"{error.title} was cancelled."
    if isinstance(error, BusyError):
        return f"{error.title} is still running; wait for it or press Cancel."
    if isinstance(error, UnexpectedAnswerError):
        return _one_line(
            f"The server gave an answer this module does not understand ({error.what}); "
            "check that the address is an mri-label server"
        )
    if isinstance(error, (ValueError, TypeError)):
        return _one_line(str(error))
    return _one_line(f"Something unexpected went wrong ({type(error).__name__}: {error})")


def shown(value: Any) -> str:
    """A value of an unexpected answer as a sentence quotes it: its ``repr``, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def answer_text(value: Any, what: str, required: bool = False) -> Optional[str]:
    """A text field of a server answer: None when absent (unless ``required``).

    Raises:
        UnexpectedAnswerError: not a text, or an empty one where ``required`` (the sentence names ``what``).
    """
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise UnexpectedAnswerError(f"{what} must be a text, got {shown(value)}")
    return value
