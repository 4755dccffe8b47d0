"""Quality on real brain MRI: import each public data set, train each task on its train subjects, evaluate on
its held-out test subjects, and print one table.

    .venv/bin/python benchmarks/quality.py [--data ../shared/data] [--work /tmp/mri-quality] [--tasks ...]
                                           [--epochs-scale 1.0] [--splits grouped random] [--previous git:7851caa]
                                           [--shipped]

``--shipped`` trains nothing: it scores the shipped checkpoints (``apps/mri_app/shipped``, their declared
inference options) on the same held-out test subjects and prints the same table, with the epochs and training
minutes their ``model.json`` records: the README's held-out table.

Data (see ``../shared/data/README.md``): ``sequence`` on every source with a contrast: BraTS 2018 (every subject
has every contrast), the LGG FLAIR and T1 channels, the 2D slices with skull of ``mri_sequence_2d``, the Alzheimer T1
slices and the Decathlon T1 crops; ``dementia_stage`` on the Alzheimer JPEG set (no patient ids: near-duplicate
groups stand in for subjects); ``tumor_gate`` and ``tumor_seg`` on LGG and BraTS FLAIR; ``hippocampus`` on Decathlon
Task04. A task whose data is absent is skipped with a line saying so.
Subject splits are ``split.json`` of each datastore (70/15/15 by subject, seed 0; with ``--shipped``, pinned to the
subjects each card names: ``mri_label.core.splits.pin_split``). Epoch budgets (each task's
declared ``recipe``, ``mri_label.recipes``) are for this 2-core CPU; ``--epochs-scale`` multiplies them.

``tumor_type`` (brain tumor 4-class JPEG set, imported with ``classfolders --task tumor_type``) gives TWO rows, each
trained and evaluated on its own split, side by side:

* ``grouped``: the standard ``split.json``, whose subjects are the importer's near-duplicate groups (16x16 difference
  hash, Hamming distance <= 4 of 256 bits, union-find), so near-identical slices stay on one side. On the 800
  images of ``brain_tumor_4class/Training`` this joins 40 images into 16 groups (35 of them at distance 0 from
  another: copies); the nearest-neighbour distances then jump to 15-30 bits, where 8 or 12 bits would add only 2
  groups: the groups are copies, not patients, so even this split may stay optimistic.
* ``random``: an image-level random split, the figure a random split would report (optimistic: near-duplicates of
  test images are trained on). A model trained on the grouped split has seen some of its test images, so it is
  trained again: on a copy of the datastore (``<work>/tumor_type/datastore_random``) whose images carry
  ``subject`` = their image id (``group`` kept), so that the trainers' ordinary ``split.json`` of the copy is the
  image-level split; no trainer change is needed. It is evaluated with ``evaluate(split_kind="random")`` on the
  imported datastore (``split_random.json``: same ids, seed and fractions), checked to be the same partition.

Both rows report accuracy with macro-F1 beside it.

The printed table has one row per task and source of its test images (``info["source"]``, see
``mri_label.sources``) below the task's overall row, with the per-class recall (classifiers) or the per-label Dice
(segmenters) of that row, and ``previous shipped``: the held-out figure that the shipped ``model.json`` of the task
recorded (``metrics.held_out.metrics``; per source where it holds ``breakdown.source``) in ``--previous``: a folder
of ``<task>/model.json`` files, or ``git:<commit>`` for ``apps/mri_app/shipped`` at that commit (default
``git:7851caa``, the shipped models before the per-source evaluation). ``tumor_gate`` also shows recall and
specificity at the shipped and at the recall-targeted threshold. For each pipeline (``lib/configs/pipelines``) whose
required stages all ran (``tumor_pipeline``: ``tumor_gate`` and ``tumor_seg``), two rows follow with the stages'
just-trained models in one model folder, as a server holds them: the gate as served (``tumor_gate`` reads
``tumor_seg``'s network, see ``lib/configs/tumor_gate.py``; the row above it is the gate's own classifier) and the
pipeline, the cascade on the test volumes of its reference task's datastore (FLAIR for ``tumor_seg``), beside the
reference task alone on the same volumes.

The metric of each row comes from the task's declared ``evaluation`` (:func:`metric_of`: accuracy for a classifier,
the Dice of its one label or of the union of its labels for a segmenter, a pipeline's its reference's), except where
:data:`HEADLINE_METRIC` chooses otherwise.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "apps" / "mri_app"))

# task -> (imports as (format, folder under --data, classfolders task), data label); epochs and extra train
# parameters are the recipe of ``mri_label.recipes`` (shared with ``mri-label train``)
PLAN: Dict[str, Tuple[List[Tuple[str, str, Optional[str]]], str]] = {
    "sequence": (
        [
            ("brats", "brats2018", None),
            ("lgg", "lgg_kaggle_3m/kaggle_3m", None),
            ("classfolders", "mri_sequence_2d", "sequence"),
            ("classfolders", "alzheimer_4class/train", "sequence"),
            ("decathlon", "Task04_Hippocampus", None),
        ],
        "BraTS 2018 + LGG channels + 2D slices with skull + Alzheimer T1 slices + Decathlon T1 crops",
    ),
    "dementia_stage": ([("classfolders", "alzheimer_4class/train", "dementia_stage")], "Alzheimer 4-class JPEG"),
    "tumor_gate": (
        [("lgg", "lgg_kaggle_3m/kaggle_3m", None), ("brats", "brats2018", None)],
        "LGG + BraTS FLAIR (per slice)",
    ),
    "tumor_seg": ([("lgg", "lgg_kaggle_3m/kaggle_3m", None), ("brats", "brats2018", None)], "LGG + BraTS FLAIR"),
    "hippocampus": ([("decathlon", "Task04_Hippocampus", None)], "Decathlon Task04"),
    "tumor_type": ([("classfolders", "brain_tumor_4class/Training", "tumor_type")], "Brain tumor 4-class JPEG"),
}
#: tasks evaluated on more than the grouped (subject) split: each kind is its own training and row
SPLITS = {"tumor_type": ("grouped", "random")}
#: a task's headline metric where it is chosen, not its evaluation's (:func:`metric_of`): dementia_stage's four stages
#: are very unequal in number (ModerateDemented is rare), so its figure is the balanced accuracy
HEADLINE_METRIC = {"dementia_stage": "balanced_accuracy"}


def metric_of(task: str) -> str:
    """The ``headline`` key (``mri_label.evaluate.headline``) a task's row shows: :data:`HEADLINE_METRIC`'s, else from
    its config's ``evaluation``: ``accuracy`` for a classifier, ``dice_<label>_mean`` of the union of its labels for
    ``segmentation+union`` and of its (first) label otherwise; a pipeline's: its reference task's."""
    from mri_label import tasks
    from mri_label.metrics import MERGED

    if tasks.is_pipeline(task):
        return metric_of(tasks.pipeline_reference(task))
    if task in HEADLINE_METRIC:
        return HEADLINE_METRIC[task]
    if tasks.kind(task) == "classification":
        return "accuracy"
    label = MERGED if tasks.evaluation(task) == "segmentation+union" else next(iter(tasks.labels(task)))
    return f"dice_{label}_mean"


class _MetricOf(dict):
    """Task -> :func:`metric_of`, asked when first looked up."""

    def __missing__(self, task: str) -> str:
        self[task] = metric_of(task)
        return self[task]


METRIC: Dict[str, str] = _MetricOf()
#: ``--previous`` default: the shipped models' cards at the commit before the per-source evaluation.
PREVIOUS = "git:7851caa"
SHIPPED = "apps/mri_app/shipped"
#: ``--shipped``: the app option that serves the shipped checkpoints from an empty model folder
SHIPPED_CONF = {"shipped_models": str(ROOT / SHIPPED)}


def build(task: str, data: Path, work: Path) -> Path:
    """The task's datastore under ``work`` (imported once, then reused)."""
    from mri_label.core.splits import ensure_split
    from mri_label.importers import import_dataset

    store = work / task / "datastore"
    if not (store / "datastore_v2.json").exists():
        for fmt, folder, folder_task in PLAN[task][0]:
            import_dataset(fmt, data / folder, store, task=folder_task)
    ensure_split(store)
    return store


def image_level_copy(store: Path, dest: Path) -> Path:
    """A copy of the datastore ``store`` at ``dest`` (rebuilt) whose images are their own subjects
    (``info["subject"]`` = image id; the near-duplicate ``group`` is kept), so that its ``split.json``, which the
    trainers use, is a random image-level split. The source's split files are not copied."""
    from mri_label.core.splits import ensure_split

    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(store, dest, ignore=shutil.ignore_patterns("split*.json", "*.lock"))
    path = dest / "datastore_v2.json"
    content = json.loads(path.read_text())
    for image_id, entry in (content.get("objects") or {}).items():
        entry.setdefault("image", {}).setdefault("info", {})["subject"] = image_id
    path.write_text(json.dumps(content, indent=2))
    ensure_split(dest)
    return dest


def _result(
    task: str,
    store: Path,
    train_store: Path,
    models: Path,
    out: Path,
    report: Dict,
    label: Optional[str] = None,
    **run: Any,
) -> dict:
    """One task's result row data: its data label (``label``, else :data:`PLAN`'s), subjects per split side (of
    ``train_store``), the headline metric of ``report`` (an :func:`mri_label.evaluate.evaluate` summary), the files,
    and ``run`` (split_kind, epochs, train_min, device)."""
    from mri_label.core.splits import ensure_split

    label, metric = label or PLAN[task][1], METRIC[task]
    if task in SPLITS:
        label += {"grouped": ", grouped split (near-duplicate groups)", "random": ", RANDOM image split (optimistic)"}[
            run["split_kind"]
        ]
        metric += f" (macro-F1 {report['headline']['macro_f1']:.2f})"
    sides = ensure_split(train_store)["subjects"].values()
    return {
        "task": task,
        "data": label,
        "subjects": "/".join(str(sum(1 for s in sides if s == side)) for side in ("train", "val", "test")),
        "metric": metric,
        "value": report["headline"][METRIC[task]],
        **run,
        "report": str(out / "report.md"),
        "headline": report["headline"],
        "metrics_file": str(out / "metrics.json"),
        "model_dir": str(models),
        "store": str(store),
    }


def run(task: str, data: Path, work: Path, scale: float, split_kind: str = "grouped", shipped: bool = False) -> dict:
    """Import ``task``'s data under ``work`` (once), train it with its recipe (epochs × ``scale``) on the
    ``split_kind`` split and evaluate it on the held-out test subjects. ``shipped``: train nothing, evaluate the
    shipped checkpoint (grouped split only; epochs, minutes and device from its ``model.json``)."""
    from main import MRIApp
    from mri_label import tasks
    from mri_label.core.splits import ensure_split, pin_split
    from mri_label.evaluate import evaluate
    from mri_label.recipes import recipe_of, train_request
    from mri_label.train import run_record, update_card

    missing = [folder for _, folder, _ in PLAN[task][0] if not (data / folder).exists()]
    if missing:
        return {"task": task, "skipped": f"data absent: {', '.join(str(data / m) for m in missing)}"}
    store = build(task, data, work)
    if shipped:
        if split_kind != "grouped":
            raise ValueError(f"shipped checkpoints were trained on the grouped split, got split_kind={split_kind!r}")
        models, out = work / task / "model_none", work / task / "evaluation_shipped"
        shutil.rmtree(models, ignore_errors=True)
        models.mkdir(parents=True)  # empty: the app serves the shipped checkpoint
        training = json.loads((ROOT / SHIPPED / task / "model.json").read_text()).get("training") or {}
        pin_split(store, training.get("split"))  # the test subjects its card names, whatever the import order
        report = evaluate(
            task,
            str(store),
            model_dir=str(models),
            out=str(out),
            progress=lambda m: None,
            conf=SHIPPED_CONF,
        )
        # a task whose infer reads another's network (the gate: tumor_seg's) answers as served, not with its own
        read = tasks.reads_networks_of(task)
        label = f"{PLAN[task][1]}, as served: reads {', '.join(read)}" if read else None
        return _result(
            task,
            store,
            store,
            models,
            out,
            report,
            label=label,
            split_kind=split_kind,
            epochs=training.get("epochs"),
            train_min=training.get("minutes"),
            device=training.get("device"),
        )
    suffix = "" if split_kind == "grouped" else f"_{split_kind}"
    train_store = store if split_kind == "grouped" else image_level_copy(store, work / task / f"datastore{suffix}")
    if (
        split_kind == "random"
        and ensure_split(train_store)["subjects"] != ensure_split(store, unit="image")["subjects"]
    ):
        raise RuntimeError(f"{train_store}/split.json differs from {store}/split_random.json")
    models, out = work / task / f"model{suffix}", work / task / f"evaluation{suffix}"
    shutil.rmtree(models, ignore_errors=True)
    app = MRIApp(
        str(ROOT / "apps" / "mri_app"),
        str(train_store),
        {"models": task, "model_dir": str(models), "shipped_models": "none"},
    )
    started = time.time()
    request = train_request(task, max(1, round(recipe_of(task)["max_epochs"] * scale)), name="quality")
    stats = app.train(request)
    train_s = time.time() - started
    report = evaluate(
        task, str(store), model_dir=str(models), out=str(out), progress=lambda m: None, split_kind=split_kind
    )
    update_card(
        models / task / "model.json", run_record(app.datastore(), str(train_store), train_s / 60, request, report)
    )
    return _result(
        task,
        store,
        train_store,
        models,
        out,
        report,
        split_kind=split_kind,
        epochs=stats.get("epoch"),
        train_min=train_s / 60,
        device=str(app._trainers[task]._context.device),
    )


def run_pipeline(pipeline: str, done: Dict[str, dict], work: Path, shipped: bool = False) -> List[dict]:
    """With the just-trained required stages of ``pipeline`` (``done``: task -> its result of :func:`run`) in one
    model folder, as a server holds them: the gate as served (``tumor_gate`` reads ``tumor_seg``'s network,
    ``--conf tumor_gate_source``) on the gate's test subjects, and the pipeline on the test volumes of its reference
    task's datastore (of the series that task reads) beside the reference task alone (``mri_label.evaluate``).
    ``shipped``: the shipped checkpoints of the stages instead (nothing was trained)."""
    from mri_label import tasks
    from mri_label.evaluate import evaluate

    gate, reference = tasks.pipeline_gate(pipeline), tasks.pipeline_reference(pipeline)
    models = work / pipeline / "model"
    shutil.rmtree(models, ignore_errors=True)
    models.mkdir(parents=True)
    for task in [] if shipped else tasks.pipeline_required_stages(pipeline):
        shutil.copytree(Path(done[task]["model_dir"]) / task, models / task)
    conf = SHIPPED_CONF if shipped else None
    read = [t for t in tasks.reads_networks_of(gate) if t in tasks.pipeline_required_stages(pipeline)]
    series = tasks.input_series(reference)
    volumes = f"{tasks.series_class(series)} volumes" if series else "volumes"
    rows = []
    for task, store, data in (
        (
            gate,
            done[gate]["store"],
            f"{done[gate]['data']}, as served" + (f": reads {', '.join(read)}" if read else ""),
        ),
        (pipeline, done[reference]["store"], f"{done[reference]['data']} ({volumes}), gate as served"),
    ):
        out = work / pipeline / f"evaluation_{task}"
        report = evaluate(task, store, model_dir=str(models), out=str(out), progress=lambda m: None, conf=conf)
        head = report["headline"]
        rows.append(
            {
                "task": task,
                "data": data,
                "subjects": f"-/-/{report['n_subjects']}",
                "metric": METRIC[task],
                "value": head[METRIC[task]],
                "split_kind": "grouped",
                "epochs": None,
                "train_min": None,
                "device": done[reference]["device"],
                "report": str(out / "report.md"),
                "headline": head,
                "metrics_file": str(out / "metrics.json"),
            }
        )
    return rows


def previous_metrics(task: str, previous: str) -> Optional[Dict]:
    """``metrics.held_out.metrics`` of ``task``'s ``model.json`` in ``previous`` (a folder of ``<task>/model.json``, or
    ``git:<commit>`` for ``apps/mri_app/shipped`` at that commit); None where there is no such card or figure."""
    if previous.startswith("git:"):
        shown = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{previous[4:]}:{SHIPPED}/{task}/model.json"],
            capture_output=True,
            text=True,
            check=False,
        )
        text = shown.stdout if shown.returncode == 0 else None
    else:
        path = Path(previous) / task / "model.json"
        text = path.read_text(encoding="utf-8") if path.is_file() else None
    if text is None:
        return None
    return ((json.loads(text).get("metrics") or {}).get("held_out") or {}).get("metrics")


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _detail(task: str, metrics: Dict, group: Optional[str]) -> str:
    """Per-class recall (classifiers) or per-label Dice (segmenters) of the whole test set (``group`` None) or of one
    source, from ``metrics.json``'s metrics; the gate adds its two operating points, the pipeline its reference."""
    part = metrics if group is None else metrics["breakdown"]["source"][group]
    if "per_class" in metrics:
        recall = {c: v["recall"] for c, v in metrics["per_class"].items()} if group is None else part["recall"]
        text = "recall " + ", ".join(f"{c} {_fmt(r, 2)}" for c, r in recall.items())
        points = metrics.get("operating_points") if group is None else part.get("operating_points")
        for name, point in (points or {}).items():
            text += (
                f"; at {name} t={_fmt(point['threshold'], 2)}: recall {_fmt(point['recall'], 2)}, "
                f"spec. {_fmt(point['specificity'], 2)}"
            )
        return text
    dice = (
        {n: s["dice"]["mean"] for n, s in metrics["summary"].items()}
        if group is None
        else {n: d["mean"] for n, d in part["dice"].items()}
    )
    text = "Dice " + ", ".join(f"{n} {_fmt(v, 2)}" for n, v in dice.items())
    comparison = metrics.get("comparison")
    if comparison and group is None:
        verdict = "within" if comparison["within_tolerance"] else "NOT within"
        text += (
            f"; {comparison['reference_task']} alone {_fmt(comparison['dice_reference_mean'], 2)}, difference "
            f"{_fmt(comparison['mean_difference'], 3)} ({verdict} {comparison['tolerance']})"
        )
    elif comparison:
        text += (
            f"; {comparison['reference_task']} alone "
            f"{_fmt(comparison['reference_breakdown']['source'][group]['dice'][comparison['label']]['mean'], 2)}"
        )
    return text


def table_rows(result: Dict, metrics: Dict, previous: Optional[Dict]) -> List[Dict]:
    """The printed rows of one task run: the overall row, then one per source of its test images.

    Args:
        result: a :func:`run` / :func:`run_pipeline` result (``headline`` from ``mri_label.evaluate``).
        metrics: the ``metrics`` of that run's ``metrics.json``.
        previous: :func:`previous_metrics` of the task (None: no shipped figure).
    """
    metric, previous = METRIC[result["task"]], previous or {}
    by_source = result["headline"].get("breakdown", {}).get("source", {})
    previous_source = (previous.get("breakdown") or {}).get("source") or {}
    rows = [
        {**result, "group": "all", "detail": _detail(result["task"], metrics, None), "previous": previous.get(metric)}
    ]
    for group, figures in by_source.items():
        rows.append(
            {
                **result,
                "group": f"source: {group} ({figures['n']})",
                "value": figures.get(metric),
                "detail": _detail(result["task"], metrics, group),
                "previous": (previous_source.get(group) or {}).get(metric),
            }
        )
    return rows


def print_table(rows: List[Dict]) -> None:
    """The Markdown table of :func:`table_rows` rows (a skipped task: one line saying why)."""
    print(
        "| task | data | rows (test images) | subjects train/val/test | metric (test subjects) | value "
        "| previous shipped "
        "| per class / per label | epochs | train min | device |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['task']} | {r['skipped']} | | | | | | | | | |")
            continue
        print(
            f"| {r['task']} | {r['data']} | {r['group']} | {r['subjects']} | {r['metric']} | {_fmt(r['value'])} | "
            f"{_fmt(r['previous'])} | {r['detail']} | {_fmt(r['epochs'])} | {_fmt(r['train_min'], 1)} | {r['device']} |"
        )


def main() -> int:
    from mri_label import tasks

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--work", default="/tmp/mri-quality")
    parser.add_argument("--tasks", nargs="*", default=list(PLAN), choices=list(PLAN))
    parser.add_argument("--epochs-scale", type=float, default=1.0)
    parser.add_argument(
        "--splits",
        nargs="*",
        default=["grouped", "random"],
        choices=["grouped", "random"],
        help="which rows of the tasks evaluated on several splits to run (default both)",
    )
    parser.add_argument(
        "--previous",
        default=PREVIOUS,
        help="shipped cards to compare with: a folder of <task>/model.json, or git:<commit> for "
        f"{SHIPPED} at that commit (default {PREVIOUS})",
    )
    parser.add_argument(
        "--shipped", action="store_true", help="train nothing: score the shipped checkpoints on the same test subjects"
    )
    args = parser.parse_args()
    if args.epochs_scale <= 0:
        parser.error(f"--epochs-scale must be > 0, got {args.epochs_scale}")
    if not args.previous.startswith("git:") and not Path(args.previous).is_dir():
        parser.error(f"--previous must be a folder or git:<commit>, got {args.previous}")
    results = []
    for task in args.tasks:
        kinds = SPLITS.get(task, ("grouped",))
        if args.shipped:  # the shipped checkpoints were trained on the grouped split only
            kinds = ("grouped",)
        for split_kind in [k for k in kinds if k in args.splits] if len(kinds) > 1 else kinds:
            print(f"== {task} ({split_kind} split{', shipped checkpoint' if args.shipped else ''})", flush=True)
            results.append(run(task, Path(args.data), Path(args.work), args.epochs_scale, split_kind, args.shipped))
            print({k: v for k, v in results[-1].items() if k != "headline"}, flush=True)
    done = {r["task"]: r for r in results if "skipped" not in r and r["split_kind"] == "grouped"}
    for pipeline in tasks.pipeline_names():  # where its required stages ran
        if set(tasks.pipeline_required_stages(pipeline)) <= set(done) and tasks.pipeline_reference(pipeline) in done:
            print(f"== {tasks.pipeline_gate(pipeline)} as served and {pipeline} (grouped split)", flush=True)
            results += run_pipeline(pipeline, done, Path(args.work), args.shipped)
    rows = []
    for r in results:
        if "skipped" in r:
            rows.append(r)
            continue
        metrics = json.loads(Path(r["metrics_file"]).read_text())["metrics"]
        rows += table_rows(
            r, metrics, previous_metrics(r["task"], args.previous) if r["split_kind"] == "grouped" else None
        )
    print(f"\nmachine: {os.cpu_count()} CPU cores; torch threads {__import__('torch').get_num_threads()}")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
