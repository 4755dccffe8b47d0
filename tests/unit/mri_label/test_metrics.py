"""mri_label.metrics against hand-computed values (the arithmetic is in the comments)."""

import re

import numpy as np
import pytest

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

# ECE bins are (k/15, (k+1)/15]; edges near the values used: .4667 .5333 .6 .6667 .7333 .8 .8667 .9333 -
# the confidences below avoid the edges.
THREE_CLASS = dict(
    classes=["a", "b", "c"],
    y_true=[0, 0, 1, 1, 2, 2],
    probabilities=[
        [0.70, 0.20, 0.10],  # true a, pred a, conf .70 (bin 10) correct
        [0.30, 0.65, 0.05],  # true a, pred b, conf .65 (bin 9)  wrong
        [0.25, 0.50, 0.25],  # true b, pred b, conf .50 (bin 7)  correct
        [0.05, 0.90, 0.05],  # true b, pred b, conf .90 (bin 13) correct
        [0.15, 0.15, 0.70],  # true c, pred c, conf .70 (bin 10) correct
        [0.50, 0.05, 0.45],  # true c, pred a, conf .50 (bin 7)  wrong
    ],
    expected=dict(
        accuracy=4 / 6,
        balanced_accuracy=(1 / 2 + 2 / 2 + 1 / 2) / 3,  # recalls a 1/2, b 2/2, c 1/2
        # precision a 1/2 (r0 of r0,r5), b 2/3 (r2,r3 of r1,r2,r3), c 1/1; F1 = 2TP / (2TP + FP + FN):
        # a 2/(2+1+1) = 1/2, b 4/(4+1+0) = 4/5, c 2/(2+0+1) = 2/3
        macro_f1=(1 / 2 + 4 / 5 + 2 / 3) / 3,  # = 59/90
        # AUC a: positives .70,.30 vs negatives .25,.05,.15,.50 -> 4 + 3 wins of 8 = .875
        #     b: positives .50,.90 vs .20,.65,.15,.05 -> 3 + 4 = 7/8; c: .70,.45 vs .10,.05,.25,.05 -> 8/8
        macro_roc_auc=(0.875 + 0.875 + 1.0) / 3,
        # ECE: bin 7 {.5 ok, .5 wrong}: |.5-.5| = 0; bin 9 {.65 wrong}: .65 x 1/6;
        #      bin 10 {.7 ok, .7 ok}: .3 x 2/6; bin 13 {.9 ok}: .1 x 1/6 -> (.65 + .6 + .1) / 6 = .225
        ece=0.225,
        confusion_matrix=[[1, 1, 0], [0, 2, 0], [1, 0, 1]],
        per_class={
            "a": dict(precision=1 / 2, recall=1 / 2, f1=1 / 2, support=2, roc_auc=0.875),
            "b": dict(precision=2 / 3, recall=1.0, f1=4 / 5, support=2, roc_auc=0.875),
            "c": dict(precision=1.0, recall=1 / 2, f1=2 / 3, support=2, roc_auc=1.0),
        },
    ),
)

BINARY_TIE = dict(
    classes=["neg", "pos"],
    y_true=[0, 1, 0, 1],
    probabilities=[[0.65, 0.35], [0.65, 0.35], [0.90, 0.10], [0.10, 0.90]],  # preds 0, 0, 0, 1
    expected=dict(
        accuracy=3 / 4,
        balanced_accuracy=(2 / 2 + 1 / 2) / 2,
        # F1 neg: 2*2 / (4 + 1 FP + 0) = 4/5; pos: 2*1 / (2 + 0 + 1 FN) = 2/3
        macro_f1=(4 / 5 + 2 / 3) / 2,
        # AUC pos: positives .35,.90 vs negatives .35,.10: .90 wins 2, .35 ties .35 (1/2) and beats .10 -> 3.5/4
        macro_roc_auc=0.875,
        # ECE: bin 9 {.65 ok, .65 wrong}: |.5-.65| x 2/4; bin 13 {.9 ok, .9 ok}: |1-.9| x 2/4 -> .075 + .05
        ece=0.125,
        confusion_matrix=[[2, 0], [1, 1]],
        per_class={
            "neg": dict(precision=2 / 3, recall=1.0, f1=4 / 5, support=2, roc_auc=0.875),
            "pos": dict(precision=1.0, recall=1 / 2, f1=2 / 3, support=2, roc_auc=0.875),
        },
    ),
)

CLASS_ABSENT = dict(
    classes=["a", "b", "c"],
    y_true=[0, 0, 1, 1],  # no "c" in the truth
    probabilities=[
        [0.85, 0.10, 0.05],  # true a, pred a, conf .85 (bin 12) correct
        [0.20, 0.10, 0.70],  # true a, pred c, conf .70 (bin 10) wrong
        [0.30, 0.55, 0.15],  # true b, pred b, conf .55 (bin 8)  correct
        [0.10, 0.85, 0.05],  # true b, pred b, conf .85 (bin 12) correct
    ],
    expected=dict(
        accuracy=3 / 4,
        balanced_accuracy=(1 / 2 + 1.0) / 2,  # recall of c undefined -> averaged over a, b
        # F1 a 2/(2+0+1) = 2/3, b 4/4 = 1, c 0/(0+1 FP+0) = 0 (predicted once, never true)
        macro_f1=(2 / 3 + 1 + 0) / 3,
        # AUC a: .85,.20 vs .30,.10 -> 2 + 1 = 3/4; b: .55,.85 vs .10,.10 -> 4/4; c undefined
        macro_roc_auc=(0.75 + 1.0) / 2,
        # ECE: bin 12 {.85 ok x2}: .15 x 2/4; bin 10 {.7 wrong}: .7 x 1/4; bin 8 {.55 ok}: .45 x 1/4
        ece=0.075 + 0.175 + 0.1125,
        confusion_matrix=[[1, 0, 1], [0, 2, 0], [0, 0, 0]],
        per_class={
            "a": dict(precision=1.0, recall=1 / 2, f1=2 / 3, support=2, roc_auc=0.75),
            "b": dict(precision=1.0, recall=1.0, f1=1.0, support=2, roc_auc=1.0),
            "c": dict(precision=0.0, recall=None, f1=0.0, support=0, roc_auc=None),
        },
    ),
)


@pytest.mark.parametrize(
    "case", [THREE_CLASS, BINARY_TIE, CLASS_ABSENT], ids=["three_class", "binary_tie", "class_absent"]
)
def test_classification_metrics_match_hand_computed_values(case):
    m = classification_metrics(np.array(case["y_true"]), np.array(case["probabilities"]), case["classes"])
    exp = case["expected"]
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "macro_roc_auc", "ece"):
        assert m[key] == pytest.approx(exp[key], abs=1e-12), key
    assert m["confusion_matrix"] == exp["confusion_matrix"]
    assert m["n"] == len(case["y_true"]) and m["classes"] == case["classes"]
    for name, values in exp["per_class"].items():
        for key, value in values.items():
            assert m["per_class"][name][key] == (pytest.approx(value, abs=1e-12) if value is not None else None), (
                name,
                key,
            )
    assert set(m["roc_curves"]) == {n for n, v in exp["per_class"].items() if v["roc_auc"] is not None}
    assert sum(m["reliability"]["count"]) == len(case["y_true"]) and len(m["reliability"]["count"]) == 15


def test_reliability_bins_of_the_three_class_example():
    rel = classification_metrics(THREE_CLASS["y_true"], THREE_CLASS["probabilities"], THREE_CLASS["classes"])[
        "reliability"
    ]
    assert {i: c for i, c in enumerate(rel["count"]) if c} == {7: 2, 9: 1, 10: 2, 13: 1}
    assert rel["confidence"][7] == pytest.approx(0.5) and rel["accuracy"][7] == 0.5
    assert rel["confidence"][10] == pytest.approx(0.7) and rel["accuracy"][10] == 1.0
    assert rel["confidence"][0] is None and rel["accuracy"][0] is None
    assert rel["bin_lower"][7] == pytest.approx(7 / 15) and rel["bin_upper"][14] == 1.0


def test_one_class_only_gives_undefined_auc():
    m = classification_metrics([1, 1], [[0.2, 0.8], [0.6, 0.4]], ["x", "y"])
    assert m["macro_roc_auc"] is None and m["roc_curves"] == {}
    assert m["per_class"]["x"]["roc_auc"] is None and m["balanced_accuracy"] == 0.5


# Scores sorted: .9+ .8+ .6- .5- .4- .35+ .3+ .2- .1- .05-   (4 positives, 6 negatives)
Y = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
P = [0.9, 0.8, 0.35, 0.3, 0.6, 0.4, 0.2, 0.1, 0.05, 0.5]


@pytest.mark.parametrize(
    "target, threshold, recall, precision, specificity, accuracy",
    [
        (0.5, 0.8, 2 / 4, 2 / 2, 6 / 6, 8 / 10),  # 2 positives needed: >= .8 catches .9,.8 only
        (0.6, 0.35, 3 / 4, 3 / 6, 3 / 6, 6 / 10),  # 2.4 -> 3 needed: >= .35 calls .9 .8 .6 .5 .4 .35
        (0.75, 0.35, 3 / 4, 3 / 6, 3 / 6, 6 / 10),
        (1.0, 0.3, 4 / 4, 4 / 7, 3 / 6, 7 / 10),  # >= .3 adds .3+: TP 4, FP 3, TN 3
    ],
)
def test_threshold_for_recall_hand_example(target, threshold, recall, precision, specificity, accuracy):
    r = threshold_for_recall(np.array(Y), np.array(P), target)
    assert r["threshold"] == threshold and r["target_recall"] == target
    assert (r["recall"], r["precision"], r["specificity"], r["accuracy"]) == pytest.approx(
        (recall, precision, specificity, accuracy)
    )
    assert r["tp"] + r["fn"] == r["n_positive"] == 4 and r["fp"] + r["tn"] == r["n_negative"] == 6
    # AUC: .9 and .8 beat all 6 negatives, .35 and .3 beat .2 .1 .05 -> (6 + 6 + 3 + 3) / 24
    assert r["auc"] == pytest.approx(0.75)
    # ROC points after dropping collinear ones (threshold None = nothing called positive)
    assert r["roc"]["thresholds"] == [None, 0.9, 0.8, 0.4, 0.3, 0.05]
    assert r["roc"]["fpr"] == pytest.approx([0, 0, 0, 3 / 6, 3 / 6, 1])
    assert r["roc"]["tpr"] == pytest.approx([0, 1 / 4, 2 / 4, 2 / 4, 1, 1])


def test_threshold_for_recall_ties_float_fuzz_and_no_negatives():
    tied = threshold_for_recall([1, 1, 0], [0.7, 0.7, 0.7], 0.5)  # one tie cannot be split
    assert (tied["threshold"], tied["tp"], tied["fp"], tied["auc"]) == (0.7, 2, 1, 0.5)
    scores = np.arange(1, 11) / 10  # 10 positives; 0.9 * 10 = 9.000000000000002 must still need 9
    assert threshold_for_recall(np.ones(10), scores, 0.9)["threshold"] == pytest.approx(0.2)
    only_pos = threshold_for_recall([1, 1], [0.2, 0.9], 1.0)
    assert only_pos["threshold"] == 0.2 and only_pos["specificity"] is None
    assert only_pos["roc"] is None and only_pos["auc"] is None


def _seg(subject, pred, truth, spacing):
    return {"subject": subject, "prediction": np.asarray(pred), "truth": np.asarray(truth), "spacing": spacing}


def _square(cols, shape=(5, 7)):
    mask = np.zeros(shape, dtype=int)
    mask[1:3, cols[0] : cols[1]] = 1
    return mask


def _one(metrics, subject=0, label="fg"):
    return metrics["subjects"][subject]["labels"][label]


@pytest.mark.parametrize(
    "shape, truth_at, pred_at, spacing, hd95",
    [
        ((5, 8), (2, 2), (2, 5), (1.0, 2.0), 6.0),  # 3 voxels along axis 1 x 2 mm
        ((5, 8), (2, 2), (2, 5), (2.0, 1.0), 3.0),  # same voxels, axis 1 now 1 mm
        ((3, 4, 5), (1, 1, 1), (1, 2, 3), (0.5, 3.0, 2.0), 5.0),  # sqrt((1 x 3)^2 + (2 x 2)^2)
    ],
)
def test_single_voxels_hd95_uses_anisotropic_spacing(shape, truth_at, pred_at, spacing, hd95):
    truth, pred = np.zeros(shape, int), np.zeros(shape, int)
    truth[truth_at], pred[pred_at] = 1, 1
    r = _one(segmentation_metrics([_seg("s", pred, truth, spacing)], {"fg": 1}))
    assert r["dice"] == 0.0 and r["hd95_mm"] == pytest.approx(hd95, rel=1e-6)
    assert r["volume_pred"] == r["volume_truth"] == pytest.approx(np.prod(spacing))


def test_summary_over_identical_half_overlapping_and_disjoint_squares():
    truth = _square((1, 3))  # 2 x 2 square, columns 1-2; spacing 3 mm along columns
    cases = [
        _seg("a", _square((1, 3)), truth, (1, 3)),
        _seg("b", _square((2, 4)), truth, (1, 3)),
        _seg("c", _square((3, 5)), truth, (1, 3)),
    ]
    m = segmentation_metrics(cases, {"fg": 1})
    # Dice: 1; 2*2/(4+4) = .5; 0.  Boundary distances (all voxels are boundary): b: [0,0,3,3] each way,
    # 95th percentile (linear) between 3 and 3 -> 3 mm; c: [3,3,6,6] -> 6 mm.
    assert [_one(m, i)["dice"] for i in range(3)] == pytest.approx([1.0, 0.5, 0.0])
    assert [_one(m, i)["hd95_mm"] for i in range(3)] == pytest.approx([0.0, 3.0, 6.0])
    dice, hd = m["summary"]["fg"]["dice"], m["summary"]["fg"]["hd95_mm"]
    # mean .5, median .5, sample SD sqrt((.25 + 0 + .25) / 2) = .5; HD95 mean 3, SD sqrt((9+0+9)/2) = 3
    assert (dice["mean"], dice["median"], dice["std"], dice["n"]) == pytest.approx((0.5, 0.5, 0.5, 3))
    assert (hd["mean"], hd["median"], hd["std"], hd["undefined"]) == pytest.approx((3.0, 3.0, 3.0, 0))
    assert m["volume_unit"] == "mm^2" and m["summary"]["fg"]["volume_mae"] == 0.0  # 4 px x 3 mm^2 each
    assert best_and_worst_subjects(m) == ("a", "c")


def test_hd95_is_the_95th_percentile_not_the_maximum():
    truth = np.zeros((3, 25), int)
    truth[0, :20] = 1
    pred = truth.copy()
    pred[2, 24] = 1  # one stray voxel sqrt(2^2 + 5^2) = 5.39 mm from the line
    r = _one(segmentation_metrics([_seg("s", pred, truth, (1, 1))], {"fg": 1}))
    # pred->truth distances: 20 zeros + 5.39; 95th percentile at rank 0.95 x 20 = 19 -> 0
    assert r["dice"] == pytest.approx(2 * 20 / (20 + 21)) and r["hd95_mm"] == pytest.approx(0.0)


@pytest.mark.parametrize(
    "pred_on, truth_on, dice, hd95",
    [(False, False, 1.0, 0.0), (True, False, 0.0, None), (False, True, 0.0, None)],
    ids=["both_empty", "truth_empty", "prediction_empty"],
)
def test_empty_mask_conventions(pred_on, truth_on, dice, hd95):
    pred, truth = _square((1, 3)) * pred_on, _square((1, 3)) * truth_on
    m = segmentation_metrics(
        [_seg("e", pred, truth, (1, 1)), _seg("ok", _square((1, 3)), _square((1, 3)), (1, 1))], {"fg": 1}
    )
    assert (_one(m)["dice"], _one(m)["hd95_mm"]) == (dice, hd95)
    hd = m["summary"]["fg"]["hd95_mm"]
    assert hd["undefined"] == (hd95 is None) and hd["n"] == 2 - (hd95 is None) and hd["mean"] == 0.0
    assert m["summary"]["fg"]["dice"]["mean"] == pytest.approx((dice + 1) / 2)


def test_hippocampus_labels_and_merged_foreground():
    truth = np.array([1, 1, 2, 2]).reshape(1, 4, 1)  # anterior y 0-1, posterior y 2-3
    pred = np.array([1, 2, 2, 2]).reshape(1, 4, 1)
    m = segmentation_metrics([_seg("h", pred, truth, (1, 1, 2))], {"anterior": 1, "posterior": 2}, merge=True)
    assert m["labels"] == {"anterior": 1, "posterior": 2, "foreground": [1, 2]} and m["volume_unit"] == "mm^3"
    ant, post, fg = (_one(m, 0, k) for k in ("anterior", "posterior", "foreground"))
    # Dice: anterior 2*1/(1+2) = 2/3, posterior 2*2/(3+2) = 4/5, whole hippocampus 1
    assert (ant["dice"], post["dice"], fg["dice"]) == pytest.approx((2 / 3, 4 / 5, 1.0))
    # anterior truth->pred distances [0, 1] mm: 95th percentile 0 + .95 x (1 - 0); posterior pred->truth
    # [0, 0, 1]: rank .95 x 2 = 1.9 -> 0 + .9 x 1
    assert (ant["hd95_mm"], post["hd95_mm"], fg["hd95_mm"]) == pytest.approx((0.95, 0.9, 0.0), abs=1e-6)
    # voxel 1 x 1 x 2 = 2 mm^3: anterior 1 vs 2 voxels, posterior 3 vs 2
    assert (ant["volume_pred"], ant["volume_truth"], ant["volume_error"]) == (2.0, 4.0, -2.0)
    assert (post["volume_error"], fg["volume_error"]) == (2.0, 0.0)
    assert m["summary"]["anterior"]["volume_mae"] == 2.0 and m["summary"]["anterior"]["volume_bias"] == -2.0
    assert m["summary"]["anterior"]["dice"]["std"] is None  # one subject


GOOD_P = [[0.7, 0.3], [0.2, 0.8]]
# Breakdown example: p(yes) and truth of 8 rows in two sources (argmax: yes where p > .5)
GY = np.array([1, 1, 0, 0, 1, 0, 0, 0])
GP1 = np.array([0.9, 0.3, 0.6, 0.1, 0.8, 0.7, 0.2, 0.4])
GP = np.c_[1 - GP1, GP1]
GROUPS = {
    "source": ["lgg"] * 4 + ["brats"] * 4,
    "skull": ["with skull"] * 4 + ["skull-stripped"] * 4,
    "dims": ["2D slice"] * 2 + ["volume"] * 6,
}


def _squares(kinds):
    """2-D cases on a 4x4 grid, truth = rows 0-1 (8 pixels, label fg = 1), prediction per ``(subject prefix, kind)``:
    "all" = the truth (Dice 1), "part" = row 0 only (Dice 2 x 4 / (4 + 8) = 2/3), "none" = empty (Dice 0)."""
    truth = np.zeros((4, 4), int)
    truth[:2] = 1
    preds = {"all": truth, "part": np.where(np.arange(4)[:, None] == 0, truth, 0), "none": np.zeros_like(truth)}
    return [_seg(f"{key}{i + 1}", preds[kind], truth, (1.0, 1.0)) for i, (key, kind) in enumerate(kinds)]


SEG_CASES = _squares([("a", "all"), ("a", "none"), ("b", "all")])
SEG = segmentation_metrics(SEG_CASES, {"fg": 1})


@pytest.mark.parametrize(
    "call, parameter, shown",
    [
        (
            lambda: classification_metrics([0, 1], [[0.7, 0.2, 0.1], [0.2, 0.7, 0.1]], ["a", "b"]),
            "probabilities",
            "(2, 3)",
        ),
        (
            lambda: classification_metrics([0, 1], [[0.7, 0.3], [0.5, 0.6]], ["a", "b"]),
            "probabilities",
            "row 1 summing to 1.1",
        ),
        (lambda: classification_metrics([0, 1], [[np.nan, 1.0], [0.2, 0.8]], ["a", "b"]), "probabilities", "1 NaN/inf"),
        (lambda: classification_metrics([0, 1], [[1.5, -0.5], [0.2, 0.8]], ["a", "b"]), "probabilities", "[-0.5, 1.5]"),
        (lambda: classification_metrics([0, 1, 1], GOOD_P, ["a", "b"]), "y_true", "[0, 1, 1]"),
        (lambda: classification_metrics([0, 2], GOOD_P, ["a", "b"]), "y_true", "[0, 2]"),
        (lambda: classification_metrics([0, 0.5], GOOD_P, ["a", "b"]), "y_true", "0.5"),
        (lambda: classification_metrics([0, 1], GOOD_P, ["a", "a"]), "classes", "['a', 'a']"),
        (lambda: threshold_for_recall([0, 1], [0.1, 0.9], 0), "target_recall", "0"),
        (lambda: threshold_for_recall([0, 1], [0.1, 0.9], 1.5), "target_recall", "1.5"),
        (lambda: threshold_for_recall([0, 1], [0.1, 0.9], True), "target_recall", "True"),
        (lambda: threshold_for_recall([0, 1], [0.1, 0.9], float("nan")), "target_recall", "nan"),
        (lambda: threshold_for_recall([0, 2], [0.1, 0.9], 0.9), "y_true_binary", "[0, 2]"),
        (lambda: threshold_for_recall([0, 0], [0.1, 0.9], 0.9), "y_true_binary", "no positives"),
        (lambda: threshold_for_recall([0, 1], [0.1], 0.9), "p_positive", "length 2"),
        (lambda: threshold_for_recall([0, 1], [0.1, 1.2], 0.9), "p_positive", "1.2"),
        (
            lambda: segmentation_metrics([_seg("s", np.zeros((2, 2)), np.zeros((2, 3)), (1, 1))], {"fg": 1}),
            "cases[0]['prediction']",
            "(2, 2) vs truth (2, 3)",
        ),
        (
            lambda: segmentation_metrics([_seg("s", np.zeros((2, 2)), np.zeros((2, 2)), (1, 1, 1))], {"fg": 1}),
            "cases[0]['spacing']",
            "(1, 1, 1)",
        ),
        (
            lambda: segmentation_metrics([_seg("s", np.zeros((2, 2)), np.zeros((2, 2)), (1, -1))], {"fg": 1}),
            "cases[0]['spacing']",
            "(1, -1)",
        ),
        (
            lambda: segmentation_metrics([_seg("s", np.zeros((2, 2)), np.zeros((2, 2)), (1, 1))] * 2, {"fg": 1}),
            "cases[1]['subject']",
            "'s'",
        ),
        (
            lambda: segmentation_metrics(
                [
                    _seg("s", np.zeros((2, 2)), np.zeros((2, 2)), (1, 1)),
                    _seg("t", np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), (1, 1, 1)),
                ],
                {"fg": 1},
            ),
            "cases[1]['prediction']",
            "3-D",
        ),
        (lambda: segmentation_metrics([], {"fg": 1}), "cases", "[]"),
        (
            lambda: segmentation_metrics([_seg("s", np.zeros((2, 2)), np.zeros((2, 2)), (1, 1))], {"fg": 0}),
            "labels",
            "{'fg': 0}",
        ),
        (
            lambda: segmentation_metrics(
                [_seg("s", np.zeros((2, 2)), np.zeros((2, 2)), (1, 1))], {"foreground": 1}, merge=True
            ),
            "labels",
            "'foreground'",
        ),
        (lambda: operating_point([0, 1], [0.1, 0.9], 1.5), "threshold", "1.5"),
        (lambda: operating_point([0, 1], [0.1, 0.9], None), "threshold", "None"),
        (lambda: operating_point([0, 3], [0.1, 0.9], 0.5), "y_true_binary", "[0, 3]"),
        (lambda: operating_point([0, 1], [0.1, 1.9], 0.5), "p_positive", "1.9"),
        (
            lambda: classification_breakdown(GY, GP, ["no", "yes"], {"source": GROUPS["source"][:3]}),
            "groups['source']",
            "list of 8",
        ),
        (lambda: classification_breakdown(GY, GP, ["no", "yes"], ["lgg"] * 8), "groups", "['lgg'"),
        (
            lambda: classification_breakdown([0, 1, 2], np.eye(3), ["a", "b", "c"], {"s": list("xyz")}, {"t": 0.5}),
            "thresholds",
            "{'t': 0.5}",
        ),
        (lambda: per_subject_accuracy(GY, GP, GROUPS["source"], min_images=0), "min_images", "0"),
        (lambda: per_subject_accuracy(GY, GP, GROUPS["source"][:2]), "subjects['subject']", "list of 8"),
        (lambda: per_subject_accuracy(GY, GP[:3], GROUPS["source"]), "probabilities", "(3, 2)"),
        (lambda: dice_difference(SEG, SEG, "tumor"), "label", "'tumor'"),
        (
            lambda: dice_difference(SEG, segmentation_metrics(SEG_CASES[:2], {"fg": 1}), "fg"),
            "reference",
            "['a1', 'a2']",
        ),
    ],
)
def test_invalid_arguments_name_the_parameter_and_value(call, parameter, shown):
    with pytest.raises(ValueError, match=re.escape(parameter) + ".*" + re.escape(shown)):
        call()


@pytest.mark.parametrize(
    "threshold, recall, specificity, precision, accuracy",
    [
        # sorted: .9+ .8+ .6- .5- .4- .35+ .3+ .2- .1- .05- (4 positives, 6 negatives)
        (0.5, 2 / 4, 4 / 6, 2 / 4, 6 / 10),  # >= .5 calls .9 .8 .6 .5: TP 2, FP 2
        (0.35, 3 / 4, 3 / 6, 3 / 6, 6 / 10),  # the recall-targeted threshold of target .75 above
        (0.95, 0.0, 1.0, None, 6 / 10),  # nothing called: precision undefined
        (0.0, 1.0, 0.0, 4 / 10, 4 / 10),
    ],
)
def test_operating_point_at_a_fixed_threshold(threshold, recall, specificity, precision, accuracy):
    r = operating_point(np.array(Y), np.array(P), threshold)
    assert r["threshold"] == threshold and (r["n_positive"], r["n_negative"]) == (4, 6)
    assert (r["recall"], r["specificity"], r["accuracy"]) == pytest.approx((recall, specificity, accuracy))
    assert r["precision"] == (None if precision is None else pytest.approx(precision))
    if threshold == 0.35:  # same figures as threshold_for_recall at its chosen threshold
        chosen = threshold_for_recall(np.array(Y), np.array(P), 0.75)
        assert {k: chosen[k] for k in r} == r


def test_operating_point_without_positives_has_no_recall():
    r = operating_point([0, 0, 0], [0.1, 0.6, 0.7], 0.5)
    assert r["recall"] is None and r["specificity"] == pytest.approx(1 / 3) and r["fp"] == 2


@pytest.mark.parametrize(
    "breakdown, group, n, accuracy, recall_no, recall_yes",
    [
        ("source", "lgg", 4, 2 / 4, 1 / 2, 1 / 2),  # calls yes .9 (T) .6 (F); no .3 (F: a missed yes) .1 (T)
        ("source", "brats", 4, 3 / 4, 2 / 3, 1.0),  # calls yes .8 (T) .7 (F); no .2 .4 (T)
        ("skull", "with skull", 4, 2 / 4, 1 / 2, 1 / 2),
        ("dims", "2D slice", 2, 1 / 2, None, 1 / 2),  # rows 0-1: both yes, one caught; no "no" row
        ("dims", "volume", 6, 4 / 6, 3 / 5, 1.0),
    ],
)
def test_classification_breakdown_per_group(breakdown, group, n, accuracy, recall_no, recall_yes):
    out = classification_breakdown(GY, GP, ["no", "yes"], GROUPS)
    assert list(out) == ["source", "skull", "dims"] and list(out["source"]) == ["brats", "lgg"]  # groups sorted
    g = out[breakdown][group]
    assert g["n"] == n and g["accuracy"] == pytest.approx(accuracy)
    assert g["recall"]["no"] == (None if recall_no is None else pytest.approx(recall_no))
    assert g["recall"]["yes"] == pytest.approx(recall_yes) and "operating_points" not in g
    assert sum(v["n"] for v in out[breakdown].values()) == 8


@pytest.mark.parametrize(
    "group, name, accuracy, recall, specificity",
    [
        ("lgg", "shipped", 2 / 4, 1 / 2, 1 / 2),
        ("lgg", "low", 3 / 4, 1.0, 1 / 2),  # >= .25 calls .9 .3 .6: TP 2, FP 1, TN 1
        ("brats", "shipped", 3 / 4, 1.0, 2 / 3),
        ("brats", "low", 2 / 4, 1.0, 1 / 3),  # >= .25 calls .8 .7 .4: TP 1, FP 2, TN 1
    ],
)
def test_classification_breakdown_operating_points(group, name, accuracy, recall, specificity):
    out = classification_breakdown(GY, GP, ["no", "yes"], {"source": GROUPS["source"]}, {"shipped": 0.5, "low": 0.25})
    point = out["source"][group]["operating_points"][name]
    assert (point["accuracy"], point["recall"], point["specificity"]) == pytest.approx((accuracy, recall, specificity))


def test_segmentation_breakdown_and_dice_difference():
    groups = {"source": ["a", "a", "b"], "skull": ["with skull"] * 3}
    out = segmentation_breakdown(SEG, groups)
    assert (out["source"]["a"]["n_subjects"], out["source"]["b"]["n_subjects"]) == (2, 1)
    assert out["source"]["a"]["dice"]["fg"]["mean"] == 0.5 and out["source"]["a"]["dice"]["fg"]["std"] == pytest.approx(
        0.5**0.5
    )
    assert out["source"]["b"]["dice"]["fg"]["mean"] == 1.0 and out["skull"]["with skull"]["dice"]["fg"][
        "mean"
    ] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=re.escape("groups['source']")):
        segmentation_breakdown(SEG, {"source": ["a"]})
    worse = segmentation_metrics(_squares([("a", "none"), ("a", "none"), ("b", "part")]), {"fg": 1})
    diff = dice_difference(worse, SEG, "fg")
    assert [r["difference"] for r in diff["subjects"]] == pytest.approx([-1.0, 0.0, 2 / 3 - 1])
    assert (diff["dice_mean"], diff["dice_reference_mean"]) == pytest.approx((2 / 9, 2 / 3))
    assert diff["mean_difference"] == pytest.approx(2 / 9 - 2 / 3)


def test_per_subject_accuracy_lists_subjects_with_several_rows_lowest_first():
    subjects = ["s1", "s1", "s2", "s3", "s3", "s3", "s4", "s4"]
    rows = per_subject_accuracy(GY, GP, subjects)
    # correct: .9 yes T, .3 yes F | .6 no F | .1 T, .8 T, .7 F | .2 T, .4 T
    assert rows == [
        {"subject": "s1", "n": 2, "correct": 1, "accuracy": 0.5},
        {"subject": "s3", "n": 3, "correct": 2, "accuracy": pytest.approx(2 / 3)},
        {"subject": "s4", "n": 2, "correct": 2, "accuracy": 1.0},
    ]
    assert [r["subject"] for r in per_subject_accuracy(GY, GP, subjects, min_images=1)][:2] == ["s2", "s1"]
