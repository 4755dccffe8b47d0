"""``mri-label evaluate TASK --studies DIR``: a task's model on the held-out subjects, read as a clinician would.

The held-out subjects are the datastore's ``test`` side of ``split.json`` (written once, reused by every
training, see :mod:`mri_label.core.splits`). The model runs in process through the app's own infer task, so
what is measured is what the server serves. How a task is scored is the ``evaluation`` its config declares
(``lib.task_config.EVALUATIONS``, read through :mod:`mri_label.tasks`): nothing here branches on a task's name, only
on whether the name is a pipeline's (``lib/configs/pipelines``). Classifiers are scored per image, except a ``gate``
(``tumor_gate``) on a volume with a mask of its config's ``mask_task``, which is scored per slice (the truth of a
slice: its mask slice is non-empty). For a gate the operating threshold that reaches ``target_recall`` is chosen on
the ``val`` subjects and then applied to the ``test`` subjects (chosen on ``test`` only when ``val`` has no positive,
and then flagged as optimistic).
Segmenters are scored per label, with the union of the labels for ``segmentation+union`` (hippocampus) and on
truth > 0 for ``binary segmentation`` (tumor_seg).

``split_kind="random"`` scores the test side of a RANDOM image-level split instead (``split_random.json``, see
:mod:`mri_label.core.splits`), for a side-by-side with the grouped split on the class-folder sets, whose subjects are
near-duplicate groups: a random split puts near-identical slices on both sides and overstates accuracy. A model
trained on the grouped split's train side has seen some of the random split's test images, so for an honest
random-split figure the model must be trained on the random split too (``benchmarks/quality.py`` does so on a
datastore copy whose images are their own subjects: its ``split.json`` equals this ``split_random.json``).

Every figure is also broken down per source and per kind of input (:mod:`mri_label.sources`: ``source``, ``dims``
volume / 2D slice, ``skull`` with skull / skull-stripped) in ``metrics.json`` (``metrics["breakdown"]``), ``report.md``
and the ``headline`` (``headline["breakdown"]``). Classifiers also get a per-subject accuracy list (subjects with
several images or slices); a gate is reported at two operating points: the shipped threshold (for ``tumor_gate`` the
config's ``tumor_gate_threshold``, as the infer reports it) and the recall-targeted threshold chosen on ``val``. A
task's ``caveat`` (declared by its config) goes with its figures.

A pipeline (a gate -> segmentation cascade declared in ``lib/configs/pipelines/<name>.py``, e.g. ``tumor_pipeline``,
which the app serves where its required stages are loaded) is evaluated with those stages loaded, on the test
subjects' VOLUMES of the series its ``reference`` task reads (its ``input_series``) with a final mask of that task
(for ``tumor_seg``, whole tumor = mask > 0): per-subject whole-volume Dice, beside the reference task alone on the same
volumes (``metrics["comparison"]``; the target: the pipeline's mean Dice within :data:`PIPELINE_TOLERANCE` of the
reference alone).
"""

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from mri_label import tasks
from mri_label.app_path import app_class
from mri_label.core.splits import ensure_split, split_of
from mri_label.metrics import (
    best_and_worst_subjects,
    classification_breakdown,
    classification_metrics,
    dice_difference,
    operating_point,
    per_subject_accuracy,
    segmentation_breakdown,
    segmentation_metrics,
    threshold_for_recall,
)
from mri_label.report import write_report
from mri_label.sources import BREAKDOWNS, input_groups

#: ``evaluate(split_kind=...)`` -> the split's unit (:func:`mri_label.core.splits.ensure_split`).
SPLIT_KINDS = {"grouped": "subject", "random": "image"}
#: The split sides an evaluation may score -> how reports name them.
SIDES = {"test": "test", "val": "validation"}
#: The pipeline's mean Dice should lie within this of its reference task's alone (issue 16).
PIPELINE_TOLERANCE = 0.03


def load_app(
    studies: str,
    task: str,
    model: Optional[str] = None,
    model_dir: Optional[str] = None,
    conf: Optional[Dict[str, str]] = None,
):
    """The MRI app in process, serving ``task`` (with a checkpoint override when ``model`` is given); a pipeline
    loads the stages it cannot run without (:func:`mri_label.tasks.pipeline_required_stages`), each from its own
    checkpoint; a task whose infer reads
    other tasks' networks (``reads_networks_of``: the gate, ``tumor_seg``'s) loads them too, and answers as it
    would in the server with them."""
    MRIApp, folder = app_class()
    from main import discover_configs  # noqa: E402  (the app's module, importable after app_class)

    pipeline = tasks.is_pipeline(task)
    stages = tasks.pipeline_required_stages(task) if pipeline else (task,)
    if model and pipeline:
        raise ValueError(
            f"model: {task} chains {', '.join(stages)}; give their checkpoints with model_dir, not --model {model}"
        )
    # the networks the task's infer reads (the gate: tumor_seg's), unless a checkpoint of the task itself is given
    read = () if model else tuple(getattr(discover_configs().get(task), "reads_networks_of", ()))
    options = {**(conf or {}), "models": ",".join(stages + read)}
    if model_dir:  # the models trained there are evaluated, not the shipped ones in their place (unless conf asks)
        options.update(model_dir=model_dir, shipped_models=(conf or {}).get("shipped_models", "none"))
    app = MRIApp(folder, str(studies), options)
    if model:
        if not Path(model).is_file():
            raise FileNotFoundError(f"--model {model} is not a file")
        _infer(app, task).path = [str(model)]
    for stage in stages:
        if _infer(app, stage).get_path() is None:
            raise FileNotFoundError(f"{stage} has no checkpoint at {_infer(app, stage).path}: train it or pass --model")
    return app


def _infer(app, task: str):
    """The app's infer task ``task`` (:func:`lib.stock.infers`)."""
    from lib import stock  # noqa: E402  (the app's adapter to MONAI Label, importable once the app is loaded)

    return stock.infers(app)[task]


def _load(path: str):
    """The file as a MONAI MetaTensor (array and affine), read once."""
    from monai.transforms import LoadImage

    return LoadImage(image_only=True)(path)


def _read(path: str) -> np.ndarray:
    return np.asarray(_load(path))


def _ndim(path: str) -> int:
    """Spatial dimensions of an image file (2 for a slice, 3 for a volume), from its header only."""
    from lib.datastore import read_header, spatial_size  # noqa: E402

    return len(spatial_size(read_header(path, "image")[0]))


def _spacing(image, dims: int) -> tuple:
    """Voxel size (mm) of a loaded image; 1 mm per pixel for 2D pictures, which carry none."""
    affine = np.asarray(image.affine)
    if dims == 3 and affine.shape == (4, 4):
        return tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    return (1.0,) * dims


def _side_images(app, task: str, split: dict, side: str) -> List[str]:
    datastore = app.datastore()
    if split.get("unit") == "image":  # split_random.json: the image id is the unit
        return [i for i in datastore.list_images() if split_of(split, i) == side]
    return [
        i for i in datastore.list_images() if split_of(split, datastore.get_image_info(i).get("subject", i)) == side
    ]


def _classifier_predictions(app, task: str, images: List[str], progress) -> Dict:
    """Truth and probabilities of each scored row (an image, or a slice of a gate volume with a mask), with the
    row's subject and its group in each breakdown; ``shipped_threshold``: the gate's threshold as its infer reports
    it."""
    from lib.datalists import final_label  # noqa: E402
    from lib.label_info import class_label, label_task  # noqa: E402
    from lib.transforms import axial_axis  # noqa: E402

    datastore, infer = app.datastore(), _infer(app, task)
    classes = infer.classes
    # a gate: a volume with a final mask of its mask_task is scored per slice (the slice's truth: its mask slice)
    masks = tasks.mask_task(task) if tasks.evaluation(task) == "gate" else None
    y_true: List[int]
    probabilities: Any  # rows of class probabilities, then their array
    groups: Dict[str, list]
    y_true, probabilities, row_subjects, groups, shipped = [], [], [], {k: [] for k in BREAKDOWNS}, None
    for n, image_id in enumerate(images):
        info = datastore.get_image_info(image_id)
        mask_path = None
        if masks is not None:
            path, label_info = final_label(datastore, image_id)
            mask_path = path if path and label_task(label_info, {masks[0]: masks[1]}) == masks[0] else None
        name = class_label(info, task)
        if mask_path is None and name not in classes:
            continue
        _, result = infer({"image": info["path"]})
        shipped = result.get("threshold", shipped)
        before = len(y_true)
        loaded_mask: Any = _load(mask_path) if mask_path is not None else None
        mask = np.asarray(loaded_mask) > 0 if loaded_mask is not None else None
        if mask is not None and mask.ndim == 3:  # a volume with a mask (same grid): one truth per slice
            axis = axial_axis(loaded_mask.affine)
            has = mask.any(axis=tuple(d for d in range(3) if d != axis))
            for row in result["slices"]:
                y_true.append(int(has[row["index"]]))
                probabilities.append([row["probabilities"][c] for c in classes])
        else:
            truth = classes[int(mask.any())] if mask is not None else name
            y_true.append(classes.index(truth))
            probabilities.append([result["probabilities"][c] for c in classes])
        rows = len(y_true) - before
        row_subjects += [str(info.get("subject") or image_id)] * rows
        for key, group in input_groups(info, _ndim(info["path"])).items():
            groups[key] += [group] * rows
        progress(f"{task}: {n + 1}/{len(images)} images")
    probabilities = np.asarray(probabilities, dtype=float)
    if len(probabilities):
        probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    return {
        "y_true": np.asarray(y_true, dtype=int),
        "probabilities": probabilities,
        "classes": classes,
        "subjects": len(set(row_subjects)),
        "row_subjects": row_subjects,
        "groups": groups,
        "shipped_threshold": shipped,
    }


def _segmentation_cases(
    app, task: str, images: List[str], progress, truth_task: Optional[str] = None, volumes_only: bool = False
) -> List[Dict]:
    """One case per image with a final label of ``truth_task`` (default ``task``): prediction of ``task``'s infer,
    truth (binarised where ``truth_task``'s evaluation is ``binary segmentation``: whole tumor), spacing, image and
    the image's breakdown groups. ``volumes_only``: 3D images only, of the series ``truth_task`` reads (its
    ``input_series``; an image without a ``sequence`` counts as one)."""
    from lib.datalists import final_label  # noqa: E402
    from lib.label_info import label_task  # noqa: E402

    datastore, infer, truth_task = app.datastore(), _infer(app, task), truth_task or task
    series = tasks.input_series(truth_task) if volumes_only else None
    sequence = tasks.series_class(series) if series else None
    binary = tasks.evaluation(truth_task) == "binary segmentation"
    cases = []
    for n, image_id in enumerate(images):
        label_path, label_info = final_label(datastore, image_id)
        if not label_path or label_task(label_info, {truth_task: _infer(app, truth_task).labels}) != truth_task:
            continue
        info = datastore.get_image_info(image_id)
        wrong_series = sequence is not None and info.get("sequence", sequence) != sequence
        if volumes_only and (_ndim(info["path"]) != 3 or wrong_series):
            continue
        result_file, result = infer({"image": info["path"]})
        prediction, truth = _read(result_file).squeeze(), _read(label_path).squeeze()
        if binary:
            truth = (truth > 0).astype(np.uint8)
        loaded = _load(info["path"])
        image = np.asarray(loaded).squeeze()
        image = image if image.ndim == truth.ndim else image.mean(axis=-1)
        cases.append(
            {
                "subject": info.get("subject") or image_id,
                "prediction": prediction.astype(np.int32),
                "truth": truth.astype(np.int32),
                "spacing": _spacing(loaded, truth.ndim),
                "image": image,
                "groups": input_groups(info, truth.ndim),
                "fired_slices": len(result["fired_slices"]) if "fired_slices" in (result or {}) else None,
            }
        )
        Path(result_file).unlink(missing_ok=True)
        progress(f"{task}: {n + 1}/{len(images)} images")
    return cases


def evaluate(
    task: str,
    studies: str,
    model: Optional[str] = None,
    out: Optional[str] = None,
    target_recall: float = 0.97,
    model_dir: Optional[str] = None,
    progress: Callable[[str], None] = print,
    split_kind: str = "grouped",
    side: str = "test",
    conf: Optional[Dict[str, str]] = None,
) -> Dict:
    """Evaluate ``task`` on the datastore's test subjects; write the report into ``out``; return a summary.

    ``split_kind``: ``"grouped"`` (the test subjects of ``split.json``: patients, or near-duplicate groups) or
    ``"random"`` (the test images of ``split_random.json``, an image-level split; see the module docstring).
    ``side``: ``"test"`` (held-out, default) or ``"val"``: the validation subjects, on which a choice (a
    post-processing, a threshold) is made before the test subjects are scored. ``conf``: app options (``--conf KEY
    VALUE`` of the server), e.g. ``{"tumor_seg_keep_largest_component": "false"}`` to compare a declared choice.

    Returns:
        {task, split_kind, n_subjects, n_images, headline, files}: ``headline`` holds the task's main figures
        (floats) and ``breakdown`` {source | dims | skull: {group: {n, figures}}}.
    """
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must lie in (0, 1], got {target_recall}")
    if split_kind not in SPLIT_KINDS:
        raise ValueError(f"split_kind must be one of {', '.join(SPLIT_KINDS)}, got {split_kind!r}")
    if side not in SIDES:
        raise ValueError(f"side must be one of {', '.join(SIDES)}, got {side!r}")
    app = load_app(studies, task, model, model_dir, conf)
    split = ensure_split(studies, unit=SPLIT_KINDS[split_kind])
    out_dir = Path(out or Path("evaluation") / (task if side == "test" else f"{task}-{side}"))
    test_images = _side_images(app, task, split, side)
    pipeline = tasks.is_pipeline(task)
    caveat = None if pipeline else tasks.caveat(task)
    if split_kind == "random":
        caveat = (
            "RANDOM image-level split (split_random.json): near-duplicate slices of one patient can sit on both "
            "sides, so this figure is optimistic; compare it with the grouped split, never report it alone."
        )
    stages = tasks.pipeline_required_stages(task) if pipeline else (task,)
    checkpoints = {s: _infer(app, s).get_path() for s in stages}
    meta = {
        "task": task,
        "model": checkpoints[task] if task in checkpoints else checkpoints,
        "data": str(studies),
        "caveats": caveat,
        "split_kind": split_kind,
        "split": f"{SIDES[side]} subjects of split.json"
        if split_kind == "grouped"
        else f"{SIDES[side]} images of split_random.json",
    }
    if pipeline:
        files, head = _evaluate_pipeline(app, task, studies, test_images, meta, out_dir, progress)
    elif _infer(app, task).type == "classification":
        files, head = _evaluate_classifier(
            app, task, studies, split, test_images, target_recall, meta, out_dir, progress
        )
    else:
        files, head = _evaluate_segmentation(app, task, studies, test_images, meta, out_dir, progress)
    return {
        "task": task,
        "split_kind": split_kind,
        "n_subjects": meta["n_subjects"],
        "n_images": meta["n_images"],
        "headline": head,
        "files": [str(f) for f in files],
    }


def _evaluate_classifier(app, task, studies, split, test_images, target_recall, meta, out_dir, progress):
    """(files written, headline) of a classifier on the test images."""
    test = _classifier_predictions(app, task, test_images, progress)
    if not len(test["y_true"]):
        raise ValueError(f"{task}: the test subjects of {studies} hold no labelled image for this task")
    y, probabilities, classes = test["y_true"], test["probabilities"], test["classes"]
    metrics = classification_metrics(y, probabilities, classes)
    thresholds = None
    if tasks.evaluation(task) == "gate":
        metrics["threshold"] = _gate_threshold(app, task, split, test, target_recall, progress)
        shipped = float(
            test["shipped_threshold"] if test["shipped_threshold"] is not None else _infer(app, task).threshold
        )
        thresholds = {"shipped": shipped, "recall_targeted": metrics["threshold"]["threshold"]}
        metrics["operating_points"] = {
            "shipped": {
                **operating_point(y, probabilities[:, 1], shipped),
                "chosen_on": "tumor_gate_threshold (config)",
            },
            "recall_targeted": {k: v for k, v in metrics["threshold"].items() if k not in ("roc", "auc")},
        }
    metrics["breakdown"] = classification_breakdown(y, probabilities, classes, test["groups"], thresholds)
    metrics["per_subject"] = per_subject_accuracy(y, probabilities, test["row_subjects"])
    meta.update(kind="classification", n_subjects=test["subjects"], n_images=len(y))
    return write_report(out_dir, task, "classification", metrics, meta), headline(metrics)


def headline(metrics: Dict) -> Dict:
    """The main figures of an evaluation's ``metrics`` (what the summary, ``model.json`` and ``benchmarks/quality.py``
    show), with ``breakdown`` {source | dims | skull: {group: {n, the same figures}}}.

    Classifier: ``accuracy``, ``balanced_accuracy``, ``macro_f1`` (per group also ``recall`` per class) and, with
    operating points, ``<threshold|accuracy|recall|specificity>_<point>`` (``shipped``, ``recall_targeted``).
    Segmenter: ``dice_<label>_mean`` and ``_median`` of every scored label (per group the means).
    """
    if "per_class" not in metrics:
        return _dice_headline(metrics)
    head = {k: metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")}
    for name, point in (metrics.get("operating_points") or {}).items():
        head.update({f"{k}_{name}": point[k] for k in ("threshold", "accuracy", "recall", "specificity")})
    head["breakdown"] = {
        key: {
            g: {k: v[k] for k in ("n", "accuracy", "balanced_accuracy", "macro_f1", "recall")}
            for g, v in groups.items()
        }
        for key, groups in (metrics.get("breakdown") or {}).items()
    }
    return head


def _scored_cases(cases: List[Dict], labels: Dict[str, int], merge: bool) -> Dict:
    """:func:`segmentation_metrics` of ``cases`` with each subject's source beside it and the breakdown."""
    metrics = segmentation_metrics(
        [{k: c[k] for k in ("subject", "prediction", "truth", "spacing")} for c in cases], labels, merge=merge
    )
    for subject, case in zip(metrics["subjects"], cases):
        subject["source"] = case["groups"]["source"]
    metrics["breakdown"] = segmentation_breakdown(metrics, {k: [c["groups"][k] for c in cases] for k in BREAKDOWNS})
    return metrics


def _dice_headline(metrics: Dict) -> Dict:
    """``dice_<label>_mean`` / ``_median`` of every scored label, and their means per breakdown group."""
    head = {
        f"dice_{name}_{stat}": s["dice"][stat] for name, s in metrics["summary"].items() for stat in ("mean", "median")
    }
    head["breakdown"] = {
        key: {
            g: {"n": v["n_subjects"], **{f"dice_{name}_mean": d["mean"] for name, d in v["dice"].items()}}
            for g, v in groups.items()
        }
        for key, groups in (metrics.get("breakdown") or {}).items()
    }
    return head


def _extras(metrics: Dict, cases: List[Dict]) -> Dict:
    """The best and worst cases' arrays, for the report's overlays."""
    best, worst = best_and_worst_subjects(metrics)
    by_subject = {c["subject"]: c for c in cases}
    return {
        w: {k: by_subject[s][k] for k in ("subject", "image", "truth", "prediction")}
        for w, s in (("best", best), ("worst", worst))
    }


def _evaluate_segmentation(app, task, studies, test_images, meta, out_dir, progress):
    """(files written, headline) of a segmenter on the test images with a final label of its task."""
    cases = _segmentation_cases(app, task, test_images, progress)
    if not cases:
        raise ValueError(f"{task}: the test subjects of {studies} hold no final label for this task")
    dims = sorted({c["truth"].ndim for c in cases})
    if len(dims) > 1:  # Dice, HD95 and volumes compare like with like: the volumes are scored, the slices counted
        slices = sum(c["truth"].ndim == 2 for c in cases)
        cases = [c for c in cases if c["truth"].ndim == 3]
        meta["caveats"] = " ".join(
            filter(None, [meta.get("caveats"), f"{slices} 2D slice(s) with a label left out: volumes are scored."])
        )
    metrics = _scored_cases(cases, _infer(app, task).labels, merge=tasks.evaluation(task) == "segmentation+union")
    meta.update(kind="segmentation", n_subjects=len(cases), n_images=len(cases))
    return write_report(out_dir, task, "segmentation", metrics, meta, _extras(metrics, cases)), headline(metrics)


def _evaluate_pipeline(app, task, studies, test_images, meta, out_dir, progress):
    """(files written, headline) of a cascade on the test volumes of the series its reference task reads, beside
    the reference task alone."""
    gate, reference = tasks.pipeline_gate(task), tasks.pipeline_reference(task)
    cases = _segmentation_cases(app, task, test_images, progress, truth_task=reference, volumes_only=True)
    if not cases:
        series = tasks.input_series(reference)
        what = f"{tasks.series_class(series)} volume" if series else "volume"
        raise ValueError(f"{task}: the test subjects of {studies} hold no {what} with a {reference} final label")
    alone = _segmentation_cases(app, reference, test_images, progress, volumes_only=True)
    labels = _infer(app, reference).labels
    metrics, reference_metrics = _scored_cases(cases, labels, False), _scored_cases(alone, labels, False)
    label = next(iter(labels))
    comparison = dice_difference(metrics, reference_metrics, label)
    fired = {c["subject"]: c["fired_slices"] for c in cases}
    for row in comparison["subjects"]:
        row["fired_slices"] = fired[row["subject"]]
    within = comparison["dice_mean"] >= comparison["dice_reference_mean"] - PIPELINE_TOLERANCE
    metrics["comparison"] = {
        **comparison,
        "reference_task": reference,
        "tolerance": PIPELINE_TOLERANCE,
        "within_tolerance": within,
        "reference_breakdown": reference_metrics["breakdown"],
    }
    metrics["gate_threshold"] = _infer(app, gate).threshold
    meta.update(kind="segmentation", n_subjects=len(cases), n_images=len(cases))
    head = headline(metrics)
    head.update(
        {
            f"dice_{label}_mean_{reference}_alone": comparison["dice_reference_mean"],
            "dice_mean_difference": comparison["mean_difference"],
            "within_tolerance": within,
        }
    )
    return write_report(out_dir, task, "segmentation", metrics, meta, _extras(metrics, cases)), head


def _gate_threshold(app, task, split, test, target_recall, progress) -> Dict:
    """The threshold reaching ``target_recall`` on the val subjects, and what it gives on the test subjects."""
    val = _classifier_predictions(app, task, _side_images(app, task, split, "val"), progress)
    chosen_on = "val subjects"
    if not (val["y_true"] == 1).any():
        val, chosen_on = test, "test subjects (val has no tumor: optimistic)"
    threshold = threshold_for_recall(val["y_true"], val["probabilities"][:, 1], target_recall)["threshold"]
    y, p = test["y_true"], test["probabilities"][:, 1]
    on_test = threshold_for_recall(y, p, target_recall) if (y == 1).any() else {"roc": None, "auc": None}
    return {
        **operating_point(y, p, threshold),
        "target_recall": target_recall,
        "chosen_on": chosen_on,
        "roc": on_test["roc"],
        "auc": on_test["auc"],
    }
