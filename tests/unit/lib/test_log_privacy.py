"""Log redaction (:mod:`lib.log_privacy`) of MONAI Label's active-learning, task-queue and training loggers: no
request value at any depth reaches the log, ids stay."""

import logging

import pytest

from lib import log_privacy

PATIENT = "DOE^JANE"
NESTED = f"{{'strategy': 'random', 'client': {{'patient_name': '{PATIENT}', 'mrn': ['12345']}}}}"
CASES = [
    (
        "monailabel.endpoints.activelearning",
        f"Active Learning Request: {NESTED}",
        "Active Learning Request received (params not logged)",
    ),
    (
        "monailabel.endpoints.activelearning",
        f"Next sample: {{'id': 'synth01_t2', 'weight': 1, 'info': {NESTED}}}",
        "Next sample: synth01_t2 (image info not logged)",
    ),
    ("monailabel.endpoints.activelearning", f"Next sample: {NESTED}", "Next sample chosen (image info not logged)"),
    (
        "monailabel.utils.async_tasks.task",
        f"Train request: {{'model': 'sequence', 'x': {NESTED}}}",
        "Train request queued (params not logged)",
    ),
    (
        "monailabel.tasks.train.basic_train",
        f"Train Request (input): {NESTED}",
        "Train Request (input) (params not logged)",
    ),
    (
        "monailabel.tasks.train.basic_train",
        f"0 - Train Request (final): {NESTED}",
        "0 - Train Request (final) (params not logged)",
    ),
]


@pytest.mark.parametrize("logger,message,logged", CASES)
def test_request_values_at_any_depth_stay_out_of_the_log(caplog, logger, message, logged):
    log_privacy.install()
    with caplog.at_level("INFO", logger=logger):
        logging.getLogger(logger).info(message)
    messages = [r.getMessage() for r in caplog.records if r.name == logger]
    assert messages == [logged] and PATIENT not in " ".join(messages) and "12345" not in " ".join(messages)
