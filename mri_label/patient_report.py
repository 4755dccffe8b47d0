"""``mri-label report IMAGE --task TASK``: one A4 page on one image, for research (issue 20, item 5).

The task runs in process through the app's own infer task (what the server would answer), with the shipped
checkpoints unless ``--model-dir`` names a model folder; the app's :func:`lib.report.write_report` then draws the
page with :mod:`mri_label.core.report_page` (what the server's ``output=report`` answers, too). Three files are
written into the output folder: ``report.pdf`` (one A4 page), ``report.png`` (the same page) and ``report.json``
(the same numbers, and the page's text lines as printed).

The tasks it takes are those whose config declares ``measures`` (:func:`mri_label.tasks.reported_tasks`). The change
over time is not computed here: one file outside a datastore has no earlier study linked to it (the server links
the studies of a subject: ``docs/how-to/report.md``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Dict, Optional

from mri_label.core.change import not_computed
from mri_label.core.report_page import check_subject

NO_DATASTORE = (
    "the command runs on one image outside a datastore, so no earlier study is linked to it "
    "(the server's output=report on a datastore image compares with the subject's previous study)"
)
"""Why ``mri-label report`` gives no change over time."""


def check_arguments(task: str, age: Optional[float] = None, sex: Optional[str] = None) -> Optional[str]:
    """Check the report's arguments; return ``sex`` upper-cased (None when not given).

    Args:
        task: one of :func:`mri_label.tasks.reported_tasks`.
        age: years, within :data:`mri_label.core.report_page.AGE_RANGE`, or None.
        sex: ``F`` or ``M`` (any case), or None.

    Raises:
        ValueError: naming the parameter (``task``, ``age`` or ``sex``) that is wrong.
    """
    from mri_label import tasks

    known = tasks.reported_tasks()
    if task not in known:
        raise ValueError(f"task must be one of {', '.join(known)}, got {task!r}")
    return check_subject(age, sex)


def _image_name(path: str) -> str:
    return os.path.basename(os.path.normpath(path))


def default_out(image: str, task: str) -> str:
    """The output folder when none is given: ``<image name>-<task>-report`` in the working directory."""
    name = _image_name(image)
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".png", ".jpg", ".jpeg", ".tif"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return f"{name}-{task}-report"


def make_report(
    image: str,
    task: str,
    model_dir: Optional[str] = None,
    age: Optional[float] = None,
    sex: Optional[str] = None,
    out: Optional[str] = None,
    progress: Callable[[str], None] = print,
) -> Dict:
    """Run ``task`` on the local ``image`` in process and write the report into ``out``.

    Args:
        image: a NIfTI / NRRD file or a DICOM series folder (what the app's infer tasks read).
        task: one of :func:`mri_label.tasks.reported_tasks`.
        model_dir: a model folder (``<dir>/<task>/model.pt``, ``model.json`` beside it): its checkpoint answers,
            never a shipped one in its place. None: the shipped checkpoint (``--conf shipped_models`` /
            ``MRI_LABEL_SHIPPED_MODELS`` as the app reads them).
        age, sex: recorded on the page (0-120 years; ``F``/``M``).
        out: output folder (default :func:`default_out`).

    Returns:
        ``{"files": {"pdf", "png", "json"}, "report": the JSON}``.

    Raises:
        ValueError: a wrong argument (named), or the image refused by the infer task.
        FileNotFoundError: no such image, or no checkpoint for the task.
    """
    sex = check_arguments(task, age, sex)
    if not image or not os.path.exists(image):
        raise FileNotFoundError(f"image: no such file or folder {image!r}")
    if model_dir is not None and not os.path.isdir(model_dir):
        raise FileNotFoundError(f"model_dir: no such folder {model_dir!r}")
    from mri_label import tasks
    from mri_label.app_path import app_class

    MRIApp, folder = app_class()
    from lib.datastore import read_header, spatial_size  # noqa: E402  (the app's modules, after app_class)
    from lib.report import write_report  # noqa: E402

    out = out or default_out(image, task)
    with tempfile.TemporaryDirectory(prefix="mri-label-report-") as work:
        # an empty datastore and state folder of its own: nothing is written beside the image or in ~/.mri-label
        conf = {"models": task, "state_dir": os.path.join(work, "state"), "model_dir": os.path.join(work, "model")}
        if model_dir:
            conf.update(model_dir=os.path.abspath(model_dir), shipped_models="none")
        studies = os.path.join(work, "studies")
        os.makedirs(studies)
        app = MRIApp(folder, studies, conf)
        from lib import stock  # the app's adapter to MONAI Label's internals (importable after app_class)

        infer = stock.infers(app)[task]
        checkpoint = infer.get_path()
        if checkpoint is None:
            where = model_dir or "the shipped models (MRI_LABEL_SHIPPED_MODELS / --conf shipped_models)"
            raise FileNotFoundError(f"{task} has no checkpoint in {where}: pass --model-dir with a trained model")
        progress(f"{task}: running {os.path.basename(checkpoint)} of {os.path.dirname(checkpoint)} on {image}")
        try:
            if os.path.isfile(image):  # the server's checks of a file, from its header: readable, not too large
                size, _ = read_header(image, "the image", app.max_voxels)
                if getattr(infer, "volume_only", False) and len(spatial_size(size)) < 3:
                    raise ValueError(f"{task} needs a 3D volume, got a 2D image of size {size}")
            mask_file, result = infer({"image": os.path.abspath(image)})
        except Exception as error:  # the app's refusals (BadInput: HTTP status and message) and reader errors
            detail = getattr(error, "detail", None) or str(error).splitlines()[0]
            raise ValueError(f"image {image!r} was refused by {task}: {detail}") from None
        try:
            written = write_report(
                task,
                str(tasks.measures(task)),  # declared: check_arguments took only reported tasks
                os.path.abspath(image),
                mask_file,  # a file in the input's grid, or (a DICOM folder's answer) the array itself
                result,
                checkpoint,
                out,
                _image_name(image),
                age=age,
                sex=sex,
                change=not_computed(NO_DATASTORE),
            )
        finally:
            if isinstance(mask_file, (str, os.PathLike)):  # a temporary file of the infer: removed
                Path(mask_file).unlink(missing_ok=True)
    return written
