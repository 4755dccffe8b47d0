"""``mri-label evaluate``: the app's models on the held-out subjects of a datastore."""

import json

import pytest

from conftest import write_checkpoints
from mri_label.evaluate import evaluate
from mri_label.splits import ensure_split, split_of


@pytest.fixture
def setup(datastore_dir, tmp_path):
    models = tmp_path / "model"
    app = load_app_all(datastore_dir, models)
    write_checkpoints(app)
    return datastore_dir, models


def load_app_all(studies, models):
    from main import MRIApp
    from mri_label.cli import app_dir

    return MRIApp(str(app_dir()), str(studies), {"models": "all", "model_dir": str(models)})


def test_gate_is_scored_per_slice_of_the_test_subjects_with_a_threshold_from_val(setup, tmp_path):
    studies, models = setup
    summary = evaluate("tumor_gate", str(studies), out=str(tmp_path / "out"), model_dir=str(models), progress=lambda m: None)
    split = ensure_split(studies)
    from lib.datalists import classification_items, final_label, label_task
    from lib.datastore import MRIDatastore

    datastore = MRIDatastore(str(studies), extensions=["*.nii.gz", "*.png"], auto_reload=False)

    def masks(image_id):
        path, info = final_label(datastore, image_id)
        return path if path and label_task(info, {"tumor_seg": {"tumor": 1}}) == "tumor_seg" else None

    items = [i for i in classification_items(datastore, "tumor_gate", ["no_tumor", "tumor"], masks) if split_of(split, i["subject"]) == "test"]
    assert summary["n_images"] == len(items) > 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]
    assert metrics["n"] == len(items)
    assert metrics["threshold"]["target_recall"] == 0.97 and metrics["threshold"]["chosen_on"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["confusion_matrix.png", "metrics.json", "reliability.png", "report.md", "roc.png"]


def test_segmentation_report_has_per_subject_dice_and_volumes(setup, tmp_path):
    studies, models = setup
    summary = evaluate("hippocampus", str(studies), out=str(tmp_path / "hippo"), model_dir=str(models), progress=lambda m: None)
    split = ensure_split(studies)
    expected = sorted(s for s, side in split["subjects"].items() if side == "test" and s.startswith("synth_hippo"))
    metrics = json.loads((tmp_path / "hippo" / "metrics.json").read_text())["metrics"]
    assert expected and sorted(s["subject"] for s in metrics["subjects"]) == expected
    assert summary["n_subjects"] == len(expected)
    for subject in metrics["subjects"]:
        assert set(subject["labels"]) == {"anterior", "posterior", "foreground"}
        assert subject["labels"]["foreground"]["volume_truth"] > 1000  # mm³ of the phantom's hippocampi
    assert "dice_foreground_mean" in summary["headline"]
    assert (tmp_path / "hippo" / "overlay_worst.png").stat().st_size > 1000


def test_missing_checkpoint_is_a_clear_error(datastore_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        evaluate("sequence", str(datastore_dir), model_dir=str(tmp_path / "empty"), progress=lambda m: None)
    with pytest.raises(FileNotFoundError, match="--model"):
        evaluate("sequence", str(datastore_dir), model=str(tmp_path / "nope.pt"), progress=lambda m: None)


def test_target_recall_is_validated(datastore_dir):
    with pytest.raises(ValueError, match="target_recall"):
        evaluate("tumor_gate", str(datastore_dir), target_recall=1.5)


def test_tumor_type_on_the_grouped_and_on_a_random_image_split(setup, tmp_path):
    studies, models = setup
    seen = {"grouped": [], "random": [], "stratified": []}
    run = lambda kind: evaluate("tumor_type", str(studies), out=str(tmp_path / kind), model_dir=str(models),  # noqa: E731
                                progress=seen[kind].append, split_kind=kind)
    grouped = run("grouped")
    split_file = (studies / "split.json").read_bytes()
    random = run("random")
    assert (studies / "split.json").read_bytes() == split_file  # the training split is never touched
    objects = json.loads((studies / "datastore_v2.json").read_text())["objects"]
    typed = {i: o["image"]["info"] for i, o in objects.items() if "tumor_type" in o["image"]["info"].get("class_labels", {})}
    by_subject, by_image = ensure_split(studies), ensure_split(studies, unit="image")
    expected_grouped = sorted(i for i, info in typed.items() if split_of(by_subject, info["subject"]) == "test")
    expected_random = sorted(i for i in typed if by_image["subjects"][i] == "test")
    assert by_image["unit"] == "image" and expected_random != expected_grouped
    assert (grouped["n_images"], random["n_images"]) == (len(expected_grouped), len(expected_random))
    test_images = sorted(i for i, side in by_image["subjects"].items() if side == "test")  # every image on the test side
    assert seen["random"][-1] == f"tumor_type: {len(test_images)}/{len(test_images)} images"
    assert grouped["split_kind"] == "grouped" and random["split_kind"] == "random" and "macro_f1" in random["headline"]
    saved = json.loads((tmp_path / "random" / "metrics.json").read_text())
    assert saved["meta"]["split_kind"] == "random" and "split_random.json" in saved["meta"]["split"]
    assert saved["metrics"]["ece"] is not None and saved["metrics"]["classes"] == ["glioma", "meningioma", "pituitary", "no_tumor"]
    assert "optimistic" in (tmp_path / "random" / "report.md").read_text()
    with pytest.raises(ValueError, match="split_kind"):
        run("stratified")
