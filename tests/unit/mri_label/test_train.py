"""``mri-label train``: the recipe, the run record in ``model.json``, and the shipped models left untouched."""

import hashlib
import json

import pytest

from mri_label.cli import main
from mri_label.recipes import recipe_of, recipes, train_request
from tests.helpers.app import SHIPPED_DIR


def digest(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_train_records_data_request_and_held_out_metrics_in_model_json(datastore_dir, tmp_path, capsys):
    shipped_before = digest(SHIPPED_DIR)
    assert (
        main(
            [
                "train",
                "sequence",
                "--studies",
                str(datastore_dir),
                "--model-dir",
                str(tmp_path / "model"),
                "--epochs",
                "1",
            ]
        )
        == 0
    )
    card = json.loads((tmp_path / "model" / "sequence" / "model.json").read_text())
    assert card["task"] == "sequence" and card["training"]["epochs"] == 1
    assert card["training"]["request"] == {
        "model": "sequence",
        "name": "train",
        **recipe_of("sequence"),
        "max_epochs": 1,
    }
    data = card["training"]["data"]
    assert data["images_by_source"] == {"synthetic": 26} and data["subjects"]["test"] > 0 and data["split_seed"] == 0
    held_out = card["metrics"]["held_out"]
    assert held_out["split"] == "test subjects of split.json" and 0 <= held_out["metrics"]["accuracy"] <= 1
    assert (tmp_path / "model" / "sequence" / "evaluation" / "report.md").exists()
    assert digest(SHIPPED_DIR) == shipped_before
    assert "'held_out'" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "nosuch"], "task must be one of"),
        (["train", "sequence", "--epochs", "0"], "epochs must be >= 1"),
        (["train", "sequence", "--learning-rate", "2"], "learning_rate must lie in"),
        (["train", "sequence", "--patience", "-1"], "patience must be >= 0"),
    ],
)
def test_train_refuses_bad_arguments(datastore_dir, tmp_path, capsys, argv, message):
    assert main(argv + ["--studies", str(datastore_dir), "--model-dir", str(tmp_path)]) == 1
    assert message in capsys.readouterr().err


def test_train_refuses_a_missing_datastore(tmp_path, capsys):
    assert main(["train", "sequence", "--studies", str(tmp_path / "nowhere")]) == 1
    assert "is not a folder" in capsys.readouterr().err


TASKS = ("dementia_stage", "hippocampus", "sequence", "tumor_gate", "tumor_seg", "tumor_type")


def test_every_task_declares_its_recipe():
    assert sorted(recipes()) == list(TASKS)
    for recipe in recipes().values():
        assert recipe["max_epochs"] >= 1 and 0 < recipe["learning_rate"] < 1 and recipe["early_stop_patience"] >= 0


@pytest.mark.parametrize("task", TASKS)
def test_recipe_request(task):
    request = train_request(task)
    assert request == {"model": task, "name": "train", **recipe_of(task)}
    assert train_request(task, 3)["max_epochs"] == 3
    custom = train_request(task, learning_rate=1e-3, patience=4)
    assert custom["learning_rate"] == 1e-3 and custom["early_stop_patience"] == 4
