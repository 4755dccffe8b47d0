"""Keep what clients send out of MONAI Label's endpoint logs: file names, ``params``/``label_info`` and
user names can carry patient or staff identifiers, so only ids (image, label, tag, model) are logged.

MONAI Label's endpoints and infer task log, at INFO, the uploaded file (its name), the save and infer params
and the user name; :class:`Redact` rewrites or drops those records on the loggers they come from.
"""

import logging
import re
from typing import Dict, List, Optional, Tuple

#: logger name -> (pattern, replacement; None drops the record); the first match applies.
RULES: Dict[str, List[Tuple[re.Pattern, Optional[str]]]] = {
    "monailabel.endpoints.datastore": [
        (
            re.compile(r"^Image: (.*?); File: .*$", re.S),
            r"Image: \1; upload received (file name and params not logged)",
        ),
        (re.compile(r"^Save Label params: .*$", re.S), None),
        (re.compile(r"^(.*) by .*$", re.S), r"\1"),
    ],
    "monailabel.endpoints.infer": [
        (re.compile(r"^Infer Request: .*$", re.S), "Infer Request received (params not logged)"),
    ],
    "monailabel.tasks.infer.basic_infer": [
        (
            re.compile(r"^Infer Request \(final\): \{.*?'model': '([^']*)', 'image': '([^']*)'.*$", re.S),
            r"Infer Request (final): model \1, image \2 (params not logged)",
        ),
        (re.compile(r"^Infer Request \(final\): .*$", re.S), "Infer Request (final) (params not logged)"),
    ],
    "monailabel.endpoints.activelearning": [
        (re.compile(r"^Active Learning Request: .*$", re.S), "Active Learning Request received (params not logged)"),
        (re.compile(r"^Next sample: \{'id': '([^']*)'.*$", re.S), r"Next sample: \1 (image info not logged)"),
        (re.compile(r"^Next sample: .*$", re.S), "Next sample chosen (image info not logged)"),
    ],
    "monailabel.utils.async_tasks.task": [
        (re.compile(r"^(\w+) request: .*$", re.S), r"\1 request queued (params not logged)"),
    ],
    "monailabel.tasks.train.basic_train": [
        (re.compile(r"^(.*Train Request \((?:input|final)\)): .*$", re.S), r"\1 (params not logged)"),
    ],
    "monailabel.endpoints.session": [
        (re.compile(r"^(Request Files|Session ID: [^;]*; Info): .*$", re.S), r"\1: (not logged)"),
        (re.compile(r"^\d+ => .*$", re.S), None),
    ],
}


class Redact(logging.Filter):
    """Rewrite or drop a logger's records by :data:`RULES`.

    Args:
        rules: (pattern, replacement) pairs; a None replacement drops the record.
    """

    def __init__(self, rules: List[Tuple[re.Pattern, Optional[str]]]):
        super().__init__()
        self.rules = rules

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for pattern, replacement in self.rules:
            if pattern.match(message):
                if replacement is None:
                    return False
                record.msg, record.args = pattern.sub(replacement, message), ()
                break
        return True


def install() -> None:
    """Attach the filters to MONAI Label's endpoint loggers (once per process: MONAI Label re-imports the app's
    ``lib`` package each time it loads the app, so a filter from an earlier import counts too)."""
    for name, rules in RULES.items():
        logger = logging.getLogger(name)
        if not any((type(f).__module__, type(f).__qualname__) == (__name__, "Redact") for f in logger.filters):
            logger.addFilter(Redact(rules))
