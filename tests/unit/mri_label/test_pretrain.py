"""``mri-label pretrain``: a shared slice encoder from several classification tasks' training subjects, and a classifier
fine-tuned from it with ``mri-label train --conf <task>_pretrained`` that then serves without the option."""

import json

import numpy as np
import pytest
import torch

from mri_label.cli import main
from mri_label.core.splits import ensure_split, split_of
from mri_label.pretrain import balanced_accuracy, task_items


def test_pretrain_then_fine_tune_a_classifier_from_the_encoder(datastore_dir, tmp_path, capsys):
    out = tmp_path / "encoder"
    argv = ["pretrain", "--out", str(out), "--epochs", "2"]
    assert main(argv + ["--source", f"dementia_stage={datastore_dir}", "--source", f"tumor_type={datastore_dir}"]) == 0
    card = json.loads((out / "model.json").read_text())
    assert set(card["tasks"]) == {"dementia_stage", "tumor_type"} and card["training"]["epochs"] == 2
    assert [row["epoch"] for row in card["learning_curve"]] == [1, 2]
    assert 1 <= card["training"]["best_epoch"] <= 2
    assert all("val_mean_balanced_accuracy" in row for row in card["learning_curve"])
    state = torch.load(out / "encoder.pt", weights_only=True)
    assert "conv1.weight" in state and "layer4.1.bn2.weight" in state and not any(k.startswith("fc.") for k in state)
    assert state["conv1.weight"].shape[1] == 1

    model_dir = tmp_path / "model"
    argv = ["train", "dementia_stage", "--studies", str(datastore_dir), "--model-dir", str(model_dir), "--epochs", "1"]
    assert main(argv + ["--conf", "dementia_stage_pretrained", str(out / "encoder.pt")]) == 0
    tuned = json.loads((model_dir / "dementia_stage" / "model.json").read_text())
    assert tuned["pretrained"]["path"] == str((out / "encoder.pt").resolve())

    # the fine-tuned checkpoint fits the plain config (no --conf), so a server serves it as it is
    from lib.configs.dementia_stage import DementiaStageConfig

    plain = DementiaStageConfig()
    plain.init("dementia_stage", str(model_dir), {"shipped_models": "none"})
    assert tuned["network"] == plain.network_spec
    plain.check_checkpoints()


def test_pretrain_items_are_training_subjects_only(datastore_dir):
    train, val, classes = task_items("tumor_type", str(datastore_dir), 64)
    split = ensure_split(str(datastore_dir))
    assert train and classes == ["glioma", "meningioma", "pituitary", "no_tumor"]
    assert {split_of(split, i["subject"]) for i in train} == {"train"}
    assert {split_of(split, i["subject"]) for i in val} <= {"val"}


@pytest.mark.parametrize(
    "sources, message",
    [
        (["nonsense"], "--source must be TASK=DATASTORE"),
        (["=somewhere"], "--source must be TASK=DATASTORE"),
    ],
)
def test_pretrain_refuses_malformed_sources(tmp_path, capsys, sources, message):
    argv = ["pretrain", "--out", str(tmp_path / "out")]
    for source in sources:
        argv += ["--source", source]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_pretrain_refuses_a_segmentation_task(datastore_dir, tmp_path, capsys):
    assert main(["pretrain", "--out", str(tmp_path / "out"), "--source", f"hippocampus={datastore_dir}"]) == 1
    assert "'hippocampus' is not a classification task" in capsys.readouterr().err


@pytest.mark.parametrize(
    "predicted, truth, expected",
    [
        ([0, 0, 1, 1], [0, 0, 1, 1], 1.0),
        ([0, 0, 0, 0], [0, 0, 0, 1], 0.5),
        ([1, 0, 2, 2], [0, 0, 2, 2], 0.75),  # class 1 absent from the truth: not averaged in
    ],
)
def test_balanced_accuracy(predicted, truth, expected):
    assert balanced_accuracy(np.array(predicted), np.array(truth), 3) == pytest.approx(expected)
