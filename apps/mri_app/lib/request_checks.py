"""Checks on what a request asks for, before any work: JSON bodies, infer ``params`` and train ``params``.

MONAI Label merges a request's ``params`` into what its tasks read, so ``params`` can change *what* is read or
written: ``{"image": "/a/server/file"}`` overrides the image id checked before, ``{"save_label": true,
"label_tag": "final"}`` writes a label, ``{"device": "meta"}``, ``{"logging": 5}`` or ``{"result_extension":
".json"}`` end in a 500. Here each such key is refused, validated or role-checked (:func:`check_infer_params`,
:func:`check_train_params`), and JSON deeper than :data:`MAX_JSON_DEPTH` is refused before it can reach the
datastore index (whose next load would fail). Problems raise :class:`RequestError` (a ``ValueError`` naming the
parameter and value, with the HTTP status it is answered with: :func:`lib.errors.refused`).
"""

import json
import math
import re
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

#: Deepest nesting accepted in any JSON a client sends (params, info); far above what any client sends.
MAX_JSON_DEPTH = 20
#: Longest image id, label tag or run name (a file name is at most 255 bytes; extensions and prefixes go on it).
MAX_NAME_LENGTH = 128
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

#: Infer params that name what is read (only the query's ``image=``/upload/session may).
INFER_FORBIDDEN = ("image", "model", "label", "session", "description", "bundle_path")
RESULT_EXTENSIONS = (".nii.gz", ".nii", ".nrrd")
RESULT_DTYPES = ("uint8", "int8", "uint16", "int16", "int32", "float16", "float32", "float64")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Train params that name what is trained or where (the route's task decides).
TRAIN_FORBIDDEN = ("model", "bundle_path", "al_run")
MAX_EPOCHS = 100000
#: Default work budget of one infer request, in voxels the networks see (``--conf max_infer_voxels``): 512 slices
#: at 256 x 256 for a slice-wise task, or a 320 mm cube at 1 mm for a 3D one.
DEFAULT_MAX_INFER_VOXELS = 512 * 256 * 256


class RequestError(ValueError):
    """A request value refused; ``status`` is the HTTP answer (422 unless said otherwise)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, ``{}`` or ``[]`` 1); iterative, so any depth is measured."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_depth(value: Any, what: str, max_depth: int = MAX_JSON_DEPTH) -> None:
    """RequestError unless ``value`` nests at most ``max_depth`` levels."""
    if max_depth < 1:
        raise ValueError(f"max_depth must be >= 1, got {max_depth}")
    if json_depth(value) > max_depth:
        raise RequestError(f"{what} nests deeper than {max_depth} levels")


def parse_object(text: Optional[str], what: str, max_depth: int = MAX_JSON_DEPTH) -> Dict[str, Any]:
    """``text`` parsed as a JSON object of at most ``max_depth`` levels (an empty text is ``{}``).

    Raises:
        RequestError: not JSON, not an object, or too deep (also when too deep for Python's own parser).
    """
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        parsed = None
        if text.count("[") + text.count("{") > max_depth and text.lstrip().startswith("{"):
            raise RequestError(f"{what} nests deeper than {max_depth} levels") from None
    if not isinstance(parsed, dict):
        raise RequestError(f"{what} must be a JSON object, got {text[:80]!r}")
    check_depth(parsed, what, max_depth)
    return parsed


def check_name(value: Any, what: str) -> str:
    """``value`` if it is a plain name (letters, digits, '.', '_', '-'; no '..'; at most :data:`MAX_NAME_LENGTH`)."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value or len(value) > MAX_NAME_LENGTH:
        shown = value[:80] if isinstance(value, str) else value
        raise RequestError(
            f"{what} {shown!r} must be a plain name: letters, digits, '.', '_' and '-', "
            f"at most {MAX_NAME_LENGTH} characters, no '..' or path"
        )
    return value


def check_managed(keys: Iterable[str], managed: Iterable[str], what: str) -> None:
    """RequestError naming the server-managed keys among ``keys``."""
    found = sorted(set(keys) & set(managed))
    if found:
        raise RequestError(f"{what} key(s) {found} are managed by the server (class labels go through /classlabel)")


def _flag(params: Mapping[str, Any], key: str) -> bool:
    value = params.get(key, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise RequestError(f"params {key} must be true or false, got {value!r}")


def check_device(value: Any, gpus: int) -> None:
    """RequestError unless ``value`` is ``cpu``, or ``cuda``/``cuda:N`` for one of the ``gpus`` GPUs here."""
    match = re.fullmatch(r"cuda(?::(\d+))?", value) if isinstance(value, str) else None
    if value == "cpu" or (match and gpus and int(match.group(1) or 0) < gpus):
        return
    choices = ["cpu"] + ([f"cuda:{i}" for i in range(gpus)] if gpus else [])
    raise RequestError(f"params device {value!r} is not a device of this server; devices: {choices}")


def check_infer_params(params: Mapping[str, Any], may_write_labels: bool, from_datastore: bool, gpus: int = 0) -> None:
    """Refuse infer ``params`` that change what is read or written, or that the tasks cannot use.

    Args:
        params: the request's parsed ``params``.
        may_write_labels: whether the caller's role may save labels (annotator or above).
        from_datastore: whether the image is a datastore id (not an upload or a session).
        gpus: CUDA devices on this server.

    Raises:
        RequestError: 422 for a key or value refused, 403 for ``save_label`` by a role that may not save labels.
    """
    forbidden = sorted(set(params) & set(INFER_FORBIDDEN))
    if forbidden:
        raise RequestError(f"params may not set {forbidden}: the image comes from image=, an upload or session_id")
    if "device" in params:
        check_device(params["device"], gpus)
    if "logging" in params and (not isinstance(params["logging"], str) or params["logging"].upper() not in LOG_LEVELS):
        raise RequestError(f"params logging {params['logging']!r} is not a log level; levels: {list(LOG_LEVELS)}")
    if "result_extension" in params and params["result_extension"] not in RESULT_EXTENSIONS:
        raise RequestError(
            f"params result_extension {params['result_extension']!r} is not an image format; "
            f"formats: {list(RESULT_EXTENSIONS)}"
        )
    if "result_dtype" in params and params["result_dtype"] not in RESULT_DTYPES:
        raise RequestError(f"params result_dtype {params['result_dtype']!r} is not one of {list(RESULT_DTYPES)}")
    for key in ("timeout",):
        value = params.get(key)
        if key in params and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600):
            raise RequestError(f"params {key} must be a number of seconds in (0, 3600], got {value!r}")
    if "label_tag" in params:
        check_name(params["label_tag"], "params label_tag")
    if _flag(params, "save_label"):
        if not may_write_labels:
            raise RequestError(
                'params save_label writes a label: role "monailabel-annotator" (or a higher one) is required',
                status=403,
            )
        if not from_datastore:
            raise RequestError("params save_label needs a datastore image (image=<id>), not an upload or session")


#: Folders of a task's model folder that are not training runs (``history``: :mod:`lib.history`'s archives).
RESERVED_RUN_NAMES = ("history",)


def check_train_params(params: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
    """Refuse train ``params`` that name another task or a path, or that do not match their default's type.

    Args:
        params: the request's params.
        defaults: the train task's config (name -> default value); a value given for one of these keys must be
            of its type (a whole number for an int, a number for a float, true/false for a bool).

    Raises:
        RequestError: the first problem, naming the parameter and value.
    """
    forbidden = sorted(set(params) & set(TRAIN_FORBIDDEN))
    if forbidden:
        raise RequestError(f"params may not set {forbidden}: the task is the one in the URL")
    check_depth(params, "params")
    if "name" in params:
        check_name(params["name"], "params name (the run's folder)")
        if params["name"] in RESERVED_RUN_NAMES:
            raise RequestError(f"params name {params['name']!r} is reserved: the task's model history lies there")
    if "max_epochs" in params:
        value = params["max_epochs"]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_EPOCHS:
            raise RequestError(f"params max_epochs must be an integer in [1, {MAX_EPOCHS}], got {value!r}")
    if "device" in params and not isinstance(params["device"], str):
        raise RequestError(f"params device must be a device name like 'cuda' or 'cpu', got {params['device']!r}")
    for key, value in params.items():
        default = defaults.get(key)
        if default is None or value is None:
            continue
        if isinstance(default, bool):
            if not isinstance(value, bool) and str(value).strip().lower() not in ("true", "false", "1", "0"):
                raise RequestError(f"params {key} must be true or false, got {value!r}")
        elif isinstance(default, int):
            if isinstance(value, bool) or not (
                isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit())
            ):
                raise RequestError(f"params {key} must be an integer, got {value!r}")
        elif isinstance(default, float):
            try:
                number = float(value) if not isinstance(value, bool) else float("nan")
            except (TypeError, ValueError):
                number = float("nan")
            if number != number:
                raise RequestError(f"params {key} must be a number, got {value!r}")


def infer_cost(size: Sequence[int], spacing_mm: Sequence[float], config) -> int:
    """Voxels a task's network sees for an image of ``size`` (spatial, ``(W, H[, D])``) and ``spacing_mm``.

    A 3D task (``config.spacing``) resamples the volume to its spacing first; a slice-wise task (``config.size``)
    resizes every slice to ``size x size``, so its cost grows with the slice count whatever the slices' own size.

    Raises:
        ValueError: ``size`` empty or holding a non-positive number.
    """
    size = [int(n) for n in size]
    if not size or min(size) < 1:
        raise ValueError(f"size must hold positive numbers, got {size}")
    target = getattr(config, "spacing", None)
    if target is not None and len(size) >= 3:
        spacing = [abs(float(s)) if math.isfinite(float(s)) and s else 1.0 for s in list(spacing_mm)[:3]]
        spacing += [1.0] * (3 - len(spacing))  # a header without (finite, non-zero) spacing: 1 mm
        return math.prod(max(1, math.ceil(n * s / t)) for n, s, t in zip(size[:3], spacing, target))
    side = getattr(config, "size", None)
    if side:
        slices = size[2] if len(size) > 2 else 1
        return slices * int(side) * int(side)
    return math.prod(size)
