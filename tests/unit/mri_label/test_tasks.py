"""The task registry (mri_label.tasks): each task's config declares everything about it, the registry reads it back,
and no other source file retypes a task's class or label names."""

import ast
import io
import tokenize
from pathlib import Path
from typing import Dict, Set

import pytest

from mri_label import tasks

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "apps" / "mri_app" / "lib" / "configs"
#: the source trees scanned for retyped names: the app, the CLI and the benchmarks (not benchmarks/reference_app,
#: another app; not slicer_module, the Slicer client, which knows no task and only shows what the server answers)
SCANNED = (ROOT / "apps" / "mri_app", ROOT / "mri_label", ROOT / "benchmarks")
#: (name, file) where a string equal to a class or label name is no declaration of it
NOT_DECLARATIONS = {
    ("tumor", "apps/mri_app/lib/infers/classifier.py"): "the gate's answer key 'tumor' (HTTP API) and its CAM class",
    ("tumor", "apps/mri_app/lib/infers/tumor_pipeline.py"): "the pipeline's answer key 'tumor' (HTTP API)",
    ("tumor", "benchmarks/latency.py"): "a tissue of the benchmark's synthetic head",
}


def test_the_registry_lists_every_config_module():
    assert tasks.task_names() == sorted(p.stem for p in CONFIGS.glob("*.py") if p.stem != "__init__")
    assert tasks.tasks_of_kind("classification") == ["dementia_stage", "sequence", "tumor_gate", "tumor_type"]
    assert tasks.tasks_of_kind("segmentation") == ["hippocampus", "tumor_seg"]
    with pytest.raises(ValueError, match="task must be one of"):
        tasks.config_class("no_such_task")


@pytest.mark.parametrize("task", tasks.task_names())
def test_the_registry_answers_what_the_config_declares(task):
    config = tasks.config_class(task)
    assert tasks.kind(task) == config.kind
    assert tasks.labels(task) == config.task_labels and tasks.labels(task) is not config.task_labels
    assert tasks.label_info(task) == {
        "task": task,
        "label_info": [{"name": n, "idx": v} for n, v in config.task_labels.items()],
    }
    assert tasks.evaluation(task) == config.evaluation
    assert tasks.caveat(task) == config.caveat
    assert tasks.uncertainty(task) == config.uncertainty and tasks.volume_only(task) is config.volume_only
    assert tasks.input_series(task) == config.input_series
    assert tasks.reads_networks_of(task) == tuple(config.reads_networks_of)
    if config.kind == "classification":
        assert tasks.classes(task) == tuple(config.classes)
        assert list(tasks.labels(task)) == list(config.classes)  # class index order
        assert tasks.positive_classes(task) == tuple(c for c in config.classes if c != config.negative_class)
        if config.negative_class is None:
            with pytest.raises(ValueError, match="no negative_class"):
                tasks.negative_class(task)
        else:
            assert tasks.negative_class(task) == config.negative_class
        assert tasks.mask_task(task) == config.mask_task
        assert tasks.folder_classes(task) == {**{c: c for c in config.classes}, **config.folder_classes}
    else:
        with pytest.raises(ValueError, match="labels, not classes"):
            tasks.classes(task)


def test_what_each_task_declares():
    """The declarations themselves: removing one from a config (so that its base's default applies) fails here."""
    assert {t: tasks.evaluation(t) for t in tasks.task_names()} == {
        "dementia_stage": "classification",
        "hippocampus": "segmentation+union",
        "sequence": "classification",
        "tumor_gate": "gate",
        "tumor_seg": "binary segmentation",
        "tumor_type": "classification",
    }
    assert {t: tasks.uncertainty(t) for t in tasks.task_names()} == {
        "dementia_stage": "entropy",
        "hippocampus": "epistemic",
        "sequence": "entropy",
        "tumor_gate": "entropy",
        "tumor_seg": "epistemic",
        "tumor_type": "entropy",
    }
    assert [t for t in tasks.task_names() if tasks.volume_only(t)] == ["hippocampus"]
    assert {t: tasks.input_series(t) for t in tasks.task_names() if tasks.input_series(t)} == {
        "dementia_stage": "t1",
        "hippocampus": "t1",
        "tumor_seg": "flair",
    }
    assert tasks.mask_task("tumor_gate") == ("tumor_seg", tasks.labels("tumor_seg"))
    assert [t for t in tasks.task_names() if tasks.mask_task(t)] == ["tumor_gate"]
    assert [t for t in tasks.task_names() if tasks.caveat(t)] == ["dementia_stage", "tumor_type"]
    assert {t: tasks.measures(t) for t in tasks.reported_tasks()} == {"hippocampus": "volumes", "tumor_seg": "lesions"}
    assert [t for t in tasks.task_names() if tasks.measures(t) is None] == [
        t for t in tasks.task_names() if t not in ("hippocampus", "tumor_seg")
    ]
    assert tasks.finding_class("tumor_gate", False) == tasks.classes("tumor_gate")[0]
    assert tasks.finding_class("tumor_gate", True) == tasks.classes("tumor_gate")[1]
    assert tasks.negative_class("tumor_type") == tasks.classes("tumor_type")[-1]
    assert tasks.positive_classes("tumor_type") == tasks.classes("tumor_type")[:-1]
    with pytest.raises(ValueError, match="not a two-class task"):
        tasks.finding_class("tumor_type", True)
    assert set(tasks.series_classes().values()) == set(tasks.classes(tasks.SEQUENCE))
    assert {"t1", "t1ce", "t2", "flair"} <= set(tasks.series_classes())
    gate_folders, type_folders = (tasks.config_class(t).folder_classes for t in ("tumor_gate", "tumor_type"))
    assert set(gate_folders) == set(type_folders)  # the same data set's class folders
    assert set(gate_folders.values()) == set(tasks.positive_classes("tumor_gate"))


@pytest.mark.parametrize("task", tasks.task_names())
def test_each_declaration_fits_the_task(task):
    from lib.activelearning import UNCERTAINTY
    from lib.task_config import EVALUATIONS

    config = tasks.config_class(task)
    assert config.evaluation in EVALUATIONS
    if config.kind == "classification":
        assert config.evaluation in ("classification", "gate")
        assert config.negative_class is None or config.negative_class in config.classes
        assert set(config.folder_classes.values()) <= set(config.classes)
    else:
        assert config.evaluation.startswith("segmentation") or config.evaluation == "binary segmentation"
        if config.evaluation == "binary segmentation":
            assert len(config.task_labels) == 1
    assert UNCERTAINTY[config.uncertainty][0] == config.kind
    assert config.volume_only is getattr(getattr(config, "infer_class", None), "volume_only", False)
    assert config.input_series is None or config.input_series in tasks.series_classes()
    if config.evaluation == "gate":
        assert len(config.classes) == 2 and config.classes[0] == config.negative_class
        segmenter, labels = config.mask_task
        assert tasks.kind(segmenter) == "segmentation" and labels.items() <= tasks.labels(segmenter).items()
    for other in config.reads_networks_of:
        assert other in tasks.task_names()
    if config.measures is not None:  # a report: measurements of a segmentation, lesions where it measures lesions
        from mri_label.core.change import MEASURES

        assert config.kind == "segmentation" and config.measures in MEASURES
        assert (config.measures == "lesions") == bool(getattr(config, "lesions", None))


# ------------------------------------------------------------------------------------------------- pipelines


def test_the_registry_lists_every_pipeline_module():
    assert tasks.pipeline_names() == sorted(
        p.stem for p in (CONFIGS / "pipelines").glob("*.py") if p.stem != "__init__"
    )
    assert tasks.pipeline_names() == ["tumor_pipeline"] and not set(tasks.pipeline_names()) & set(tasks.task_names())
    assert [n for n in [*tasks.task_names(), *tasks.pipeline_names()] if tasks.is_pipeline(n)] == ["tumor_pipeline"]
    with pytest.raises(ValueError, match="pipeline must be one of"):
        tasks.pipeline_class("tumor_seg")


def test_what_each_pipeline_declares():
    """The declarations themselves (moved out of main.py and mri_label/evaluate.py, behaviour unchanged)."""
    assert tasks.pipeline_stages("tumor_pipeline") == ("tumor_gate", "tumor_seg", "tumor_type")
    assert tasks.pipeline_required_stages("tumor_pipeline") == ("tumor_gate", "tumor_seg")
    assert tasks.pipeline_gate("tumor_pipeline") == "tumor_gate"
    assert tasks.pipeline_reference("tumor_pipeline") == "tumor_seg"
    assert {t: tasks.pipelines_running(t) for t in tasks.task_names() if tasks.pipelines_running(t)} == {
        "tumor_gate": ["tumor_pipeline"],
        "tumor_seg": ["tumor_pipeline"],
        "tumor_type": ["tumor_pipeline"],
    }
    served = {"tumor_gate", "tumor_seg"}
    declared = tasks.pipeline_class("tumor_pipeline")
    assert declared.describe(served) == "Tumor pipeline: tumor_gate per slice; tumor_seg only where the gate fires"
    assert declared.describe(served | {"tumor_type"}) == (
        "Tumor pipeline: tumor_gate per slice; tumor_seg and tumor_type only where the gate fires"
    )


@pytest.mark.parametrize("pipeline", tasks.pipeline_names())
def test_each_pipeline_declaration_fits_its_stages(pipeline):
    config = tasks.pipeline_class(pipeline)
    config.check(pipeline, tasks.task_names())
    assert tasks.evaluation(config.gate) == "gate"  # a two-class gate with an operating threshold
    assert tasks.kind(config.segmentation) == "segmentation" and not tasks.volume_only(config.segmentation)
    assert config.typing is None or tasks.kind(config.typing) == "classification"
    assert tasks.kind(config.reference) == "segmentation" and tasks.input_series(config.reference)
    assert config.reference in config.required() and "{gate}" in config.description and "{later}" in config.description


#: files that name tasks on purpose, exempt from :func:`test_no_source_names_a_pipeline_or_its_stages`
NAME_TASKS_ON_PURPOSE = {
    "benchmarks/load.py": "the load mix: fixed requests, label uploads and class labels on the sample data's images",
    "benchmarks/quality.py": "the public data sets each task is trained on (PLAN) and choices made per task",
    "benchmarks/train_throughput.py": "the synthetic training data it writes for each task",
    "mri_label/importers.py": "the tasks each data set format imports labels for",
    "mri_label/sample_data.py": "the tasks the synthetic sample data labels",
}


def test_no_source_names_a_pipeline_or_its_stages():
    """A pipeline's name or one of its stages' names spelled out as a string outside ``lib/configs`` (a stage list in
    the server, a checkpoint key in the infer, a cascade table in the evaluation or a benchmark) is a second
    declaration: ask :mod:`mri_label.tasks` (``pipeline_stages``, ``pipeline_reference``, ...) instead."""
    names = set(tasks.pipeline_names()) | {s for p in tasks.pipeline_names() for s in tasks.pipeline_stages(p)}
    found = {}
    for relative, path in _scanned_files():
        if relative.startswith("apps/mri_app/lib/configs/") or relative in NAME_TASKS_ON_PURPOSE:
            continue
        written = {v: sorted(lines) for v, lines in _string_literals(path).items() if v in names}
        if written:
            found[relative] = written
    assert not found, f"pipeline or stage names written outside lib/configs: {found}"


# ------------------------------------------------------------------------------------------- nothing retyped


def _string_literals(path: Path) -> Dict[str, Set[int]]:
    """Value -> line numbers of every plain string literal of a Python file (f-strings and docstrings included:
    a docstring equal to a bare class name would count, prose containing one does not)."""
    found: Dict[str, Set[int]] = {}
    for token in tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline):
        if token.type != tokenize.STRING:
            continue
        try:
            value = ast.literal_eval(token.string)
        except (ValueError, SyntaxError):  # an f-string: its literal parts are no declaration on their own
            continue
        if isinstance(value, str):
            found.setdefault(value, set()).add(token.start[0])
    return found


def _scanned_files():
    for tree in SCANNED:
        for path in sorted(tree.rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if not relative.startswith("benchmarks/reference_app/"):
                yield relative, path


def test_each_class_and_label_name_is_written_in_its_config_only():
    """A class or label name spelled out as a string anywhere but in the config of a task that has it is a second
    declaration (a retyped list, a branch on a class): read it from :mod:`mri_label.tasks` instead."""
    declared_by: Dict[str, Set[str]] = {}
    for task in tasks.task_names():
        for name in tasks.labels(task):
            declared_by.setdefault(name, set()).add(f"apps/mri_app/lib/configs/{task}.py")
    where: Dict[str, Dict[str, Set[int]]] = {}
    for relative, path in _scanned_files():
        for value, lines in _string_literals(path).items():
            if value in declared_by and (value, relative) not in NOT_DECLARATIONS:
                where.setdefault(value, {})[relative] = lines
    retyped = {
        name: {f: sorted(lines) for f, lines in files.items() if f not in declared_by[name]}
        for name, files in where.items()
        if set(files) - declared_by[name]
    }
    assert not retyped, f"class or label names written outside their task's config: {retyped}"
    # and each is written in (every) config that declares it: a class no config spells out was not found at all
    assert {name: set(files) for name, files in where.items()} == declared_by


def test_the_scan_sees_a_retyped_name(tmp_path):
    """Guards the scan itself: a tuple of class names and a comparison with one are found, prose is not."""
    source = tmp_path / "retyped.py"
    name = tasks.classes("tumor_type")[1]
    source.write_text(f'TYPES = ("{name}",)\nif kind == "{name}":\n    """{name} in prose"""\nx = f"{{kind}} {name}"\n')
    assert _string_literals(source)[name] == {1, 2}


def test_no_source_branches_on_a_task_name():
    """``task == "<name>"`` / ``task in ("<name>", ...)``: branch on what the config declares instead."""
    names = set(tasks.task_names())
    found = []
    for relative, path in _scanned_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), relative)):
            if not isinstance(node, ast.Compare):
                continue
            operands = [node.left, *node.comparators]
            subject = any(isinstance(o, ast.Name) and o.id.endswith("task") for o in operands)
            constants = {
                c.value
                for o in operands
                for c in ([o] if isinstance(o, ast.Constant) else getattr(o, "elts", []))
                if isinstance(c, ast.Constant)
            }
            if subject and constants & names:
                found.append(f"{relative}:{node.lineno}")
    assert not found, f"branches on a task name: {found}"
