"""Write an evaluation report: ``metrics.json``, PNG plots and ``report.md``.

Plots use matplotlib's object API (``matplotlib.figure.Figure``, rendered by the Agg canvas), so no
pyplot state or GUI backend is touched and the module is safe inside the server.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mri_label.core.atomic import atomic_write_text
from mri_label.metrics import MERGED

KINDS = ("classification", "segmentation")
META_KEYS = ("task", "kind", "model", "data", "split", "n_subjects", "n_images", "date", "caveats")
TRUTH_COLOR, PRED_COLOR = "lime", "red"


def _jsonable(value):
    """``value`` with numpy types, paths and dates converted and NaN / infinity replaced by None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _confusion_png(path: Path, m: dict) -> Path:
    from matplotlib.figure import Figure

    cm = np.asarray(m["confusion_matrix"], dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(m["classes"])
    fig = Figure(figsize=(5.5 * 2, 0.6 * k + 3.5))
    for ax, data, title, fmt in zip(
        fig.subplots(1, 2), (cm, norm), ("counts", "row-normalised (recall)"), ("{:.0f}", "{:.2f}")
    ):
        image = ax.imshow(data, cmap="Blues", vmin=0, vmax=max(data.max(), 1e-9))
        fig.colorbar(image, ax=ax, fraction=0.046)
        for (i, j), v in np.ndenumerate(data):
            ax.text(j, i, fmt.format(v), ha="center", va="center", color="white" if v > data.max() / 2 else "black")
        ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true", title=f"Confusion matrix, {title}")
        ax.set_xticklabels(m["classes"], rotation=30, ha="right")
        ax.set_yticklabels(m["classes"])
    return _save(fig, path)


def _reliability_png(path: Path, task: str, m: dict) -> Path:
    from matplotlib.figure import Figure

    rel = m["reliability"]
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    full = [i for i, c in enumerate(rel["count"]) if c]
    lower, upper = np.asarray(rel["bin_lower"]), np.asarray(rel["bin_upper"])
    ax.bar(
        lower[full],
        [rel["accuracy"][i] for i in full],
        width=(upper - lower)[full],
        align="edge",
        edgecolor="navy",
        alpha=0.7,
        label="accuracy in bin",
    )
    ax.plot(
        [rel["confidence"][i] for i in full],
        [rel["accuracy"][i] for i in full],
        "o",
        color="navy",
        label="bin mean confidence",
    )
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        xlabel="confidence (max probability)",
        ylabel="accuracy",
        title=f"{task}: reliability, ECE = {m['ece']:.3f} (15 bins)",
    )
    ax.legend(loc="upper left")
    return _save(fig, path)


def _roc_png(path: Path, task: str, m: dict, threshold: dict | None) -> Path | None:
    from matplotlib.figure import Figure

    curves = dict(m.get("roc_curves") or {})
    positive = m["classes"][-1]
    if threshold and threshold.get("roc") and len(m["classes"]) == 2:
        curves = {positive: {**threshold["roc"], "auc": threshold["auc"]}}
    if not curves and not threshold:
        return None
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    for name, c in curves.items():
        ax.plot(c["fpr"], c["tpr"], label=f"{name} (AUC {_fmt(c['auc'])})")
    ax.plot([0, 1], [0, 1], ":", color="gray")
    title = f"{task}: ROC" + (" (one-vs-rest)" if len(curves) > 1 else "")
    if threshold:
        spec = threshold["specificity"]
        ax.axhline(
            threshold["target_recall"],
            ls="--",
            color="tab:red",
            lw=1,
            label=f"target recall {threshold['target_recall']:.2f}",
        )
        if spec is not None:
            ax.plot(
                [1 - spec],
                [threshold["recall"]],
                "o",
                ms=9,
                color="tab:red",
                label=f"threshold {threshold['threshold']:.3f}: recall {threshold['recall']:.3f}, spec. {spec:.3f}",
            )
        title = f"{task}: ROC of '{positive}' and operating point"
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        xlabel="false positive rate (1 - specificity)",
        ylabel="true positive rate (recall)",
        title=title,
    )
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def _case_dice(m: dict, subject: str) -> float | None:
    for s in m["subjects"]:
        if s["subject"] == subject:
            scores = s["labels"]
            return scores[MERGED]["dice"] if MERGED in scores else float(np.mean([v["dice"] for v in scores.values()]))
    return None


def _dice_png(path: Path, task: str, m: dict) -> Path:
    from matplotlib.figure import Figure

    names = list(m["labels"])
    fig = Figure(figsize=(max(5.5, 1.6 * len(names) + 3), 4.5))
    ax = fig.subplots()
    for i, name in enumerate(names):
        dice = np.array([s["labels"][name]["dice"] for s in m["subjects"]])
        x = i + (np.linspace(-0.25, 0.25, dice.size) if dice.size > 1 else np.zeros(1))
        ax.plot(x, dice, "o", alpha=0.7, color=f"C{i}")
        # label None: no legend entry (matplotlib accepts it; its annotation says str)
        ax.hlines(dice.mean(), i - 0.35, i + 0.35, color="black", lw=2, label="mean" if i == 0 else None)  # type: ignore[arg-type]
        ax.hlines(
            np.median(dice),
            i - 0.35,
            i + 0.35,
            color="gray",
            lw=1.5,
            ls="--",
            label="median" if i == 0 else None,  # type: ignore[arg-type]
        )
    ax.set(
        xticks=range(len(names)),
        ylim=(-0.02, 1.05),
        ylabel="Dice",
        xlim=(-0.6, len(names) - 0.4),
        title=f"{task}: Dice per subject (n = {m['n_subjects']})",
    )
    ax.set_xticklabels(names)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def _pick_slice(case: dict, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """(image, truth, prediction) 2-D slices; a 3-D case is cut where the truth area is largest."""
    image, truth, pred = (np.asarray(case[k]) for k in ("image", "truth", "prediction"))
    if truth.shape != pred.shape or truth.ndim not in (2, 3):
        raise ValueError(
            f"{where}: truth and prediction must share a 2-D or 3-D shape; got {truth.shape} and {pred.shape}"
        )
    if truth.ndim == 2 and image.ndim == 3 and image.shape[:2] == truth.shape and image.shape[2] in (3, 4):
        image = image[..., :3].mean(axis=2)  # RGB(A) slice -> gray
    if image.shape != truth.shape:
        raise ValueError(f"{where}['image']: expected shape {truth.shape} like the truth; got {image.shape}")
    if truth.ndim == 2:
        return image, truth, pred, False
    axis = int(case.get("axis", 2))
    other = tuple(a for a in range(3) if a != axis)
    areas = (truth > 0).sum(axis=other)
    if not areas.any():
        areas = (pred > 0).sum(axis=other)
    index = int(np.argmax(areas)) if areas.any() else truth.shape[axis] // 2
    return tuple(np.take(a, index, axis=axis) for a in (image, truth, pred)) + (True,)


def _overlay_png(path: Path, which: str, case: dict, cut: tuple, m: dict) -> Path:
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    image, truth, pred, volume = cut
    if volume:  # NIfTI (x, y) arrays: x to the right, y up
        image, truth, pred = image.T, truth.T, pred.T
    fig = Figure(figsize=(5, 5.3))
    ax = fig.subplots()
    lo, hi = np.percentile(image, (1, 99)) if image.size else (0, 1)
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, origin="lower" if volume else "upper")
    for mask, color in ((truth, TRUTH_COLOR), (pred, PRED_COLOR)):
        for value in np.unique(mask[mask > 0]):
            ax.contour((mask == value).astype(float), levels=[0.5], colors=[color], linewidths=1.2)  # pixel centres
    subject = str(case.get("subject", which))
    ax.set_title(f"{which} case: {subject} (Dice {_fmt(_case_dice(m, subject))})")
    ax.legend(
        handles=[
            Line2D([], [], color=TRUTH_COLOR, label="truth"),
            Line2D([], [], color=PRED_COLOR, label="prediction"),
        ],
        loc="lower right",
        fontsize=8,
    )
    ax.set_axis_off()
    return _save(fig, path)


def _meta_lines(task: str, meta: dict) -> list[str]:
    rows: list[list] = [
        ["Task", task],
        ["Model", meta.get("model")],
        ["Data", meta.get("data")],
        ["Split", meta.get("split")],
        ["Subjects", meta.get("n_subjects")],
        ["Images", meta.get("n_images")],
        ["Date", meta.get("date")],
    ]
    return [f"# Evaluation of `{task}`", ""] + _table(["", ""], rows) + [""]


def _classification_md(m: dict, threshold: dict | None) -> list[str]:
    lines = ["## Headline metrics", ""] + _table(
        ["Metric", "Value"],
        [
            ["Accuracy", m["accuracy"]],
            ["Balanced accuracy", m["balanced_accuracy"]],
            ["Macro-F1", m["macro_f1"]],
            ["Macro ROC-AUC (one-vs-rest)", m["macro_roc_auc"]],
            ["ECE (15 bins, max probability)", m["ece"]],
            ["Images", m["n"]],
        ],
    )
    if threshold:
        lines += [
            "",
            f"**Operating threshold for `{m['classes'][-1] if len(m['classes']) == 2 else 'positive'}`**: "
            f"positive when p >= {_fmt(threshold['threshold'])}, recall {_fmt(threshold['recall'])} "
            f"(target {_fmt(threshold['target_recall'])}), precision {_fmt(threshold['precision'])}, "
            f"specificity {_fmt(threshold['specificity'])}, accuracy {_fmt(threshold['accuracy'])} "
            f"(TP {threshold['tp']}, FP {threshold['fp']}, TN {threshold['tn']}, FN {threshold['fn']})"
            + (
                f"; threshold chosen on the {threshold['chosen_on']}, figures on the evaluated split."
                if threshold.get("chosen_on")
                else "."
            ),
        ]
    lines += ["", "## Per class", ""] + _table(
        ["Class", "Precision", "Recall", "F1", "Support", "ROC-AUC"],
        [
            [name, c["precision"], c["recall"], c["f1"], c["support"], c["roc_auc"]]
            for name, c in m["per_class"].items()
        ],
    )
    lines += ["", "## Confusion matrix (rows = true, columns = predicted)", ""]
    lines += _table(
        ["true \\ predicted", *m["classes"]], [[c, *row] for c, row in zip(m["classes"], m["confusion_matrix"])]
    )
    return lines + _operating_points_md(m) + _classification_breakdown_md(m) + _subject_accuracy_md(m)


def _operating_points_md(m: dict) -> list[str]:
    """A binary gate at each of its operating points (``m["operating_points"]``), on the whole test set and per
    group."""
    points = m.get("operating_points")
    if not points:
        return []
    header = [
        "Operating point",
        "Threshold",
        "Accuracy",
        "Recall",
        "Specificity",
        "Precision",
        "TP",
        "FP",
        "TN",
        "FN",
        "Chosen on",
    ]
    lines = ["", "## Operating points", ""] + _table(
        header,
        [
            [
                name,
                p["threshold"],
                p["accuracy"],
                p["recall"],
                p["specificity"],
                p["precision"],
                p["tp"],
                p["fp"],
                p["tn"],
                p["fn"],
                p.get("chosen_on"),
            ]
            for name, p in points.items()
        ],
    )
    rows = [
        [
            f"{key}: {group}",
            name,
            p["threshold"],
            p["accuracy"],
            p["recall"],
            p["specificity"],
            p["n_positive"],
            p["n_negative"],
        ]
        for key, groups in (m.get("breakdown") or {}).items()
        for group, g in groups.items()
        for name, p in (g.get("operating_points") or {}).items()
    ]
    if rows:
        lines += ["", "Per source and kind of input:", ""] + _table(
            ["Group", "Operating point", "Threshold", "Accuracy", "Recall", "Specificity", "Positives", "Negatives"],
            rows,
        )
    return lines


def _classification_breakdown_md(m: dict) -> list[str]:
    """Accuracy and per-class recall per source and kind of input (``m["breakdown"]``)."""
    breakdown = m.get("breakdown")
    if not breakdown:
        return []
    rows = [
        [
            "all",
            "all",
            m["n"],
            m["accuracy"],
            m["balanced_accuracy"],
            m["macro_f1"],
            *(c["recall"] for c in m["per_class"].values()),
        ]
    ]
    rows += [
        [
            key,
            group,
            g["n"],
            g["accuracy"],
            g["balanced_accuracy"],
            g["macro_f1"],
            *(g["recall"].get(c) for c in m["classes"]),
        ]
        for key, groups in breakdown.items()
        for group, g in groups.items()
    ]
    header = [
        "Breakdown",
        "Group",
        "Images",
        "Accuracy",
        "Balanced accuracy",
        "Macro-F1",
        *(f"Recall {c}" for c in m["classes"]),
    ]
    return (
        ["", "## Per source and kind of input", ""]
        + _table(header, rows)
        + [
            "",
            "Balanced accuracy and macro-F1 average over the classes present in the group; n/a: no such image in it.",
        ]
    )


def _subject_accuracy_md(m: dict) -> list[str]:
    """Per-subject accuracy (``m["per_subject"]``: subjects with several images or slices), lowest first."""
    subjects = m.get("per_subject")
    if subjects is None:
        return []
    if not subjects:
        return ["", "## Per subject", "", "No test subject has more than one image."]
    return ["", "## Per subject (subjects with several images or slices, lowest accuracy first)", ""] + _table(
        ["Subject", "Images", "Correct", "Accuracy"],
        [[s["subject"], s["n"], s["correct"], s["accuracy"]] for s in subjects],
    )


def _segmentation_md(m: dict) -> list[str]:
    unit = m["volume_unit"]
    lines = [f"## Headline metrics (over {m['n_subjects']} subjects)", ""] + _table(
        [
            "Label",
            "Dice mean",
            "Dice median",
            "Dice SD",
            "HD95 mean (mm)",
            "HD95 median (mm)",
            "HD95 undefined",
            f"Volume MAE ({unit})",
            f"Volume bias ({unit})",
        ],
        [
            [
                name,
                s["dice"]["mean"],
                s["dice"]["median"],
                s["dice"]["std"],
                s["hd95_mm"]["mean"],
                s["hd95_mm"]["median"],
                s["hd95_mm"]["undefined"],
                s["volume_mae"],
                s["volume_bias"],
            ]
            for name, s in m["summary"].items()
        ],
    )
    lines += [
        "",
        "Empty masks: both empty -> Dice 1, HD95 0; one empty -> Dice 0, HD95 n/a (left out of the HD95 "
        "statistics, counted as undefined). Volume error = predicted - true.",
    ]
    lines += _dice_per_subject_md(m) + _comparison_md(m) + _segmentation_breakdown_md(m)
    lines += ["", "## Per subject and label", ""] + _table(
        [
            "Subject",
            "Label",
            "Dice",
            "HD95 (mm)",
            f"Predicted volume ({unit})",
            f"True volume ({unit})",
            f"Error ({unit})",
        ],
        [
            [s["subject"], name, v["dice"], v["hd95_mm"], v["volume_pred"], v["volume_truth"], v["volume_error"]]
            for s in m["subjects"]
            for name, v in s["labels"].items()
        ],
    )
    return lines


def _dice_per_subject_md(m: dict) -> list[str]:
    """Dice per subject, one column per label (as the Medical Segmentation Decathlon reports it), and the mean."""
    names = list(m["labels"])
    rows = [[s["subject"], s.get("source", ""), *(s["labels"][n]["dice"] for n in names)] for s in m["subjects"]]
    rows.append(["mean", "", *(m["summary"][n]["dice"]["mean"] for n in names)])
    return ["", "## Dice per subject", ""] + _table(["Subject", "Source", *(f"Dice {n}" for n in names)], rows)


def _segmentation_breakdown_md(m: dict) -> list[str]:
    """Mean and median Dice per label within each source and kind of input (``m["breakdown"]``)."""
    breakdown = m.get("breakdown")
    if not breakdown:
        return []
    names = list(m["labels"])
    rows = [
        [key, group, g["n_subjects"], *(g["dice"][n][stat] for n in names for stat in ("mean", "median"))]
        for key, groups in breakdown.items()
        for group, g in groups.items()
    ]
    header = ["Breakdown", "Group", "Subjects", *(f"Dice {n} {stat}" for n in names for stat in ("mean", "median"))]
    return ["", "## Per source and kind of input", ""] + _table(header, rows)


def _comparison_md(m: dict) -> list[str]:
    """A pipeline's per-subject Dice beside its reference task's alone on the same volumes (``m["comparison"]``)."""
    c = m.get("comparison")
    if not c:
        return []
    ref = c["reference_task"]
    verdict = "within" if c["within_tolerance"] else "NOT within"
    lines = [
        "",
        f"## Beside `{ref}` alone (same volumes)",
        "",
        f"Mean Dice ({c['label']}): pipeline {_fmt(c['dice_mean'])}, `{ref}` alone {_fmt(c['dice_reference_mean'])}, "
        f"difference {_fmt(c['mean_difference'])}: {verdict} {_fmt(c['tolerance'], 2)} of `{ref}` alone.",
        "",
    ]
    return lines + _table(
        ["Subject", "Pipeline Dice", f"{ref} Dice", "Difference", "Slices where the gate fired"],
        [[r["subject"], r["dice"], r["dice_reference"], r["difference"], r.get("fired_slices")] for r in c["subjects"]],
    )


def write_report(out_dir, task: str, kind: str, metrics: dict, meta: dict, extras: dict | None = None) -> list[Path]:
    """Write ``metrics.json``, the PNG plots and ``report.md`` into ``out_dir`` (created if needed).

    Args:
        out_dir: output folder.
        task: task name, e.g. "tumor_gate".
        kind: "classification" (``metrics`` from ``classification_metrics``, optionally with
            ``metrics["threshold"]`` = a ``threshold_for_recall`` result for a binary gate, positive class
            = the last class) or "segmentation" (``metrics`` from ``segmentation_metrics``).
        metrics: the metrics dict.
        meta: run description: ``model`` (checkpoint path), ``data`` (folder), ``split``, ``n_subjects``,
            ``n_images``, ``date`` (default: now, UTC), ``caveats`` (one paragraph); missing keys -> null.
        extras: optional. ``threshold``: same as ``metrics["threshold"]``. For segmentation, ``best`` and
            ``worst``: {subject, image, truth, prediction[, axis]} with 2-D slices (H, W) (image may be
            (H, W, 3) RGB) or 3-D volumes (X, Y, Z) cut along ``axis`` (default 2) where the truth area is
            largest; drawn as gray image, truth contour green, prediction contour red.

    Returns:
        Paths written: metrics.json, the PNGs, report.md.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}; got {kind!r}")
    if not isinstance(metrics, dict) or not isinstance(meta, dict):
        raise ValueError(f"metrics and meta: expected dicts; got {type(metrics).__name__} and {type(meta).__name__}")
    extras = extras or {}
    cuts = {
        which: _pick_slice(extras[which], f"extras[{which!r}]")
        for which in ("best", "worst")
        if kind == "segmentation" and extras.get(which)
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {**{key: None for key in META_KEYS}, **meta, "task": task, "kind": kind}
    meta["date"] = meta["date"] or datetime.now(timezone.utc).isoformat(timespec="seconds")
    threshold = metrics.get("threshold") or extras.get("threshold")
    if threshold:
        metrics = {**metrics, "threshold": threshold}
    json_path = out / "metrics.json"
    atomic_write_text(
        json_path, json.dumps(_jsonable({"meta": meta, "metrics": metrics}), indent=2, allow_nan=False) + "\n"
    )

    plots: list[tuple[str, Path | None]] = []
    if kind == "classification":
        lines = _classification_md(metrics, threshold)
        plots += [
            ("Confusion matrix", _confusion_png(out / "confusion_matrix.png", metrics)),
            ("Reliability diagram", _reliability_png(out / "reliability.png", task, metrics)),
            ("ROC curves", _roc_png(out / "roc.png", task, metrics, threshold)),
        ]
    else:
        lines = _segmentation_md(metrics)
        plots.append(("Dice per subject", _dice_png(out / "dice.png", task, metrics)))
        plots += [
            (
                f"{which.capitalize()} case overlay (truth green, prediction red)",
                _overlay_png(out / f"overlay_{which}.png", which, extras[which], cut, metrics),
            )
            for which, cut in cuts.items()
        ]
    drawn = [(title, path) for title, path in plots if path is not None]
    text = _meta_lines(task, meta) + lines + ["", "## Plots", ""]
    text += [f"![{title}]({path.name})" for title, path in drawn]
    if meta.get("caveats"):
        text += ["", "## Caveats", "", str(meta["caveats"]).strip()]
    md_path = out / "report.md"
    md_path.write_text("\n".join(text) + "\n")
    return [json_path, *(path for _, path in drawn), md_path]
