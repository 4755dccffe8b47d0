"""Slicer-free parts of the MRI Label module: HTTP client, result parsing, the measurements' display rows and the
report's study params, overlay and grid geometry, errors, the background job runner, model history and review, logic.

Nothing here imports ``slicer``, ``vtk``, ``qt`` or ``ctk``: it runs (and is tested) in plain Python, and
in Slicer's own Python with only the standard library and numpy.
"""

from .errors import NO_CAM_SENTENCE, plain_sentence
from .logic import NextSample, ReviewSample, ServerLogic, TaskInfo, TrainingRun

__all__ = [
    "NO_CAM_SENTENCE",
    "NextSample",
    "ReviewSample",
    "ServerLogic",
    "TaskInfo",
    "TrainingRun",
    "plain_sentence",
]
