"""Every error the module can meet becomes one plain sentence."""

import pytest

from MRILabelLib.errors import (
    ImageTooLargeError,
    ServerHTTPError,
    ServerTimeoutError,
    ServerUnreachableError,
    TrainingFailedError,
    UnexpectedAnswerError,
    plain_sentence,
)

NOT_TRAINED = "model 'hippocampus' is not trained yet: train it (POST /train/<task>) or put a checkpoint at /m/model.pt"


@pytest.mark.parametrize(
    "error, sentence",
    [
        (
            ServerUnreachableError("http://h:8000", "[Errno 111] Connection refused"),
            "The MONAI Label server at http://h:8000 cannot be reached; check that it is running and that the address "
            "is right.",
        ),
        (
            ServerTimeoutError("http://h:8000", 30.0),
            "The server at http://h:8000 did not answer within 30 seconds; it may be busy, so try again in a moment.",
        ),
        (
            ServerHTTPError(409, NOT_TRAINED),
            "The model 'hippocampus' is not trained yet; start a training for it (Training section) or ask for a "
            "trained checkpoint.",
        ),
        (ServerHTTPError(409, "some other conflict"), "The server refused the request: some other conflict."),
        (
            ServerHTTPError(413, "Request Entity Too Large"),
            "The image is too large for the server; crop or resample it before sending.",
        ),
        (
            ImageTooLargeError(734_000_000, 512_000_000),
            "The image is too large to send (734.0 MB; the limit is 512.0 MB); crop or resample it, or raise the limit "
            "in the module settings.",
        ),
        (
            ImageTooLargeError(25_000, 10_000),
            "The image is too large to send (25 kB; the limit is 10 kB); crop or resample it, or raise the limit in "
            "the module settings.",
        ),
        (
            ServerHTTPError(429, "++++++++++ Train Task is Already Running"),
            "A training is already running on the server; wait for it to finish, then try again.",
        ),
        (
            ServerHTTPError(404, "image 'x' is not in the datastore"),
            "The server refused the request: image 'x' is not in the datastore.",
        ),
        (
            ServerHTTPError(422, "threshold must be a number in [0, 1], got 2."),
            "The server refused the request: threshold must be a number in [0, 1], got 2.",
        ),
        (ServerHTTPError(415, ""), "The server refused the request: HTTP 415."),
        (ServerHTTPError(503, "busy"), "The server is temporarily unavailable (HTTP 503); try again in a moment."),
        (
            ServerHTTPError(500, "Internal Server Error"),
            "The server failed while handling the request (HTTP 500); the server log (GET /logs/) has the details.",
        ),
        (
            TrainingFailedError("tumor_seg", "ERROR", "Traceback ..."),
            "The training of 'tumor_seg' ended with ERROR; the server log (GET /logs/) has the details.",
        ),
        (
            TrainingFailedError("tumor_seg", "TIMEOUT"),
            "The training of 'tumor_seg' did not finish in the time allowed; it may still be running on the server.",
        ),
        (
            UnexpectedAnswerError("/info/ has no 'models'"),
            "The server gave an answer this module does not understand (/info/ has no 'models'); check that the "
            "address is an mri-label server.",
        ),
        (ValueError("max_epochs must be a whole number >= 1, got 0"), "max_epochs must be a whole number >= 1, got 0."),
        (KeyError("probabilities"), "Something unexpected went wrong (KeyError: 'probabilities')."),
        (RuntimeError("line one\nline two"), "Something unexpected went wrong (RuntimeError: line one line two)."),
    ],
)
def test_plain_sentence(error, sentence):
    assert plain_sentence(error) == sentence
    assert "\n" not in sentence and "Traceback" not in sentence
