"""Parsing of server answers into table rows, summaries, measurement text and training progress."""

import pytest

from MRILabelLib import TaskInfo, plain_sentence
from MRILabelLib.logic import declared_uncertainty
from MRILabelLib.progress import fraction_done, read_progress
from MRILabelLib.results import (
    UNREADABLE_SUMMARY,
    ClassRow,
    UncertainSlice,
    label_info_for,
    parse_classification,
    parse_measurements,
    parse_segmentation,
    parse_uncertainty,
    read_uncertainty,
)

GATE = {
    "task": "tumor_gate",
    "label": "tumor",
    "probabilities": {"no_tumor": 0.2, "tumor": 0.8},
    "probability": 0.8,
    "threshold": 0.5,
    "tumor": True,
    "fired_slices": [3, 4],
}


@pytest.mark.parametrize(
    "result, rows",
    [
        (
            {"label": "T2", "probabilities": {"T1": 0.1, "T2": 0.7, "FLAIR": 0.2}},
            [ClassRow("T1", 0.1, False), ClassRow("T2", 0.7, True), ClassRow("FLAIR", 0.2, False)],
        ),
        ({"probabilities": {"a": 0.4, "b": 0.6}}, [ClassRow("a", 0.4, False), ClassRow("b", 0.6, True)]),
        (GATE, [ClassRow("no_tumor", 0.2, False), ClassRow("tumor", 0.8, True)]),
    ],
)
def test_classification_rows(result, rows):
    assert parse_classification(result, "task").rows == rows


@pytest.mark.parametrize(
    "result, summary",
    [
        ({"label": "T2", "probabilities": {"T1": 0.5, "T2": 0.5}}, "Predicted class: T2"),
        (GATE, "Tumor gate: tumor (p(tumor) = 0.800 ≥ threshold 0.50); slices at or over the threshold: 3, 4"),
        (
            dict(
                GATE, probabilities={"no_tumor": 0.7, "tumor": 0.3}, label="no_tumor", probability=0.3, fired_slices=[]
            ),
            "Tumor gate: no tumor (p(tumor) = 0.300 < threshold 0.50); slices at or over the threshold: none",
        ),
        (
            dict(GATE, threshold=0.8),
            "Tumor gate: tumor (p(tumor) = 0.800 ≥ threshold 0.80); slices at or over the threshold: 3, 4",
        ),
    ],
)
def test_classification_summary(result, summary):
    assert parse_classification(result).summary() == summary


@pytest.mark.parametrize(
    "result, message",
    [
        ({}, "probabilities"),
        ({"probabilities": {}}, "probabilities"),
        ({"probabilities": {"a": 0.5, "b": 0.6}}, "sum to 1"),
        ({"probabilities": {"a": 1.5, "b": -0.5}}, r"in \[0, 1\]"),
        ({"probabilities": {"a": "x", "b": 1.0}}, "must be a number"),
    ],
)
def test_bad_classification_answers_are_refused(result, message):
    with pytest.raises(ValueError, match=message):
        parse_classification(result)


@pytest.mark.parametrize(
    "measurements, text",
    [
        (
            {
                "mm3": {"anterior": 1200.0, "posterior": 800.5},
                "total_mm3": 2000.5,
                "left_mm3": 1000.0,
                "right_mm3": 1000.5,
            },
            "anterior: 1,200.0 mm³\nposterior: 800.5 mm³\nTotal: 2,000.5 mm³\nLeft: 1,000.0 mm³; Right: 1,000.5 mm³",
        ),
        ({"mm2": {"tumor": 12.25}, "total_mm2": 12.25}, "tumor: 12.2 mm²\nTotal: 12.2 mm²"),
        ({"mm3": {"tumor": 0.0}}, "tumor: 0.0 mm³\nTotal: 0.0 mm³"),
        ({"mm3": {"a": 1.0, "b": 2.0}}, "a: 1.0 mm³\nb: 2.0 mm³\nTotal: 3.0 mm³"),
        (
            {
                "mm3": {"a": 900.0},
                "volume_check": {
                    "status": "check the segmentation",
                    "reason": "hippocampus 900.0 mm³ is outside 2397-4401 mm³",
                },
            },
            "a: 900.0 mm³\nTotal: 900.0 mm³\nCHECK THE SEGMENTATION: hippocampus 900.0 mm³ is outside 2397-4401 mm³",
        ),
        (
            {"mm3": {"a": 3000.0}, "volume_check": {"status": "ok", "range_mm3": [2397, 4401]}},
            "a: 3,000.0 mm³\nTotal: 3,000.0 mm³",
        ),
        (
            {
                "mm3": {"tumor": 5000.0},
                "lesions": {
                    "components": 2,
                    "lesions": [
                        {
                            "largest_diameter_mm": 40.04,
                            "perpendicular_diameter_mm": 24.0,
                            "slice": 12,
                            "measurable": True,
                        },
                        {"largest_diameter_mm": 5.0, "perpendicular_diameter_mm": 4.0, "slice": 3, "measurable": False},
                    ],
                },
            },
            "tumor: 5,000.0 mm³\nTotal: 5,000.0 mm³\nLesions: 2; largest 40.0 × 24.0 mm on slice 12",
        ),
        (
            {
                "mm3": {"tumor": 9.0},
                "lesions": {
                    "components": 1,
                    "lesions": [
                        {"largest_diameter_mm": 3.0, "perpendicular_diameter_mm": 2.0, "slice": 0, "measurable": False}
                    ],
                },
            },
            "tumor: 9.0 mm³\nTotal: 9.0 mm³\nLesions: 1; largest 3.0 × 2.0 mm on slice 0 (not measurable: a diameter "
            "under 10 mm)",
        ),
        ({"mm3": {"tumor": 0.0}, "lesions": {"components": 0, "lesions": []}}, "tumor: 0.0 mm³\nTotal: 0.0 mm³"),
        ({"mm3": {"tumor": 1.0}, "lesions": {"lesions": [{"slice": "x"}]}}, "tumor: 1.0 mm³\nTotal: 1.0 mm³"),
    ],
)
def test_measurements_text(measurements, text):
    assert parse_measurements(measurements).text() == text


def test_missing_measurements_are_none_and_bad_ones_refused():
    assert parse_measurements({}) is None and parse_measurements(None) is None
    with pytest.raises(ValueError, match="mm3"):
        parse_measurements({"total_mm3": 3})


def test_segmentation_result_and_pipeline_summary():
    raw = {
        "task": "tumor_pipeline",
        "tumor": True,
        "probability": 0.91,
        "threshold": 0.5,
        "fired_slices": [5, 6],
        "label_names": {"tumor": 1},
        "measurements": {"mm3": {"tumor": 24.0}, "total_mm3": 24.0},
    }
    result = parse_segmentation(raw, "/tmp/mask.nii.gz")
    assert result.label_names == {"tumor": 1} and result.measurements.total == 24.0
    assert result.summary() == "Tumor pipeline: gate fired (p(tumor) = 0.910, threshold 0.50); segmented slices: 5, 6"
    typed = dict(
        raw,
        tumor_type={
            "label": "meningioma",
            "probabilities": {"glioma": 0.1, "meningioma": 0.85, "pituitary": 0.03, "no_tumor": 0.02},
        },
    )
    assert parse_segmentation(typed, "m.nii.gz").summary() == result.summary() + "; tumor type: meningioma (p = 0.850)"
    quiet = dict(raw, tumor=False, fired_slices=[], tumor_type=None)
    assert parse_segmentation(quiet, "m.nii.gz").summary().endswith("segmented slices: none")
    plain = parse_segmentation({"label_names": {"anterior": 1, "posterior": 2}}, "m.nii.gz", "hippocampus")
    assert plain.summary() == "hippocampus: mask with labels anterior, posterior" and plain.measurements is None


@pytest.mark.parametrize(
    "names, labels, info",
    [
        (["tumor"], {"tumor": 1}, [{"name": "tumor", "idx": 1}]),
        (
            ["posterior", "anterior"],
            {"anterior": 1, "posterior": 2},
            [{"name": "anterior", "idx": 1}, {"name": "posterior", "idx": 2}],
        ),
        ([], {"tumor": 1}, []),
    ],
)
def test_label_info_for(names, labels, info):
    assert label_info_for(names, labels) == info


def test_label_info_refuses_unknown_segment_names():
    with pytest.raises(ValueError, match=r"segment_names \['Segment_1'\]"):
        label_info_for(["tumor", "Segment_1"], {"tumor": 1})


@pytest.mark.parametrize(
    "epoch, epochs, iteration, iterations, fraction",
    [(1, 1, 5, 5, 1.0), (1, 2, 1, 4, 0.125), (2, 2, 2, 4, 0.75), (3, 4, 0, 10, 0.5), (1, 10, 1, 1, 0.1)],
)
def test_fraction_done(epoch, epochs, iteration, iterations, fraction):
    assert fraction_done(epoch, epochs, iteration, iterations) == pytest.approx(fraction)


def test_fraction_done_needs_positive_totals():
    with pytest.raises(ValueError, match="total_epochs"):
        fraction_done(1, 0, 1, 1)


EPOCH_LINE = "2026-11-24 06:05:03,946 - INFO - Epoch: {}/{}, Iter: {}/{} -- train_loss: {}"
RESULT_LINE = (
    '[2026-11-24 06:05:10,484] [9675] [MainThread] [INFO] (__main__:61) - Result: {"current_epoch": 2, '
    '"current_iteration": 10, "total_epochs": 2, "total_iterations": 10, "best_metric": 0.75}'
)


@pytest.mark.parametrize(
    "status, lines, expected",
    [
        ("SUBMITTED", [], {"epoch": None, "fraction": 0.0}),
        ("RUNNING", ["Initializing App"], {"epoch": None, "fraction": 0.0, "line": "Initializing App"}),
        (
            "RUNNING",
            [EPOCH_LINE.format(1, 2, 1, 5, 0.6), EPOCH_LINE.format(1, 2, 3, 5, 0.4)],
            {"epoch": 1, "total_epochs": 2, "iteration": 3, "total_iterations": 5, "loss": 0.4, "fraction": 0.3},
        ),
        ("RUNNING", [EPOCH_LINE.format(2, 2, 5, 5, 0.2), RESULT_LINE], {"epoch": 2, "metric": 0.75, "fraction": 0.99}),
        ("DONE", [EPOCH_LINE.format(2, 2, 5, 5, 0.2), RESULT_LINE], {"epoch": 2, "metric": 0.75, "fraction": 1.0}),
        ("DONE", ["Running cleanup..."], {"epoch": None, "fraction": 1.0}),
        (
            "ERROR",
            [EPOCH_LINE.format(1, 4, 2, 2, "nan"), "Traceback"],
            {"epoch": 1, "fraction": 0.25, "line": "Traceback"},
        ),
    ],
)
def test_read_progress(status, lines, expected):
    progress = read_progress("tumor_gate", "run-1", status, lines)
    for key, value in expected.items():
        assert getattr(progress, key) == (pytest.approx(value) if isinstance(value, float) else value), key
    assert progress.finished == (status in ("DONE", "ERROR"))


def test_progress_message():
    progress = read_progress("tumor_gate", "r", "RUNNING", [EPOCH_LINE.format(1, 1, 3, 5, 0.4917)])
    assert progress.message() == "tumor_gate: RUNNING, epoch 1/1, iteration 3/5, loss 0.4917 (60%)"


# --- voxel uncertainty (issue 18 item 4): the server's summary -> the panel's sentence and slice list ---------------

#: As apps/mri_app/lib/uncertainty.py answers it: most uncertain slices first (ties by mean), five of them.
UNCERTAINTY = {
    "measure": "normalised predictive entropy H(p) / log K of the softmax (0 certain, 1 all classes equally likely)",
    "mean": 0.0312,
    "max": 0.9731,
    "uncertain_fraction": 0.012345,
    "uncertain_from": 0.5,
    "axis": 2,
    "slices": [
        {"slice": 41, "uncertain_voxels": 1203, "mean": 0.3104},
        {"slice": 40, "uncertain_voxels": 980, "mean": 0.2811},
        {"slice": 7, "uncertain_voxels": 980, "mean": 0.1},
        {"slice": 12, "uncertain_voxels": 1, "mean": 0.02},
        {"slice": 3, "uncertain_voxels": 0, "mean": 0.011},
    ],
}


def test_uncertainty_summary_keeps_the_servers_order_and_reads_as_a_sentence():
    summary = parse_uncertainty(UNCERTAINTY, "tumor_seg")
    assert summary.task == "tumor_seg" and summary.axis == 2 and summary.uncertain_from == 0.5
    assert [s.slice for s in summary.slices] == [41, 40, 7, 12, 3]  # not re-sorted
    assert summary.slices[0] == UncertainSlice(41, 1203, 0.3104)
    assert summary.sentence() == (
        "Correct first: slice 41 (1,203 uncertain voxels), slice 40 (980 uncertain voxels), "
        "slice 7 (980 uncertain voxels), slice 12 (1 uncertain voxel)."
    )
    assert summary.statistics() == "Mean uncertainty 0.031, max 0.973; 1.2% of voxels uncertain (≥ 0.5)."
    assert summary.rows() == [
        "slice 41: 1,203 uncertain voxels (mean 0.31)",
        "slice 40: 980 uncertain voxels (mean 0.28)",
        "slice 7: 980 uncertain voxels (mean 0.10)",
        "slice 12: 1 uncertain voxel (mean 0.02)",
        "slice 3: 0 uncertain voxels (mean 0.01)",
    ]
    answer = read_uncertainty({"uncertainty": UNCERTAINTY}, "/tmp/map.nii.gz", "tumor_seg")
    assert answer.summary == summary and answer.problem is None
    assert answer.message() == f"{summary.sentence()}\n{summary.statistics()}"


@pytest.mark.parametrize(
    "slices, sentence",
    [
        ([], "The server listed no slices to correct first."),
        (
            [{"slice": 3, "uncertain_voxels": 0, "mean": 0.2}, {"slice": 2, "uncertain_voxels": 0, "mean": 0.1}],
            "No voxel is uncertain (normalised entropy ≥ 0.5); the highest mean uncertainty is on slice 3, slice 2.",
        ),
        ([{"slice": 0, "uncertain_voxels": 12, "mean": 0.4}], "Correct first: slice 0 (12 uncertain voxels)."),
    ],
    ids=["no slices", "nothing uncertain", "a 2D picture: one slice"],
)
def test_uncertainty_sentence_without_uncertain_slices(slices, sentence):
    summary = parse_uncertainty({**UNCERTAINTY, "slices": slices})
    assert summary.sentence() == sentence and len(summary.rows()) == len(slices)


def test_uncertainty_statistics_leave_out_what_the_server_did_not_send():
    summary = parse_uncertainty({"axis": 0, "slices": [{"slice": 1, "uncertain_voxels": 2, "mean": 0.5}]})
    assert summary.statistics() == "" and summary.mean is None and summary.measure == ""
    assert read_uncertainty({"uncertainty": summary.raw}, "m.nii.gz").message() == summary.sentence()
    only_fraction = parse_uncertainty({**summary.raw, "uncertain_fraction": 0.5})
    assert only_fraction.statistics() == "50.0% of voxels uncertain."


@pytest.mark.parametrize(
    "summary, words",
    [
        (None, "expected a mapping, got NoneType"),
        ([1, 2], "expected a mapping, got list"),
        ({**UNCERTAINTY, "axis": 3}, "axis must be 0, 1 or 2, got 3"),
        ({**UNCERTAINTY, "axis": True}, "axis must be 0, 1 or 2, got True"),
        ({k: v for k, v in UNCERTAINTY.items() if k != "axis"}, "axis must be 0, 1 or 2, got None"),
        ({**UNCERTAINTY, "slices": "41, 40"}, "slices must be a list, got str"),
        ({**UNCERTAINTY, "slices": [41, 40]}, "slices[0] must be a mapping, got int"),
        ({**UNCERTAINTY, "slices": [{"slice": -1, "uncertain_voxels": 2, "mean": 0.1}]}, "slices[0].slice must be"),
        ({**UNCERTAINTY, "slices": [{"slice": 2.5, "uncertain_voxels": 2, "mean": 0.1}]}, "slices[0].slice must be"),
        (
            {**UNCERTAINTY, "slices": [{"slice": 1, "uncertain_voxels": float("inf"), "mean": 0.1}]},
            "slices[0].uncertain_voxels must be a whole number ≥ 0, got inf",
        ),
        ({**UNCERTAINTY, "slices": [{"slice": 1, "uncertain_voxels": "9"}]}, "slices[0].uncertain_voxels must be"),
        (
            {**UNCERTAINTY, "slices": [{"slice": 1, "uncertain_voxels": 9}]},
            "slices[0].mean must be a number from 0 to 1",
        ),
        ({**UNCERTAINTY, "mean": 1.5}, "mean must be a number from 0 to 1, got 1.5"),
        ({**UNCERTAINTY, "max": float("nan")}, "max must be a number from 0 to 1, got nan"),
        ({**UNCERTAINTY, "uncertain_fraction": "1%"}, "uncertain_fraction must be a number from 0 to 1"),
    ],
)
def test_malformed_uncertainty_summaries_become_one_plain_sentence(summary, words):
    with pytest.raises(ValueError) as caught:
        parse_uncertainty(summary, "tumor_seg")
    sentence = plain_sentence(caught.value)
    assert sentence.startswith(f"{UNREADABLE_SUMMARY}: ") and words in sentence
    assert sentence.endswith(".") and "\n" not in sentence and "Traceback" not in sentence
    answer = read_uncertainty({"uncertainty": summary}, "/tmp/map.nii.gz", "tumor_seg")
    assert answer.summary is None and answer.path == "/tmp/map.nii.gz"  # the map is still shown ...
    assert answer.message() == f"{sentence} The map is shown without the slice list."  # ... and the list says why


@pytest.mark.parametrize(
    "model, declared, kind, offered",
    [
        ({"type": "segmentation"}, None, "segmentation", True),  # /info says nothing: every segmentation task
        ({"type": "classification"}, None, "classification", False),
        ({"type": "segmentation", "uncertainty": False}, False, "segmentation", False),
        ({"type": "classification", "uncertainty": True}, True, "classification", True),
        ({"type": "segmentation", "config": {"uncertainty": False}}, True, "segmentation", True),  # an option
        ({"type": "segmentation", "uncertainty": "yes"}, None, "segmentation", True),  # not a flag: ignored
    ],
)
def test_which_tasks_offer_uncertainty(model, declared, kind, offered):
    assert declared_uncertainty(model) is declared
    assert TaskInfo("t", kind, {}, "", True, declared).offers_uncertainty is offered
