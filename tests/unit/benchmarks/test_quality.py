"""The reporting part of benchmarks/quality.py: the previous shipped figures and the rows per task and source (the
benchmark itself, which trains on the real data sets, is not run by the test suite)."""

import json
from pathlib import Path

import numpy as np
import pytest

import quality
from mri_label.evaluate import headline
from mri_label.metrics import (
    classification_breakdown,
    classification_metrics,
    dice_difference,
    operating_point,
    segmentation_breakdown,
    segmentation_metrics,
)

ROOT = Path(__file__).resolve().parents[3]


def _card(folder, task, metrics):
    (folder / task).mkdir(parents=True)
    (folder / task / "model.json").write_text(json.dumps({"task": task, "metrics": {"held_out": {"metrics": metrics}}}))


def test_previous_metrics_from_a_folder_and_from_git(tmp_path):
    _card(tmp_path, "tumor_gate", {"accuracy": 0.69, "breakdown": {"source": {"lgg": {"accuracy": 0.7}}}})
    assert quality.previous_metrics("tumor_gate", str(tmp_path))["accuracy"] == 0.69
    assert quality.previous_metrics("hippocampus", str(tmp_path)) is None  # no card there
    shipped = json.loads((ROOT / quality.SHIPPED / "tumor_seg" / "model.json").read_text())
    # committed = on disk
    assert quality.previous_metrics("tumor_seg", "git:HEAD") == shipped["metrics"]["held_out"]["metrics"]
    assert quality.previous_metrics("tumor_pipeline", "git:HEAD") is None  # never shipped


def _gate():
    y = np.array([1, 1, 0, 0, 1, 0])
    p = np.array([0.9, 0.3, 0.6, 0.1, 0.8, 0.2])
    probs = np.c_[1 - p, p]
    m = classification_metrics(y, probs, ["no_tumor", "tumor"])
    m["operating_points"] = {"shipped": operating_point(y, p, 0.5), "recall_targeted": operating_point(y, p, 0.25)}
    groups = {"source": ["lgg"] * 4 + ["brats"] * 2}
    m["breakdown"] = classification_breakdown(y, probs, m["classes"], groups, {"shipped": 0.5, "recall_targeted": 0.25})
    return m


def _result(task, m):
    return {
        "task": task,
        "data": "d",
        "subjects": "1/1/2",
        "metric": quality.METRIC[task],
        "value": headline(m)[quality.METRIC[task]],
        "split_kind": "grouped",
        "epochs": 3,
        "train_min": 1.5,
        "device": "cpu",
        "headline": headline(m),
    }


@pytest.mark.parametrize(
    "previous, expected",
    [
        (None, [None, None, None]),
        ({"accuracy": 0.69}, [0.69, None, None]),
        ({"accuracy": 0.69, "breakdown": {"source": {"lgg": {"accuracy": 0.4}}}}, [0.69, None, 0.4]),
    ],
)
def test_gate_rows_per_source_with_recall_operating_points_and_previous(previous, expected):
    m = _gate()
    rows = quality.table_rows(_result("tumor_gate", m), m, previous)
    # overall: argmax calls .9 .6 .8 -> 4 of 6 right; lgg (.9+ .3+ .6- .1-) 2/4; brats (.8+ .2-) 2/2
    assert [r["group"] for r in rows] == ["all", "source: brats (2)", "source: lgg (4)"]
    assert [r["value"] for r in rows] == pytest.approx([4 / 6, 1.0, 0.5]) and [r["previous"] for r in rows] == expected
    assert rows[0]["detail"].startswith("recall no_tumor 0.67, tumor 0.67; at shipped t=0.50: recall 0.67, spec. 0.67;")
    assert rows[0]["detail"].endswith("at recall_targeted t=0.25: recall 1.00, spec. 0.67")
    assert rows[2]["detail"] == (
        "recall no_tumor 0.50, tumor 0.50; at shipped t=0.50: recall 0.50, spec. 0.50; "
        "at recall_targeted t=0.25: recall 1.00, spec. 0.50"
    )
    assert rows[1]["detail"].startswith("recall no_tumor 1.00, tumor 1.00")


def test_segmentation_and_pipeline_rows_carry_dice_per_label_and_the_reference(capsys):
    truth = np.zeros((6, 6, 3), int)
    truth[1:3, 1:5, 1], truth[3:5, 1:5, 1] = 1, 2
    cases = [
        {"subject": f"s{i}", "prediction": np.roll(truth, i, axis=0), "truth": truth, "spacing": (1.0, 1.0, 1.0)}
        for i in range(3)
    ]
    m = segmentation_metrics(cases, {"anterior": 1, "posterior": 2}, merge=True)
    m["breakdown"] = segmentation_breakdown(m, {"source": ["decathlon", "decathlon", "other"]})
    rows = quality.table_rows(_result("hippocampus", m), m, {"dice_foreground_mean": 0.87})
    assert [r["group"] for r in rows] == ["all", "source: decathlon (2)", "source: other (1)"]
    assert rows[0]["previous"] == 0.87 and rows[0]["value"] == m["summary"]["foreground"]["dice"]["mean"]
    s2 = m["subjects"][2]["labels"]
    assert (
        rows[2]["detail"] == f"Dice anterior {s2['anterior']['dice']:.2f}, posterior {s2['posterior']['dice']:.2f}, "
        f"foreground {s2['foreground']['dice']:.2f}"
    )
    tumor = [
        {
            "subject": c["subject"],
            "prediction": (c["prediction"] > 0).astype(int),
            "truth": (truth > 0).astype(int),
            "spacing": c["spacing"],
        }
        for c in cases
    ]
    pipe, alone = (
        segmentation_metrics(tumor, {"tumor": 1}),
        segmentation_metrics(tumor[:1] * 1 + [dict(t, prediction=t["truth"]) for t in tumor[1:]], {"tumor": 1}),
    )
    pipe["breakdown"] = segmentation_breakdown(pipe, {"source": ["brats"] * 3})
    alone_breakdown = segmentation_breakdown(alone, {"source": ["brats"] * 3})
    pipe["comparison"] = {
        **dice_difference(pipe, alone, "tumor"),
        "reference_task": "tumor_seg",
        "tolerance": 0.03,
        "within_tolerance": False,
        "reference_breakdown": alone_breakdown,
    }
    pipe_rows = quality.table_rows(_result("tumor_pipeline", pipe), pipe, None)
    assert (
        "; tumor_seg alone 1.00, difference " in pipe_rows[0]["detail"]
        and "(NOT within 0.03)" in pipe_rows[0]["detail"]
    )
    assert pipe_rows[1]["detail"].endswith("; tumor_seg alone 1.00")
    quality.print_table(rows + pipe_rows + [{"task": "sequence", "skipped": "data absent: /x"}])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| task | data | rows (test images) |") and "| previous shipped |" in out[0]
    assert (
        out[2].startswith("| hippocampus | d | all | 1/1/2 | dice_foreground_mean |")
        and "| 0.870 | Dice anterior" in out[2]
    )
    assert "| n/a |" in out[3] and out[-1] == "| sequence | data absent: /x | | | | | | | | | |"


def test_shipped_rows_evaluate_the_shipped_checkpoint_without_training(datastore_dir, tmp_path, monkeypatch):
    """``--shipped``: the shipped checkpoint on the test subjects, the epochs and minutes its model.json records;
    nothing is trained (the model folder stays empty)."""
    data = tmp_path / "data"
    for _, folder, _ in quality.PLAN["tumor_seg"][0]:
        (data / folder).mkdir(parents=True)
    monkeypatch.setattr(quality, "build", lambda task, data, work: datastore_dir)
    result = quality.run("tumor_seg", data, tmp_path / "work", 1.0, shipped=True)
    training = json.loads((ROOT / quality.SHIPPED / "tumor_seg" / "model.json").read_text())["training"]
    assert (result["epochs"], result["train_min"], result["device"]) == (
        training["epochs"],
        training["minutes"],
        training["device"],
    )
    assert 0.0 <= result["value"] <= 1.0 and Path(result["metrics_file"]).is_file()
    assert list(Path(result["model_dir"]).iterdir()) == []
    metrics = json.loads(Path(result["metrics_file"]).read_text())
    assert Path(metrics["meta"]["model"]).resolve() == (ROOT / quality.SHIPPED / "tumor_seg" / "model.pt").resolve()
    with pytest.raises(ValueError, match="grouped"):
        quality.run("tumor_seg", data, tmp_path / "work", 1.0, split_kind="random", shipped=True)
    # the pipeline rows with the shipped stages: the gate as served and the cascade, nothing copied or trained
    done = {"tumor_seg": result, "tumor_gate": {**result, "task": "tumor_gate"}}
    rows = quality.run_pipeline("tumor_pipeline", done, tmp_path / "work", shipped=True)
    assert [r["task"] for r in rows] == ["tumor_gate", "tumor_pipeline"]
    assert all(0.0 <= r["value"] <= 1.0 for r in rows)
    assert list((tmp_path / "work" / "tumor_pipeline" / "model").iterdir()) == []
    # the gate reads tumor_seg's network: its shipped row says it answers as served
    gate = quality.run("tumor_gate", data, tmp_path / "work", 1.0, shipped=True)
    assert gate["data"].endswith("as served: reads tumor_seg") and result["data"] == quality.PLAN["tumor_seg"][1]
