"""The task registry: what each task's config (``apps/mri_app/lib/configs/<task>.py``) declares, read from the config
classes (imported, never instantiated: no network is built), for the CLI and the benchmarks. Nothing outside a task's
config names its classes or labels, or branches on its name: it asks here.

    from mri_label import tasks
    tasks.classes("tumor_type")        # ('glioma', ..., 'no_tumor')
    tasks.label_info("hippocampus")    # {"task": "hippocampus", "label_info": [{"name": ..., "idx": 1}, ...]}
    tasks.evaluation("tumor_gate")     # 'gate'
    tasks.pipeline_stages("tumor_pipeline")  # ('tumor_gate', 'tumor_seg', 'tumor_type')

The pipelines that chain tasks (``apps/mri_app/lib/configs/pipelines/<name>.py``) are no tasks: :func:`task_names`
leaves them out, :func:`pipeline_names` lists them, and their stages and reference task are asked here too.

Importing this module is cheap; the first question imports the app's configs (torch, MONAI), once per process.
"""

from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Type, overload

from mri_label.app_path import app_on_path

if TYPE_CHECKING:
    from lib.pipeline_config import PipelineConfig
    from lib.task_config import MRITaskConfig

#: The task whose classes name MRI sequences (image info ``sequence``; :func:`series_class`).
SEQUENCE = "sequence"


@lru_cache(maxsize=None)
def configs() -> Dict[str, Type["MRITaskConfig"]]:
    """Task name -> its config class, for every task of the app (:func:`lib.configs.discover`)."""
    app_on_path()
    import lib.configs  # noqa: E402  (the app's own package, importable once its folder is on sys.path)

    return lib.configs.discover()


def task_names() -> List[str]:
    """Every task of the app, by name."""
    return list(configs())


def config_class(task: str) -> Type["MRITaskConfig"]:
    """The config class of ``task``.

    Raises:
        ValueError: no such task.
    """
    return _one_of(configs(), task, "task")


def kind(task: str) -> str:
    """``"classification"`` or ``"segmentation"``."""
    return str(config_class(task).kind)


def tasks_of_kind(wanted: str) -> List[str]:
    """The tasks of one kind (``"classification"`` or ``"segmentation"``), by name."""
    return [t for t in configs() if kind(t) == wanted]


def classes(task: str) -> Tuple[str, ...]:
    """A classifier's class names, in class-index order.

    Raises:
        ValueError: no such task, or not a classifier.
    """
    if kind(task) != "classification":
        raise ValueError(f"{task} is a {kind(task)} task: it has labels, not classes")
    return tuple(getattr(config_class(task), "classes"))


def labels(task: str) -> Dict[str, int]:
    """Label name -> value: a segmenter's labels (values > 0), a classifier's class indices."""
    return dict(config_class(task).task_labels)


def label_info(task: str) -> Dict:
    """The ``final`` label info that names a segmentation mask as ``task``'s (what the datastore and the trainers
    read: :func:`lib.label_info.label_task`)."""
    return {"task": task, "label_info": [{"name": n, "idx": v} for n, v in labels(task).items()]}


def mask_task(task: str) -> Optional[Tuple[str, Dict[str, int]]]:
    """``(segmentation task, its labels)`` whose ``final`` masks give a classifier per-slice labels, or None."""
    declared = getattr(config_class(task), "mask_task", None)
    return (declared[0], dict(declared[1])) if declared else None


def evaluation(task: str) -> str:
    """How ``mri-label evaluate`` scores the task: a key of ``lib.task_config.EVALUATIONS``.

    Raises:
        ValueError: no such task, or its config declares no known evaluation.
    """
    from lib.task_config import EVALUATIONS  # noqa: E402  (the app's module, on sys.path once configs() ran)

    declared = str(config_class(task).evaluation)
    if declared not in EVALUATIONS:
        raise ValueError(f"{task} declares evaluation {declared!r}; known: {', '.join(EVALUATIONS)}")
    return declared


def caveat(task: str) -> Optional[str]:
    """The caveat printed with every evaluation of the task, or None."""
    return config_class(task).caveat


def reads_networks_of(task: str) -> Tuple[str, ...]:
    """Tasks whose networks this task's infer may read (loaded beside it)."""
    return tuple(config_class(task).reads_networks_of)


def negative_class(task: str) -> str:
    """A classifier's class that means "nothing found".

    Raises:
        ValueError: the task declares none.
    """
    declared = getattr(config_class(task), "negative_class", None)
    if declared is None:
        raise ValueError(f"{task} declares no negative_class")
    return declared


def positive_classes(task: str) -> Tuple[str, ...]:
    """A classifier's classes other than its negative one (all where it declares none), in class order."""
    return tuple(c for c in classes(task) if c != getattr(config_class(task), "negative_class", None))


def finding_class(task: str, found: bool) -> str:
    """The class of a two-class classifier with a negative class (a gate) for an image with or without a finding.

    Raises:
        ValueError: the task declares no negative class or has more than one other class.
    """
    positive = positive_classes(task)
    if len(positive) != 1 or len(classes(task)) != 2:
        raise ValueError(f"{task} is not a two-class task with a negative class: {classes(task)}")
    return positive[0] if found else negative_class(task)


def folder_classes(task: str) -> Dict[str, str]:
    """``mri-label import classfolders``: folder name -> class of a classifier; every class name maps to itself,
    then the config's ``folder_classes`` (dataset folder names) apply."""
    mapping = {c: c for c in classes(task)}
    mapping.update(getattr(config_class(task), "folder_classes", {}))
    return mapping


def series_classes() -> Dict[str, str]:
    """Series id (BraTS file suffix, LGG channel, a synthetic phantom's contrast) -> sequence class."""
    return dict(getattr(config_class(SEQUENCE), "series_classes"))


def series_class(series: str) -> str:
    """The sequence class of a series id (``"flair"``, ``"t1ce"``, ...).

    Raises:
        KeyError: the sequence config maps no such series.
    """
    return series_classes()[series]


def input_series(task: str) -> Optional[str]:
    """The series id a task reads (``None``: any)."""
    return config_class(task).input_series


def series_read_by(task: str) -> str:
    """The series id a task reads.

    Raises:
        ValueError: its config declares none (it reads any).
    """
    series = input_series(task)
    if series is None:
        raise ValueError(f"{task} declares no input_series")
    return series


def uncertainty(task: str) -> str:
    """The active-learning strategy that ranks the task's unlabelled images (``/activelearning/<name>``)."""
    return str(config_class(task).uncertainty)


def volume_only(task: str) -> bool:
    """Whether the task takes 3D volumes only."""
    return bool(config_class(task).volume_only)


def measures(task: str) -> Optional[str]:
    """What the task's results measure for a report and for change over time (its config's ``measures``: a key of
    :data:`mri_label.core.change.MEASURES`), or None: the task makes no report."""
    declared = getattr(config_class(task), "measures", None)
    return str(declared) if declared else None


def reported_tasks() -> List[str]:
    """The tasks whose config declares ``measures``: those ``mri-label report`` and ``output=report`` take."""
    return [t for t in configs() if measures(t)]


@lru_cache(maxsize=None)
def pipeline_configs() -> Dict[str, Type["PipelineConfig"]]:
    """Pipeline name -> its PipelineConfig class, for every pipeline of the app
    (:func:`lib.configs.pipelines.discover`)."""
    app_on_path()
    import lib.configs.pipelines  # noqa: E402  (the app's own package, importable once its folder is on sys.path)

    return lib.configs.pipelines.discover()


def pipeline_names() -> List[str]:
    """Every pipeline of the app, by name."""
    return list(pipeline_configs())


def is_pipeline(name: str) -> bool:
    """Whether ``name`` is a pipeline's (not a task's)."""
    return name in pipeline_configs()


def pipeline_class(name: str) -> Type["PipelineConfig"]:
    """The config class of pipeline ``name``.

    Raises:
        ValueError: no such pipeline.
    """
    return _one_of(pipeline_configs(), name, "pipeline")


def _one_of(known: Dict[str, Any], name: str, what: str) -> Any:
    """``known[name]``; ValueError naming ``what`` and the known names otherwise."""
    if name not in known:
        raise ValueError(f"{what} must be one of {', '.join(known)}, got {name!r}")
    return known[name]


def pipeline_stages(name: str) -> Tuple[str, ...]:
    """Every stage (task) of a pipeline, in the order they run: the gate, the segmentation, an optional typing."""
    return tuple(pipeline_class(name).stages())


def pipeline_required_stages(name: str) -> Tuple[str, ...]:
    """The stages a pipeline cannot run without (a server serves it where it serves these)."""
    return tuple(pipeline_class(name).required())


def pipeline_gate(name: str) -> str:
    """The gate of a pipeline: the stage that decides where the others run."""
    return str(pipeline_class(name).gate)


def pipeline_reference(name: str) -> str:
    """The task ``mri-label evaluate`` scores a pipeline beside (on the volumes of the series that task reads)."""
    return str(pipeline_class(name).reference)


def pipelines_running(task: str) -> List[str]:
    """The pipelines that run ``task`` as one of their stages."""
    return [name for name in pipeline_configs() if task in pipeline_stages(name)]


class LazyNames(Sequence):
    """Task names asked of the registry at first use, e.g. argparse ``choices`` that import the app's configs only
    when the option is parsed or its help shown, never when the command line is built."""

    def __init__(self, names: Callable[[], List[str]]):
        self._names = names

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> List[str]: ...

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, value: object) -> bool:
        return value in self._names()
