"""``mri-label evaluate TASK --studies DIR``: a task's model on the held-out subjects, read as a clinician would.

The held-out subjects are the datastore's ``test`` side of ``split.json`` (written once, reused by every
training, see :mod:`mri_label.splits`). The model runs in process through the app's own infer task, so
what is measured is what the server serves. Classifiers are scored per image, except ``tumor_gate`` on a
volume with a tumor mask, which is scored per slice (the truth of a slice: its mask slice is non-empty).
For ``tumor_gate`` the operating threshold that reaches ``target_recall`` is chosen on the ``val`` subjects
and then applied to the ``test`` subjects (chosen on ``test`` only when ``val`` has no positive, and then
flagged as optimistic).

``split_kind="random"`` scores the test side of a RANDOM image-level split instead (``split_random.json``, see
:mod:`mri_label.splits`), for a side-by-side with the grouped split on the class-folder sets, whose subjects are
near-duplicate groups: a random split puts near-identical slices on both sides and overstates accuracy. A model
trained on the grouped split's train side has seen some of the random split's test images, so for an honest
random-split figure the model must be trained on the random split too (``benchmarks/quality.py`` does so on a
datastore copy whose images are their own subjects: its ``split.json`` equals this ``split_random.json``).
"""

import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from mri_label.metrics import best_and_worst_subjects, classification_metrics, segmentation_metrics, threshold_for_recall
from mri_label.report import write_report
from mri_label.splits import ensure_split, split_of

#: ``evaluate(split_kind=...)`` -> the split's unit (:func:`mri_label.splits.ensure_split`).
SPLIT_KINDS = {"grouped": "subject", "random": "image"}
CAVEATS = {
    "dementia_stage": "JPEG class-folder images carry no patient ids: subjects are near-duplicate groups "
    "(perceptual hash), which may still leave slices of one patient on both sides.",
    "tumor_type": "JPEG class-folder images carry no patient ids: subjects are near-duplicate groups "
    "(perceptual hash), which may still leave slices of one patient on both sides.",
}


def app_class():
    """``(MRIApp, app folder)``: the app's class, imported from its folder (put on ``sys.path``)."""
    from mri_label.cli import app_dir

    folder = str(app_dir())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    from main import MRIApp  # noqa: E402  (the app's own module, importable once its folder is on sys.path)

    return MRIApp, folder


def load_app(studies: str, task: str, model: Optional[str] = None, model_dir: Optional[str] = None):
    """The MRI app in process, serving ``task`` (with a checkpoint override when ``model`` is given)."""
    MRIApp, folder = app_class()
    conf = {"models": task}
    if model_dir:  # the model trained there is evaluated, never the shipped one in its place
        conf.update(model_dir=model_dir, shipped_models="none")
    app = MRIApp(folder, str(studies), conf)
    if model:
        if not Path(model).is_file():
            raise FileNotFoundError(f"--model {model} is not a file")
        app._infers[task].path = [str(model)]
    if app._infers[task].get_path() is None:
        raise FileNotFoundError(f"{task} has no checkpoint at {app._infers[task].path}: train it or pass --model")
    return app


def _load(path: str):
    """The file as a MONAI MetaTensor (array and affine), read once."""
    from monai.transforms import LoadImage

    return LoadImage(image_only=True)(path)


def _read(path: str) -> np.ndarray:
    return np.asarray(_load(path))


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
    return [i for i in datastore.list_images() if split_of(split, datastore.get_image_info(i).get("subject", i)) == side]


def _classifier_predictions(app, task: str, images: List[str], progress) -> Dict:
    from lib.datalists import final_label, label_task  # noqa: E402
    from lib.datastore import class_label  # noqa: E402
    from lib.transforms import axial_axis  # noqa: E402

    datastore, infer = app.datastore(), app._infers[task]
    classes = infer.classes
    y_true, probabilities, subjects = [], [], set()
    for n, image_id in enumerate(images):
        info = datastore.get_image_info(image_id)
        mask_path = None
        if task == "tumor_gate":
            path, label_info = final_label(datastore, image_id)
            mask_path = path if path and label_task(label_info, {"tumor_seg": {"tumor": 1}}) == "tumor_seg" else None
        name = class_label(info, task)
        if mask_path is None and name not in classes:
            continue
        _, result = infer({"image": info["path"]})
        subjects.add(info.get("subject", image_id))
        loaded_mask = _load(mask_path) if mask_path is not None else None
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
        progress(f"{task}: {n + 1}/{len(images)} images")
    probabilities = np.asarray(probabilities, dtype=float)
    if len(probabilities):
        probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    return {"y_true": np.asarray(y_true, dtype=int), "probabilities": probabilities, "classes": classes, "subjects": len(subjects)}


def _segmentation_cases(app, task: str, images: List[str], progress) -> List[Dict]:
    from lib.datalists import final_label, label_task  # noqa: E402

    datastore, infer = app.datastore(), app._infers[task]
    cases = []
    for n, image_id in enumerate(images):
        label_path, label_info = final_label(datastore, image_id)
        if not label_path or label_task(label_info, {task: infer.labels}) != task:
            continue
        info = datastore.get_image_info(image_id)
        result_file, _ = infer({"image": info["path"]})
        prediction, truth = _read(result_file).squeeze(), _read(label_path).squeeze()
        if task == "tumor_seg":
            truth = (truth > 0).astype(np.uint8)
        loaded = _load(info["path"])
        image = np.asarray(loaded).squeeze()
        image = image if image.ndim == truth.ndim else image.mean(axis=-1)
        cases.append({
            "subject": info.get("subject") or image_id,
            "prediction": prediction.astype(np.int32), "truth": truth.astype(np.int32),
            "spacing": _spacing(loaded, truth.ndim), "image": image,
        })
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
) -> Dict:
    """Evaluate ``task`` on the datastore's test subjects; write the report into ``out``; return a summary.

    ``split_kind``: ``"grouped"`` (the test subjects of ``split.json``: patients, or near-duplicate groups) or
    ``"random"`` (the test images of ``split_random.json``, an image-level split; see the module docstring).
    """
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must lie in (0, 1], got {target_recall}")
    if split_kind not in SPLIT_KINDS:
        raise ValueError(f"split_kind must be one of {', '.join(SPLIT_KINDS)}, got {split_kind!r}")
    app = load_app(studies, task, model, model_dir)
    split = ensure_split(studies, unit=SPLIT_KINDS[split_kind])
    infer = app._infers[task]
    out_dir = Path(out or Path("evaluation") / task)
    test_images = _side_images(app, task, split, "test")
    caveat = CAVEATS.get(task)
    if split_kind == "random":
        caveat = ("RANDOM image-level split (split_random.json): near-duplicate slices of one patient can sit on both "
                  "sides, so this figure is optimistic; compare it with the grouped split, never report it alone.")
    meta = {"task": task, "model": infer.get_path(), "data": str(studies), "caveats": caveat, "split_kind": split_kind,
            "split": "test subjects of split.json" if split_kind == "grouped" else "test images of split_random.json"}
    if infer.type == "classification":
        test = _classifier_predictions(app, task, test_images, progress)
        if not len(test["y_true"]):
            raise ValueError(f"{task}: the test subjects of {studies} hold no labelled image for this task")
        metrics = classification_metrics(test["y_true"], test["probabilities"], test["classes"])
        if task == "tumor_gate":
            metrics["threshold"] = _gate_threshold(app, task, split, test, target_recall, progress)
        meta.update(kind="classification", n_subjects=test["subjects"], n_images=len(test["y_true"]))
        files = write_report(out_dir, task, "classification", metrics, meta)
        headline = {"accuracy": metrics["accuracy"], "balanced_accuracy": metrics["balanced_accuracy"], "macro_f1": metrics["macro_f1"]}
    else:
        cases = _segmentation_cases(app, task, test_images, progress)
        if not cases:
            raise ValueError(f"{task}: the test subjects of {studies} hold no final label for this task")
        merge = task == "hippocampus"
        metrics = segmentation_metrics([{k: c[k] for k in ("subject", "prediction", "truth", "spacing")} for c in cases], infer.labels, merge=merge)
        best, worst = best_and_worst_subjects(metrics)
        by_subject = {c["subject"]: c for c in cases}
        extras = {w: {k: by_subject[s][k] for k in ("subject", "image", "truth", "prediction")} for w, s in (("best", best), ("worst", worst))}
        meta.update(kind="segmentation", n_subjects=len(cases), n_images=len(cases))
        files = write_report(out_dir, task, "segmentation", metrics, meta, extras)
        key = "foreground" if merge else next(iter(infer.labels))
        headline = {f"dice_{key}_mean": metrics["summary"][key]["dice"]["mean"], f"dice_{key}_median": metrics["summary"][key]["dice"]["median"]}
    return {"task": task, "split_kind": split_kind, "n_subjects": meta["n_subjects"], "n_images": meta["n_images"],
            "headline": headline, "files": [str(f) for f in files]}


def _gate_threshold(app, task, split, test, target_recall, progress) -> Dict:
    """The threshold reaching ``target_recall`` on the val subjects, and what it gives on the test subjects."""
    val = _classifier_predictions(app, task, _side_images(app, task, split, "val"), progress)
    chosen_on = "val subjects"
    if not (val["y_true"] == 1).any():
        val, chosen_on = test, "test subjects (val has no tumor: optimistic)"
    threshold = threshold_for_recall(val["y_true"], val["probabilities"][:, 1], target_recall)["threshold"]
    y, p = test["y_true"], test["probabilities"][:, 1]
    called = p >= (threshold if threshold is not None else np.inf)
    tp, fp = int((called & (y == 1)).sum()), int((called & (y == 0)).sum())
    fn, tn = int((~called & (y == 1)).sum()), int((~called & (y == 0)).sum())
    on_test = threshold_for_recall(y, p, target_recall) if (y == 1).any() else {"roc": None, "auc": None}
    return {
        "threshold": threshold, "target_recall": target_recall, "chosen_on": chosen_on,
        "recall": tp / (tp + fn) if tp + fn else None, "precision": tp / (tp + fp) if tp + fp else None,
        "specificity": tn / (tn + fp) if tn + fp else None, "accuracy": (tp + tn) / len(y),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn, "n_positive": tp + fn, "n_negative": tn + fp,
        "roc": on_test["roc"], "auc": on_test["auc"],
    }
