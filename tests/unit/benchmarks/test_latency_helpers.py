"""The pure helpers of benchmarks/latency.py and benchmarks/train_throughput.py (the benchmarks themselves are not
run by the test suite)."""

import math
from pathlib import Path

import numpy as np
import pytest

import latency
import train_throughput


@pytest.mark.parametrize("q", [0, 5, 25, 50, 90, 95, 100])
@pytest.mark.parametrize("values", [[3.0], [2.0, 1.0], [5, 1, 4, 2, 3], [0.1, 0.7, 0.3, 9.0, 2.5, 2.5, 11.0, 0.0]])
def test_percentile_matches_numpy_linear(values, q):
    assert latency.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edge_cases():
    assert math.isnan(latency.percentile([], 50))
    assert latency.percentile([4, 1, 3, 2], 50) == 2.5  # mean of the middle two
    with pytest.raises(ValueError):
        latency.percentile([1.0], 101)


def test_median_index_is_the_lower_median_call():
    assert latency.median_index([30.0, 10.0, 20.0]) == 2
    assert latency.median_index([4.0, 1.0, 3.0, 2.0]) == 3  # sorted 1, 2, 3, 4: the lower median is 2, at index 3
    with pytest.raises(ValueError):
        latency.median_index([])


@pytest.mark.parametrize("value, expected", [(1, 1), ("7", 7), (100, 100), (5.0, 5)])
def test_check_count_accepts(value, expected):
    assert latency.check_count(value) == expected


@pytest.mark.parametrize("value", [0, 101, -3, "x", None, True, 2.5, "1.5"])
def test_check_count_refuses(value):
    with pytest.raises(ValueError, match="--calls"):
        latency.check_count(value)


def test_latency_split_of_a_monai_label_result():
    latencies = {
        "pre": 0.05,
        "infer": 0.2,
        "invert": 0.01,
        "post": 0.02,
        "write": 0.03,
        "total": 0.31,
        "transform": {"pre": {"LoadImaged": 0.0175, "NormalizeIntensityd": 0.028}, "post": {"Activationsd": 0.0003}},
    }
    split = latency.latency_split(latencies, wall_s=0.35)
    assert split == {"read": 17.5, "pre": 32.5, "model": 200.0, "post": 30.0, "write": 30.0, "other": 40.0}


def test_latency_split_without_transform_times_or_stages():
    split = latency.latency_split({"gate": 0.2, "segmentation": 1.0, "total": 1.25}, wall_s=1.3)
    assert split == {"read": None, "pre": None, "model": None, "post": None, "write": None, "other": 50.0}
    assert latency.latency_split(None, 0.1) == {k: None for k in latency.SPLIT_KEYS}
    # a pipeline that reports its pre-transforms but no read among them
    split = latency.latency_split({"pre": 0.1, "total": 0.1, "transform": {"pre": {"Spacingd": 0.1}}}, wall_s=0.1)
    assert split["read"] == 0.0 and split["pre"] == 100.0 and split["other"] == 0.0


def test_format_table_aligns_and_prints_missing_values():
    text = latency.format_table(
        ["task", "p50 ms", "ok"], [["a", 12.345, True], ["longer", 1234.5, None], ["c", float("nan"), False]]
    )
    lines = text.splitlines()
    assert lines[0].split() == ["task", "p50", "ms", "ok"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert (
        lines[2].split() == ["a", "12.3", "yes"]
        and lines[3].split() == ["longer", "1234", "-"]
        and lines[4].split() == ["c", "-", "no"]
    )
    assert len({len(line) for line in lines[:2]}) == 1  # header and rule equally wide
    assert lines[2].index("12.3") + len("12.3") == lines[3].index("1234") + len("1234")  # numbers right-aligned
    with pytest.raises(ValueError):
        latency.format_table(["a", "b"], [[1]])


def _row(task, input_key, p50, kind="segmentation", variant=None):
    return {"task": task, "input": input_key, "p50_ms": p50, "kind": kind, "variant": variant}


def test_evaluate_targets_against_limits_and_the_reference():
    rows = [
        _row("sequence", "slice", 20.0, "classification"),
        _row("tumor_gate", "slice", 60.0, "classification"),
        _row("tumor_seg", "slice", 40.0),  # a segmentation on a slice: no 50 ms target
        _row("tumor_seg", "flair30", 900.0),
        _row("tumor_pipeline", "flair30", 2500.0, "pipeline", "all_fire"),
        _row("tumor_pipeline", "flair30", 500.0, "pipeline", "none_fire"),
        _row("hippocampus", "hippo_crop", 1200.0),
        _row("hippocampus", "t1", 8000.0),
    ]
    reference = [_row("REF", "flair30", 1000.0, "reference"), _row("REF", "t1", 7000.0, "reference")]
    targets = {t["target"]: t for t in latency.evaluate_targets(rows, reference, 1500.0)}
    met = {name.rsplit(" (", 1)[0] if "faster" in name else name: t["met"] for name, t in targets.items()}
    assert met["sequence on a 2D slice < 50 ms"] is True
    assert met["tumor_gate on a 2D slice < 50 ms"] is False
    assert not any(name.startswith("tumor_seg on a 2D slice") for name in met)
    assert met["tumor_pipeline on 256x256x30 < 3 s (gate fires on every head slice)"] is True
    # the worst case
    assert targets["tumor_pipeline on 256x256x30 < 3 s (gate fires on every head slice)"]["measured"] == 2500.0
    assert met["hippocampus on a Decathlon crop < 1 s"] is False
    assert met["hippocampus on a whole-head T1 < 10 s"] is True
    assert met["tumor_seg on flair30 faster than the reference"] is True
    assert met["tumor_pipeline (all_fire) on flair30 faster than the reference"] is False
    assert met["hippocampus on t1 faster than the reference"] is False
    assert met["peak server RSS with all tasks loaded < 4 GB"] is True


def test_evaluate_targets_with_nothing_measured():
    targets = latency.evaluate_targets([], [], None)
    assert targets and all(t["met"] is None for t in targets)


def test_synthetic_head_has_realistic_content_and_labels():
    image, tumor, hippocampi = latency.synthetic_head((48, 56, 12), (4.0, 4.0, 6.0), "FLAIR", seed=1, with_labels=True)
    assert image.shape == tumor.shape == hippocampi.shape == (48, 56, 12) and image.dtype == np.float32
    assert image.min() >= 0 and image.std() > 50 and len(np.unique(image)) > 1000  # not constant
    assert tumor.any() and set(np.unique(hippocampi)) <= {0, 1, 2}
    assert float(image[tumor > 0].mean()) > float(image[(tumor == 0) & (image > 0)].mean())  # FLAIR-bright lesion
    again = latency.synthetic_head((48, 56, 12), (4.0, 4.0, 6.0), "FLAIR", seed=1)
    assert np.array_equal(image, again)  # deterministic per seed


def test_write_inputs_without_real_data(tmp_path):
    inputs = latency.write_inputs(tmp_path, data=None)
    assert set(inputs) == set(latency.INPUTS)
    assert inputs["slice"]["shape"] == [256, 256] and inputs["flair30"]["shape"] == [256, 256, 30]
    assert inputs["t1"]["shape"] == [182, 218, 182] and inputs["hippo_crop"]["shape"] == [35, 51, 35]
    assert all(Path(item["file"]).is_file() for item in inputs.values())
    assert inputs["t1"]["source"].startswith("MNI152 T1") and inputs["hippo_crop"]["source"].endswith(
        "crop of the MNI T1"
    )
    assert all(inputs[key]["source"].startswith("synthetic") for key in ("slice", "flair30"))


@pytest.mark.parametrize(
    "value, expected",
    [
        ("all", list(train_throughput.TASKS)),
        ("tumor_seg", ["tumor_seg"]),
        (" sequence, tumor_seg,sequence ", ["sequence", "tumor_seg"]),
    ],
)
def test_parse_tasks(value, expected):
    assert train_throughput.parse_tasks(value) == expected


@pytest.mark.parametrize("value", ["", " , ", "spleen", "sequence,nope"])
def test_parse_tasks_refuses(value):
    with pytest.raises(ValueError):
        train_throughput.parse_tasks(value)
