"""Evaluation metrics for the mri-label classifiers and segmenters.

Every function validates its arguments (``ValueError`` naming the parameter and the value it got) and
returns a JSON-ready dict of Python floats, ints, strings and lists; an undefined value is ``None``,
never NaN or infinity.

Conventions:
    * Predicted class: ``argmax`` of the probabilities (the first class wins a tie).
    * Precision / recall / F1 of a class are ``None`` where their denominator is 0. Balanced accuracy
      and macro-F1 average over the classes where the value is defined (recall: classes present in
      ``y_true``; F1: classes present in ``y_true`` or predicted).
    * ROC-AUC: one-vs-rest on each class's probability column, trapezoidal area of the ROC curve (a tie
      between a positive and a negative counts one half); ``None`` for a class without both positives
      and negatives; macro = mean of the defined ones.
    * ECE (expected calibration error): confidence = max probability of a row, 15 equal-width bins
      ``(0, 1/15], (1/15, 2/15], ..., (14/15, 1]``; ECE = sum over bins of
      ``count_bin / N * |accuracy_bin - mean confidence_bin|``.
    * Segmentation: Dice and 95% Hausdorff distance (HD95) per label from ``monai.metrics``; HD95 in mm
      (voxel spacing applied) with MONAI's symmetric definition, the larger of the 95th percentiles of
      the boundary distances prediction->truth and truth->prediction. Empty masks: both empty -> Dice 1,
      HD95 0; exactly one empty -> Dice 0, HD95 ``None``, left out of the HD95 statistics and counted in
      ``hd95_mm.undefined``. Volumes are voxel count x voxel volume (mm^3; mm^2 for 2-D slices).
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

ECE_BINS = 15
MERGED = "foreground"


def _bad(name: str, value, why: str) -> ValueError:
    text = repr(value)
    return ValueError(f"{name}: {why}; got {text[:200] + '...' if len(text) > 200 else text}")


def _ratio(num, den) -> float | None:
    return float(num) / float(den) if den else None


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _stats(values) -> dict:
    """mean / median / sample std (ddof=1; None for fewer than 2) / min / max / n of the non-None values."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if not v.size:
        return {"mean": None, "median": None, "std": None, "min": None, "max": None, "n": 0}
    std = float(v.std(ddof=1)) if v.size > 1 else None
    return {
        "mean": float(v.mean()),
        "median": float(np.median(v)),
        "std": std,
        "min": float(v.min()),
        "max": float(v.max()),
        "n": int(v.size),
    }


def _vector(name: str, value, n: int | None = None, kind: str = "float") -> np.ndarray:
    """A 1-D finite array (``kind`` "float", or "int" = integral values), of length ``n`` when given."""
    try:
        arr = np.asarray(value)
        arr = arr.astype(float) if arr.dtype == bool else arr
        ok = arr.ndim == 1 and arr.size > 0 and np.issubdtype(arr.dtype, np.number) and np.isfinite(arr).all()
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise _bad(name, value, "expected a non-empty 1-D array of finite numbers")
    if n is not None and arr.shape[0] != n:
        raise _bad(name, value, f"expected length {n}, found shape {arr.shape}")
    if kind == "int":
        if not np.array_equal(arr, np.round(arr)):
            raise _bad(name, value, "expected integer labels")
        return arr.astype(int)
    return arr.astype(float)


def _roc(positive: np.ndarray, scores: np.ndarray) -> dict | None:
    """ROC points (collinear points dropped) and AUC of ``scores`` for the boolean ``positive``.

    ``thresholds[i]`` is the score cut (call positive when score >= cut) giving ``(fpr[i], tpr[i])``;
    the first point (0, 0) has threshold ``None`` (nothing called positive). None without both classes.
    """
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last]
    fps = last + 1 - tps
    keep = np.arange(last.size)
    if last.size > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
    tpr = np.r_[0, tps[keep]] / n_pos
    fpr = np.r_[0, fps[keep]] / n_neg
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": [None] + s[last][keep].tolist(), "auc": auc}


def classification_metrics(y_true, probabilities, classes: list[str]) -> dict:
    """Accuracy, per-class and macro scores, ROC-AUC and calibration of a classifier.

    Args:
        y_true: (N,) int, true class indices in ``[0, K)``.
        probabilities: (N, K) float, class probabilities (each row sums to 1 within 1e-3).
        classes: K class names, in column order.

    Returns:
        dict with ``classes``, ``n`` (N), ``accuracy``, ``balanced_accuracy``, ``macro_f1``,
        ``macro_roc_auc``, ``ece`` (15 bins), ``confusion_matrix`` (K x K list, rows = true, columns =
        predicted), ``per_class`` {name: {precision, recall, f1, support, roc_auc}}, ``roc_curves``
        {name: {fpr, tpr, thresholds, auc}} (classes with a defined AUC only) and ``reliability``
        {bin_lower, bin_upper, confidence, accuracy, count} (15 entries each; None for an empty bin).
    """
    if (
        isinstance(classes, str)
        or not isinstance(classes, (list, tuple))
        or len(classes) < 2
        or not all(isinstance(c, str) and c for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise _bad("classes", classes, "expected a list of at least 2 distinct non-empty names")
    k = len(classes)
    try:
        probs = np.asarray(probabilities, dtype=float)
    except (TypeError, ValueError):
        raise _bad("probabilities", probabilities, "expected an (N, K) array of floats") from None
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] != k:
        raise _bad("probabilities", f"array of shape {probs.shape}", f"expected shape (N, {k}) with N >= 1")
    if not np.isfinite(probs).all():
        raise _bad(
            "probabilities", f"{int((~np.isfinite(probs)).sum())} NaN/inf entries", "expected finite values in [0, 1]"
        )
    if (probs < -1e-6).any() or (probs > 1 + 1e-6).any():
        raise _bad("probabilities", f"values in [{probs.min()}, {probs.max()}]", "expected values in [0, 1]")
    sums = probs.sum(axis=1)
    bad_rows = np.flatnonzero(np.abs(sums - 1) > 1e-3)
    if bad_rows.size:
        i = int(bad_rows[0])
        raise _bad(
            "probabilities", f"row {i} summing to {sums[i]:.6f}", "each row must sum to 1 within 1e-3 (softmax outputs)"
        )
    y = _vector("y_true", y_true, probs.shape[0], kind="int")
    if y.min() < 0 or y.max() >= k:
        raise _bad("y_true", f"labels in [{y.min()}, {y.max()}]", f"expected class indices in [0, {k})")

    pred = probs.argmax(axis=1)
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (y, pred), 1)
    tp, support, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    per_class, curves = {}, {}
    for i, name in enumerate(classes):
        roc = _roc(y == i, probs[:, i])
        if roc is not None:
            curves[name] = roc
        fp_fn = (predicted[i] - tp[i]) + (support[i] - tp[i])
        per_class[name] = {
            "precision": _ratio(tp[i], predicted[i]),
            "recall": _ratio(tp[i], support[i]),
            "f1": _ratio(2 * tp[i], 2 * tp[i] + fp_fn),
            "support": int(support[i]),
            "roc_auc": roc["auc"] if roc else None,
        }

    conf = probs.max(axis=1)
    correct = pred == y
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    bins = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, ECE_BINS - 1)
    rel = {
        "bin_lower": edges[:-1].tolist(),
        "bin_upper": edges[1:].tolist(),
        "confidence": [],
        "accuracy": [],
        "count": [],
    }
    ece = 0.0
    for b in range(ECE_BINS):
        member = bins == b
        count = int(member.sum())
        rel["count"].append(count)
        rel["confidence"].append(float(conf[member].mean()) if count else None)
        rel["accuracy"].append(float(correct[member].mean()) if count else None)
        if count:
            ece += count / y.size * abs(rel["accuracy"][-1] - rel["confidence"][-1])
    return {
        "classes": list(classes),
        "n": int(y.size),
        "accuracy": float(correct.mean()),
        "balanced_accuracy": _mean(c["recall"] for c in per_class.values()),
        "macro_f1": _mean(c["f1"] for c in per_class.values()),
        "macro_roc_auc": _mean(c["roc_auc"] for c in per_class.values()),
        "ece": float(ece),
        "confusion_matrix": cm.tolist(),
        "per_class": per_class,
        "roc_curves": curves,
        "reliability": rel,
    }


def threshold_for_recall(y_true_binary, p_positive, target_recall: float) -> dict:
    """The highest probability threshold reaching a target recall (sensitivity), and what it costs.

    An image is called positive when ``p_positive >= threshold``.

    Args:
        y_true_binary: (N,) 0/1 (or bool) truth, 1 = positive; at least one positive.
        p_positive: (N,) float in [0, 1], probability of the positive class.
        target_recall: wanted recall in (0, 1].

    Returns:
        dict with ``threshold``, ``target_recall``, ``recall``, ``precision``, ``specificity`` (None
        without negatives), ``accuracy``, ``tp``, ``fp``, ``tn``, ``fn``, ``n_positive``, ``n_negative``,
        ``roc`` {fpr, tpr, thresholds} (None without negatives) and ``auc`` (None without negatives).
    """
    if isinstance(target_recall, bool) or not isinstance(target_recall, Real) or not 0 < float(target_recall) <= 1:
        raise _bad("target_recall", target_recall, "expected a number in (0, 1]")
    y, p = _binary_inputs(y_true_binary, p_positive)
    pos = y == 1
    n_pos = int(pos.sum())
    if n_pos == 0:
        raise _bad("y_true_binary", "no positives", "recall needs at least one positive case")
    needed = max(1, math.ceil(float(target_recall) * n_pos - 1e-9))  # positives to catch
    threshold = float(np.sort(p[pos])[::-1][needed - 1])
    roc = _roc(pos, p)
    return {
        **_confusion_at(y, p, threshold),
        "target_recall": float(target_recall),
        "roc": {key: roc[key] for key in ("fpr", "tpr", "thresholds")} if roc else None,
        "auc": roc["auc"] if roc else None,
    }


def _confusion_at(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    """Counts and rates of the calls ``p >= threshold`` against the 0/1 truth ``y`` (validated arrays)."""
    pos, called = y == 1, p >= threshold
    tp, fp = int((called & pos).sum()), int((called & ~pos).sum())
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    fn, tn = n_pos - tp, n_neg - fp
    return {
        "threshold": float(threshold),
        "recall": _ratio(tp, n_pos),
        "precision": _ratio(tp, tp + fp),
        "specificity": _ratio(tn, n_neg),
        "accuracy": (tp + tn) / y.size,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "n_positive": n_pos,
        "n_negative": n_neg,
    }


def operating_point(y_true_binary, p_positive, threshold: float) -> dict:
    """What a binary classifier does at a fixed probability threshold (positive when ``p >= threshold``).

    Args:
        y_true_binary: (N,) 0/1 (or bool) truth, 1 = positive.
        p_positive: (N,) float in [0, 1], probability of the positive class.
        threshold: the operating threshold, a probability in [0, 1].

    Returns:
        dict with ``threshold``, ``recall`` (None without positives), ``precision`` (None when nothing is called
        positive), ``specificity`` (None without negatives), ``accuracy``, ``tp``, ``fp``, ``tn``, ``fn``,
        ``n_positive``, ``n_negative``.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not 0 <= float(threshold) <= 1:
        raise _bad("threshold", threshold, "expected a probability in [0, 1]")
    y, p = _binary_inputs(y_true_binary, p_positive)
    return _confusion_at(y, p, float(threshold))


def _binary_inputs(y_true_binary, p_positive) -> tuple:
    """Checked ``(labels 0/1 as int vector, probabilities in [0, 1] of the same length)``."""
    y = _vector("y_true_binary", y_true_binary, kind="int")
    if not np.isin(y, (0, 1)).all():
        raise _bad("y_true_binary", f"labels {np.unique(y).tolist()}", "expected only 0 and 1")
    p = _vector("p_positive", p_positive, y.size)
    if (p < 0).any() or (p > 1).any():
        raise _bad("p_positive", f"values in [{p.min()}, {p.max()}]", "expected probabilities in [0, 1]")
    return y, p


def _dice_hd95(pred: np.ndarray, truth: np.ndarray, spacing: tuple) -> tuple[float, float | None]:
    """Dice and HD95 (mm) of two boolean masks, with the empty-mask conventions of the module."""
    p_any, t_any = bool(pred.any()), bool(truth.any())
    if not p_any and not t_any:
        return 1.0, 0.0
    if not p_any or not t_any:
        return 0.0, None
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance

    p = torch.from_numpy(pred[None, None].astype(np.float32))
    t = torch.from_numpy(truth[None, None].astype(np.float32))
    dice = compute_dice(p, t, include_background=True, ignore_empty=False)
    hd = compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=list(spacing))
    return float(dice[0, 0]), float(hd[0, 0])


def segmentation_metrics(cases: list[dict], labels: dict[str, int], merge: bool = False) -> dict:
    """Per-subject and summary Dice, HD95 and volume agreement of label maps.

    Args:
        cases: one dict per subject: ``subject`` (id), ``prediction`` and ``truth`` (label arrays of one
            shape, (X, Y) or (X, Y, Z), int), ``spacing`` ((sx, sy[, sz]) mm per voxel along each axis).
            All cases must have the same number of dimensions.
        labels: {name: label value > 0}, e.g. {"core": 1, "edema": 2}; other values are ignored.
        merge: also score ``"foreground"``, the union of all ``labels`` (e.g. the whole hippocampus).

    Returns:
        dict with ``labels`` (scored names -> value, or list of values for ``"foreground"``),
        ``n_subjects``, ``volume_unit`` ("mm^3" or "mm^2"), ``subjects`` (list of {subject, spacing,
        labels: {name: {dice, hd95_mm, volume_pred, volume_truth, volume_error (pred - truth)}}}) and
        ``summary`` {name: {dice: stats, hd95_mm: stats + undefined, volume_mae, volume_bias}}, where
        stats = {mean, median, std (ddof=1), min, max, n}.
    """
    if (
        not isinstance(labels, dict)
        or not labels
        or not all(
            isinstance(k, str) and isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
            for k, v in labels.items()
        )
        or len(set(labels.values())) != len(labels)
        or (merge and MERGED in labels)
    ):
        raise _bad("labels", labels, "expected {name: distinct int > 0}" + (f" without {MERGED!r}" if merge else ""))
    if not isinstance(cases, (list, tuple)) or not cases:
        raise _bad("cases", cases, "expected a non-empty list of dicts")
    targets = {name: [int(v)] for name, v in labels.items()}
    if merge:
        targets[MERGED] = [int(v) for v in labels.values()]
    subjects: list[dict] = []
    seen, ndim = set(), None
    for i, case in enumerate(cases):
        where = f"cases[{i}]"
        if not isinstance(case, dict) or not {"subject", "prediction", "truth", "spacing"} <= set(case):
            raise _bad(
                where,
                case if not isinstance(case, dict) else sorted(case),
                "expected a dict with subject, prediction, truth and spacing",
            )
        subject = str(case["subject"])
        if subject in seen:
            raise _bad(f"{where}['subject']", subject, "subjects must be distinct")
        seen.add(subject)
        pred, truth = np.asarray(case["prediction"]), np.asarray(case["truth"])
        if pred.shape != truth.shape or pred.ndim not in (2, 3):
            raise _bad(
                f"{where}['prediction']",
                f"shape {pred.shape} vs truth {truth.shape}",
                "expected prediction and truth of the same 2-D or 3-D shape",
            )
        if ndim is not None and pred.ndim != ndim:
            raise _bad(f"{where}['prediction']", f"{pred.ndim}-D", f"all cases must be {ndim}-D")
        ndim = pred.ndim
        try:
            spacing = tuple(float(s) for s in case["spacing"])
        except (TypeError, ValueError):
            spacing = ()
        if len(spacing) != ndim or not all(math.isfinite(s) and s > 0 for s in spacing):
            raise _bad(f"{where}['spacing']", case["spacing"], f"expected {ndim} positive voxel sizes in mm")
        voxel = float(np.prod(spacing))
        scores = {}
        for name, values in targets.items():
            p_mask, t_mask = np.isin(pred, values), np.isin(truth, values)
            dice, hd95 = _dice_hd95(p_mask, t_mask, spacing)
            vp, vt = float(p_mask.sum()) * voxel, float(t_mask.sum()) * voxel
            scores[name] = {
                "dice": dice,
                "hd95_mm": hd95,
                "volume_pred": vp,
                "volume_truth": vt,
                "volume_error": vp - vt,
            }
        subjects.append({"subject": subject, "spacing": list(spacing), "labels": scores})

    summary = {}
    for name in targets:
        rows = [s["labels"][name] for s in subjects]
        hd = _stats(r["hd95_mm"] for r in rows)
        hd["undefined"] = sum(r["hd95_mm"] is None for r in rows)
        summary[name] = {
            "dice": _stats(r["dice"] for r in rows),
            "hd95_mm": hd,
            "volume_mae": _mean(abs(r["volume_error"]) for r in rows),
            "volume_bias": _mean(r["volume_error"] for r in rows),
        }
    return {
        "labels": {n: (v if n == MERGED else v[0]) for n, v in targets.items()},
        "n_subjects": len(subjects),
        "volume_unit": "mm^3" if ndim == 3 else "mm^2",
        "subjects": subjects,
        "summary": summary,
    }


def best_and_worst_subjects(metrics: dict, label: str | None = None) -> tuple[str, str]:
    """Subjects with the highest and lowest Dice, to choose the overlay cases for the report.

    Args:
        metrics: a :func:`segmentation_metrics` result.
        label: scored label name; default ``"foreground"`` when merged, else the mean Dice over labels.

    Returns:
        (best subject, worst subject); ties go to the first subject in ``metrics["subjects"]``.
    """
    if label is None and MERGED in metrics["labels"]:
        label = MERGED
    if label is not None and label not in metrics["labels"]:
        raise _bad("label", label, f"expected one of {sorted(metrics['labels'])}")

    def dice(s):
        return s["labels"][label]["dice"] if label else float(np.mean([v["dice"] for v in s["labels"].values()]))

    ranked = [(dice(s), i, s["subject"]) for i, s in enumerate(metrics["subjects"])]
    best = min(ranked, key=lambda r: (-r[0], r[1]))
    worst = min(ranked, key=lambda r: (r[0], r[1]))
    return best[2], worst[2]


def _groups(name: str, groups, n: int) -> dict[str, dict[str, np.ndarray]]:
    """{breakdown: {group: row indices}} of ``groups`` {breakdown: (n,) group names}, groups sorted by name."""
    if not isinstance(groups, dict) or not all(isinstance(k, str) for k in groups):
        raise _bad(name, groups, "expected {breakdown name: one group name per row}")
    out = {}
    for key, values in groups.items():
        values = [str(v) for v in values] if isinstance(values, (list, tuple, np.ndarray)) else None
        if values is None or len(values) != n:
            raise _bad(f"{name}[{key!r}]", groups[key], f"expected a list of {n} group names")
        rows = np.asarray(values)
        out[key] = {g: np.flatnonzero(rows == g) for g in sorted(set(values))}
    return out


def classification_breakdown(
    y_true, probabilities, classes: list[str], groups: dict, thresholds: dict | None = None
) -> dict:
    """A classifier's figures within each group of rows (per source, per kind of input...).

    Args:
        y_true, probabilities, classes: as for :func:`classification_metrics` ((N,) int, (N, K) float, K names).
        groups: {breakdown name: (N,) group name of each row}, e.g. {"source": ["lgg", "brats", ...]}.
        thresholds: optional {operating point name: threshold} for a binary classifier (positive class = the
            last one): each group then also gets :func:`operating_point` at each threshold.

    Returns:
        {breakdown: {group: {n, accuracy, balanced_accuracy, macro_f1, recall: {class: recall or None},
        operating_points: {name: operating point} (with ``thresholds`` only)}}}, groups sorted by name.
    """
    y, probs = np.asarray(y_true), np.asarray(probabilities, dtype=float)
    classification_metrics(y, probs, classes)  # validates the whole set once
    if thresholds is not None and (len(classes) != 2 or not isinstance(thresholds, dict)):
        raise _bad("thresholds", thresholds, "expected {name: threshold} for a binary classifier")
    out: dict[str, dict] = {}
    for key, members in _groups("groups", groups, y.shape[0]).items():
        out[key] = {}
        for group, rows in members.items():
            m = classification_metrics(y[rows], probs[rows], classes)
            row = {k: m[k] for k in ("n", "accuracy", "balanced_accuracy", "macro_f1")}
            row["recall"] = {c: v["recall"] for c, v in m["per_class"].items()}
            if thresholds is not None:
                row["operating_points"] = {
                    name: operating_point(y[rows], probs[rows, 1], t) for name, t in thresholds.items()
                }
            out[key][group] = row
    return out


def segmentation_breakdown(metrics: dict, groups: dict) -> dict:
    """Dice within each group of subjects of a :func:`segmentation_metrics` result.

    Args:
        metrics: a :func:`segmentation_metrics` result with S subjects.
        groups: {breakdown name: (S,) group name of each subject, in ``metrics["subjects"]`` order}.

    Returns:
        {breakdown: {group: {n_subjects, dice: {label: stats}}}}, stats = {mean, median, std, min, max, n}.
    """
    subjects = metrics["subjects"]
    out = {}
    for key, members in _groups("groups", groups, len(subjects)).items():
        out[key] = {
            group: {
                "n_subjects": int(rows.size),
                "dice": {name: _stats(subjects[i]["labels"][name]["dice"] for i in rows) for name in metrics["labels"]},
            }
            for group, rows in members.items()
        }
    return out


def per_subject_accuracy(y_true, probabilities, subjects, min_images: int = 2) -> list[dict]:
    """Accuracy of a classifier per subject, for the subjects with at least ``min_images`` rows.

    Args:
        y_true: (N,) int true class indices; probabilities: (N, K) class probabilities (argmax = the call).
        subjects: (N,) subject of each row (a volume scored per slice repeats its subject once per slice).
        min_images: smallest number of rows of a listed subject (>= 1).

    Returns:
        [{subject, n, correct, accuracy}], lowest accuracy first (then by subject).
    """
    if isinstance(min_images, bool) or not isinstance(min_images, (int, np.integer)) or min_images < 1:
        raise _bad("min_images", min_images, "expected an int >= 1")
    y = _vector("y_true", y_true, kind="int")
    probs = np.asarray(probabilities, dtype=float)
    if probs.ndim != 2 or probs.shape[0] != y.size:
        raise _bad("probabilities", f"array of shape {probs.shape}", f"expected shape ({y.size}, K)")
    correct = probs.argmax(axis=1) == y
    members = _groups("subjects", {"subject": subjects}, y.size)["subject"]
    rows = [
        {"subject": s, "n": int(r.size), "correct": int(correct[r].sum()), "accuracy": float(correct[r].mean())}
        for s, r in members.items()
        if r.size >= min_images
    ]
    return sorted(rows, key=lambda r: (r["accuracy"], r["subject"]))


def dice_difference(metrics: dict, reference: dict, label: str) -> dict:
    """Per-subject Dice of ``metrics`` beside ``reference`` (two :func:`segmentation_metrics` results of the same
    subjects, e.g. the tumor pipeline and ``tumor_seg`` alone) for one label.

    Returns:
        {label, subjects: [{subject, dice, dice_reference, difference (dice - reference)}], dice_mean,
        dice_reference_mean, mean_difference}.
    """
    for name, m in (("metrics", metrics), ("reference", reference)):
        if label not in m["labels"]:
            raise _bad("label", label, f"expected a label scored in {name}: {sorted(m['labels'])}")
    ref = {s["subject"]: s["labels"][label]["dice"] for s in reference["subjects"]}
    if sorted(ref) != sorted(s["subject"] for s in metrics["subjects"]):
        raise _bad("reference", sorted(ref), "expected the same subjects as metrics")
    rows = [
        {
            "subject": s["subject"],
            "dice": s["labels"][label]["dice"],
            "dice_reference": ref[s["subject"]],
            "difference": s["labels"][label]["dice"] - ref[s["subject"]],
        }
        for s in metrics["subjects"]
    ]
    return {
        "label": label,
        "subjects": rows,
        "dice_mean": _mean(r["dice"] for r in rows),
        "dice_reference_mean": _mean(r["dice_reference"] for r in rows),
        "mean_difference": _mean(r["difference"] for r in rows),
    }
