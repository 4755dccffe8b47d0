"""mri_label.report: metrics.json, PNG plots and report.md."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
from mri_label.report import _pick_slice, write_report

CAVEAT = "JPEG sets carry no patient ids, so slices of one patient may sit in both train and test."


def _no_nan(token):
    raise AssertionError(f"non-JSON constant {token} in metrics.json")


def _load(path: Path) -> dict:
    return json.loads(path.read_text(), parse_constant=_no_nan)


def _check_png(path: Path):
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= 300 and image.height >= 300
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 5  # not a blank canvas


@pytest.fixture(scope="module")
def gate_report(tmp_path_factory):
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.35, 0.3, 0.6, 0.4, 0.2, 0.1, 0.05, 0.5])
    m = classification_metrics(y, np.c_[1 - p, p], ["no_tumor", "tumor"])
    m["threshold"] = threshold_for_recall(y, p, 0.75)
    meta = {
        "model": Path("/models/tumor_gate.pt"),
        "data": "/data/kaggle",
        "split": "test",
        "n_subjects": None,
        "n_images": np.int64(10),
        "date": "2025-01-02",
        "caveats": CAVEAT,
        "extra": float("nan"),
    }
    out = tmp_path_factory.mktemp("gate") / "report"
    return out, write_report(out, "tumor_gate", "classification", m, meta)


def test_classification_report_files_json_and_markdown(gate_report):
    out, paths = gate_report
    assert [p.name for p in paths] == [
        "metrics.json",
        "confusion_matrix.png",
        "reliability.png",
        "roc.png",
        "report.md",
    ]
    assert all(p.parent == out and p.is_file() for p in paths)
    data = _load(out / "metrics.json")
    assert json.loads(json.dumps(data)) == data
    assert data["meta"] == {
        "task": "tumor_gate",
        "kind": "classification",
        "model": "/models/tumor_gate.pt",
        "data": "/data/kaggle",
        "split": "test",
        "n_subjects": None,
        "n_images": 10,
        "date": "2025-01-02",
        "caveats": CAVEAT,
        "extra": None,
    }
    assert data["metrics"]["threshold"]["threshold"] == 0.35 and data["metrics"]["confusion_matrix"] == [[5, 1], [2, 2]]
    for name in ("confusion_matrix.png", "reliability.png", "roc.png"):
        _check_png(out / name)
    md = (out / "report.md").read_text()
    # argmax at .5: tumor called for .9 .8 .6 -> TP 2, FP 1, FN 2, TN 5; AUC .75 (see test_metrics)
    for row in [
        "| Task | tumor_gate |",
        "| Model | /models/tumor_gate.pt |",
        "| Accuracy | 0.700 |",
        "| tumor | 0.667 | 0.500 | 0.571 | 4 | 0.750 |",
        "| no_tumor | 0.714 | 0.833 | 0.769 | 6 | 0.750 |",
        "| no_tumor | 5 | 1 |",
        "| tumor | 2 | 2 |",
        "positive when p >= 0.350, recall 0.750 (target 0.750), precision 0.500, specificity 0.500, "
        "accuracy 0.600 (TP 3, FP 3, TN 3, FN 1)",
        "![Confusion matrix](confusion_matrix.png)",
        "![ROC curves](roc.png)",
        "## Caveats",
        CAVEAT,
    ]:
        assert row in md, row


def test_multiclass_report_without_threshold_and_default_date(tmp_path):
    m = classification_metrics([0, 1, 2, 3], np.eye(4) * 0.6 + 0.1, ["ND", "VMD", "MD", "MOD"])
    paths = write_report(tmp_path, "dementia_stage", "classification", m, {})
    data = _load(tmp_path / "metrics.json")
    assert data["meta"]["date"] and "threshold" not in data["metrics"] and len(paths) == 5
    md = (tmp_path / "report.md").read_text()
    assert (
        "| MOD | 1.000 | 1.000 | 1.000 | 1 | 1.000 |" in md and "Operating threshold" not in md and "Caveats" not in md
    )


@pytest.fixture(scope="module")
def hippo_report(tmp_path_factory):
    truth = np.zeros((12, 14, 8), int)
    truth[3:7, 4:10, 2:6], truth[7:10, 4:10, 2:6] = 1, 2
    cases = [
        {"subject": f"s{i}", "prediction": np.roll(truth, i, axis=0), "truth": truth, "spacing": (1.0, 1.0, 1.5)}
        for i in range(3)
    ]
    m = segmentation_metrics(cases, {"anterior": 1, "posterior": 2}, merge=True)
    best, worst = best_and_worst_subjects(m)
    image = np.random.default_rng(0).normal(100, 20, truth.shape)
    extras = {
        k: {"subject": s, "image": image, "truth": truth, "prediction": cases[int(s[1])]["prediction"]}
        for k, s in (("best", best), ("worst", worst))
    }
    out = tmp_path_factory.mktemp("hippo")
    return out, m, write_report(out, "hippocampus", "segmentation", m, {"split": "test", "n_subjects": 3}, extras)


def test_segmentation_report_files_and_tables(hippo_report):
    out, m, paths = hippo_report
    assert [p.name for p in paths] == ["metrics.json", "dice.png", "overlay_best.png", "overlay_worst.png", "report.md"]
    data = _load(out / "metrics.json")
    assert data["metrics"]["subjects"][0]["labels"]["foreground"]["dice"] == 1.0
    assert data["metrics"]["summary"]["anterior"]["dice"]["std"] == m["summary"]["anterior"]["dice"]["std"]
    for name in ("dice.png", "overlay_best.png", "overlay_worst.png"):
        _check_png(out / name)
    md = (out / "report.md").read_text()
    s0 = m["subjects"][0]["labels"]["anterior"]
    for row in [
        "## Headline metrics (over 3 subjects)",
        "| Label | Dice mean | Dice median | Dice SD | HD95 mean (mm) | HD95 median (mm) | HD95 undefined | "
        "Volume MAE (mm^3) | Volume bias (mm^3) |",
        f"| s0 | anterior | 1.000 | 0.000 | {s0['volume_pred']:.3f} | {s0['volume_truth']:.3f} | 0.000 |",
        "| s0 | foreground | 1.000 | 0.000 |",
        "![Dice per subject](dice.png)",
        "![Worst case overlay (truth green, prediction red)](overlay_worst.png)",
    ]:
        assert row in md, row
    assert md.count("| s2 |") == 4  # the Dice-per-subject row and one row per label
    # MSD-style: one row per subject with a Dice column per label, then the mean of each label
    s1 = m["subjects"][1]["labels"]
    assert "| Subject | Source | Dice anterior | Dice posterior | Dice foreground |" in md
    assert (
        f"| s1 |  | {s1['anterior']['dice']:.3f} | {s1['posterior']['dice']:.3f} | {s1['foreground']['dice']:.3f} |"
        in md
    )
    means = [m["summary"][k]["dice"]["mean"] for k in ("anterior", "posterior", "foreground")]
    assert "| mean |  | " + " | ".join(f"{v:.3f}" for v in means) + " |" in md


def test_2d_segmentation_with_rgb_slice_and_undefined_hd95(tmp_path):
    truth = np.zeros((40, 40), int)
    truth[10:25, 12:30] = 1
    cases = [
        {"subject": "slice|1", "prediction": truth, "truth": truth, "spacing": (0.5, 0.5)},
        {"subject": "slice2", "prediction": np.zeros_like(truth), "truth": truth, "spacing": (0.5, 0.5)},
    ]
    m = segmentation_metrics(cases, {"tumor": 1})
    rgb = np.dstack([truth * 200 + 20] * 3).astype(np.uint8)
    extras = {"worst": {"subject": "slice2", "image": rgb, "truth": truth, "prediction": cases[1]["prediction"]}}
    paths = write_report(tmp_path, "tumor_seg", "segmentation", m, {"caveats": CAVEAT}, extras)
    assert [p.name for p in paths] == ["metrics.json", "dice.png", "overlay_worst.png", "report.md"]
    _check_png(tmp_path / "overlay_worst.png")
    data = _load(tmp_path / "metrics.json")
    assert data["metrics"]["subjects"][1]["labels"]["tumor"]["hd95_mm"] is None
    md = (tmp_path / "report.md").read_text()
    # 15 x 18 px x 0.25 mm^2 = 67.5 mm^2
    assert "| slice2 | tumor | 0.000 | n/a | 0.000 | 67.500 | -67.500 |" in md and "| slice\\|1 | tumor |" in md
    assert "| tumor | 0.500 | 0.500 | 0.707 | 0.000 | 0.000 | 1 | 33.750 | -33.750 |" in md  # SD sqrt(.5)


def test_pick_slice_takes_the_largest_truth_area():
    truth = np.zeros((6, 6, 5), int)
    truth[1:3, 1:3, 1] = 1
    truth[1:5, 1:5, 3] = 2
    image = np.arange(truth.size, dtype=float).reshape(truth.shape)
    img, t, p, volume = _pick_slice({"image": image, "truth": truth, "prediction": truth}, "extras['best']")
    assert volume and np.array_equal(img, image[:, :, 3]) and t.sum() == 32
    img, *_ = _pick_slice({"image": image, "truth": truth, "prediction": truth, "axis": 0}, "x")
    assert np.array_equal(img, image[1])  # rows 1-2 hold 2 + 4 voxels each, rows 3-4 only 4


@pytest.mark.parametrize(
    "kind, extras, message",
    [
        ("regression", None, "kind: expected one of"),
        (
            "segmentation",
            {
                "best": {
                    "subject": "s",
                    "image": np.zeros((3, 3)),
                    "truth": np.zeros((4, 4)),
                    "prediction": np.zeros((4, 4)),
                }
            },
            "extras['best']['image']: expected shape (4, 4)",
        ),
    ],
)
def test_write_report_rejects_bad_arguments(tmp_path, kind, extras, message):
    m = segmentation_metrics(
        [{"subject": "s", "prediction": np.ones((4, 4)), "truth": np.ones((4, 4)), "spacing": (1, 1)}], {"fg": 1}
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        write_report(tmp_path / "out", "t", kind, m, {}, extras)
    assert not (tmp_path / "out").exists()  # nothing written on bad input


def test_json_has_no_nan_even_when_metrics_carry_numpy_and_nan(tmp_path):
    m = classification_metrics([0, 1], [[0.9, 0.1], [0.2, 0.8]], ["a", "b"])
    m["note"] = {"x": np.float32("nan"), "y": [np.float64(math.inf), np.int32(3)]}
    write_report(tmp_path, "sequence", "classification", m, {})
    text = (tmp_path / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert _load(tmp_path / "metrics.json")["metrics"]["note"] == {"x": None, "y": [None, 3]}


def _gate_with_breakdown():
    """The gate example above split into two sources, with both operating points and per-subject accuracy."""
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.35, 0.3, 0.6, 0.4, 0.2, 0.1, 0.05, 0.5])
    probs = np.c_[1 - p, p]
    m = classification_metrics(y, probs, ["no_tumor", "tumor"])
    m["threshold"] = {**threshold_for_recall(y, p, 0.75), "chosen_on": "val subjects"}
    m["operating_points"] = {
        "shipped": {**operating_point(y, p, 0.5), "chosen_on": "tumor_gate_threshold (config)"},
        "recall_targeted": operating_point(y, p, 0.35),
    }
    sources = ["lgg"] * 5 + ["brats"] * 5
    groups = {"source": sources, "dims": ["volume"] * 10, "skull": ["with skull"] * 5 + ["skull-stripped"] * 5}
    m["breakdown"] = classification_breakdown(y, probs, m["classes"], groups, {"shipped": 0.5, "recall_targeted": 0.35})
    m["per_subject"] = per_subject_accuracy(y, probs, ["p1", "p1", "p2", "p2", "p2", "p3", "p3", "p3", "p3", "p4"])
    return m


def test_classification_report_per_source_operating_points_and_subjects(tmp_path):
    m = _gate_with_breakdown()
    write_report(tmp_path, "tumor_gate", "classification", m, {})
    data = _load(tmp_path / "metrics.json")["metrics"]
    assert set(data["breakdown"]) == {"source", "dims", "skull"} and set(data["operating_points"]) == {
        "shipped",
        "recall_targeted",
    }
    md = (tmp_path / "report.md").read_text()
    # lgg rows .9+ .8+ .35+ .3+ .6-: argmax calls .9 .8 .6 -> TP 2 FN 2 FP 1: accuracy 2/5, recall tumor 1/2, no_tumor 0
    # brats rows .4- .2- .1- .05- .5-: .5 is a tie -> no_tumor (first class): all correct, no tumor row (recall n/a)
    for row in [
        "## Per source and kind of input",
        "| Breakdown | Group | Images | Accuracy | Balanced accuracy | Macro-F1 | Recall no_tumor | Recall tumor |",
        "| all | all | 10 | 0.700 | 0.667 | 0.670 | 0.833 | 0.500 |",
        "| source | lgg | 5 | 0.400 | 0.250 |",
        "| 0.000 | 0.500 |",
        "| source | brats | 5 | 1.000 | 1.000 | 1.000 | 1.000 | n/a |",
        "| skull | skull-stripped | 5 | 1.000 |",
        "| dims | volume | 10 | 0.700 |",
        "## Operating points",
        "| shipped | 0.500 | 0.600 | 0.500 | 0.667 | 0.500 | 2 | 2 | 4 | 2 | tumor_gate_threshold (config) |",
        "| recall_targeted | 0.350 | 0.600 | 0.750 | 0.500 | 0.500 | 3 | 3 | 3 | 1 | n/a |",
        # lgg at .35: calls .9 .8 .35 .6 -> recall 3/4, spec 0/1; brats at .5: .5 called -> spec 4/5
        "| source: lgg | recall_targeted | 0.350 | 0.600 | 0.750 | 0.000 | 4 | 1 |",
        "| source: brats | shipped | 0.500 | 0.800 | n/a | 0.800 | 0 | 5 |",
        "## Per subject (subjects with several images or slices, lowest accuracy first)",
        "| p2 | 3 | 0 | 0.000 |",
        "| p1 | 2 | 2 | 1.000 |",
        "| p3 | 4 | 4 | 1.000 |",
    ]:
        assert row in md, row
    assert "| p4 |" not in md  # one image only
    assert md.index("| p2 | 3 |") < md.index("| p1 | 2 |") < md.index("| p3 | 4 |")  # p2: .35+ .3+ .6- all missed


@pytest.mark.parametrize("section", ["breakdown", "operating_points", "per_subject"])
def test_classification_report_sections_follow_the_metrics(tmp_path, section):
    m = _gate_with_breakdown()
    del m[section]
    write_report(tmp_path, "tumor_gate", "classification", m, {})
    md = (tmp_path / "report.md").read_text()
    title = {
        "breakdown": "## Per source and kind of input",
        "operating_points": "## Operating points",
        "per_subject": "## Per subject",
    }[section]
    assert title not in md
    for other, other_title in (
        ("breakdown", "## Per source"),
        ("operating_points", "## Operating points"),
        ("per_subject", "## Per subject"),
    ):
        if other != section:
            assert other_title in md, other_title


def _pipeline_metrics():
    truth = np.zeros((8, 8, 4), int)
    truth[2:6, 2:6, 1:3] = 1
    half = truth.copy()
    half[2:4] = 0
    cases = [
        {"subject": "b1", "prediction": truth, "truth": truth, "spacing": (1.0, 1.0, 1.0)},
        {"subject": "b2", "prediction": half, "truth": truth, "spacing": (1.0, 1.0, 1.0)},
    ]
    alone = [dict(cases[0]), dict(cases[1], prediction=truth)]
    m, ref = segmentation_metrics(cases, {"tumor": 1}), segmentation_metrics(alone, {"tumor": 1})
    for subject, source in zip(m["subjects"], ("brats", "lgg")):
        subject["source"] = source
    groups = {"source": ["brats", "lgg"], "dims": ["volume"] * 2, "skull": ["skull-stripped", "with skull"]}
    m["breakdown"] = segmentation_breakdown(m, groups)
    diff = dice_difference(m, ref, "tumor")
    for row in diff["subjects"]:
        row["fired_slices"] = 2
    m["comparison"] = {**diff, "reference_task": "tumor_seg", "tolerance": 0.03, "within_tolerance": False}
    return m


def test_pipeline_report_sets_its_dice_beside_the_reference(tmp_path):
    m = _pipeline_metrics()
    write_report(tmp_path, "tumor_pipeline", "segmentation", m, {})
    md = (tmp_path / "report.md").read_text()
    # b2: half the tumor (rows 4-5 of 2-5) -> Dice 2 x 16 / (16 + 32) = 2/3; mean (1 + 2/3) / 2 = 5/6
    for row in [
        "## Beside `tumor_seg` alone (same volumes)",
        "Mean Dice (tumor): pipeline 0.833, `tumor_seg` alone 1.000, difference -0.167: NOT within 0.03 of `tumor_seg` "
        "alone.",
        "| b2 | 0.667 | 1.000 | -0.333 | 2 |",
        "| b1 | brats | 1.000 |",
        "| b2 | lgg | 0.667 |",
        "| Breakdown | Group | Subjects | Dice tumor mean | Dice tumor median |",
        "| source | brats | 1 | 1.000 | 1.000 |",
        "| skull | with skull | 1 | 0.667 | 0.667 |",
        "| dims | volume | 2 | 0.833 | 0.833 |",
        "## Per subject and label",
    ]:
        assert row in md, row
    assert _load(tmp_path / "metrics.json")["metrics"]["comparison"]["within_tolerance"] is False
