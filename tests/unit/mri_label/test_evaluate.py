"""``mri-label evaluate``: the app's models on the held-out subjects of a datastore."""

import json

import pytest

from lib import stock
from mri_label.core.splits import ensure_split, split_of
from mri_label.evaluate import evaluate
from tests.helpers.app import write_checkpoints


@pytest.fixture
def setup(datastore_dir, tmp_path):
    models = tmp_path / "model"
    app = load_app_all(datastore_dir, models)
    write_checkpoints(app)
    return datastore_dir, models


def load_app_all(studies, models):
    from main import MRIApp
    from mri_label.app_path import app_dir

    return MRIApp(str(app_dir()), str(studies), {"models": "all", "model_dir": str(models)})


def test_gate_is_scored_per_slice_of_the_test_subjects_with_a_threshold_from_val(setup, tmp_path):
    studies, models = setup
    summary = evaluate(
        "tumor_gate", str(studies), out=str(tmp_path / "out"), model_dir=str(models), progress=lambda m: None
    )
    split = ensure_split(studies)
    from lib.datalists import classification_items, final_label
    from lib.datastore import MRIDatastore
    from lib.label_info import label_task

    datastore = MRIDatastore(str(studies), extensions=["*.nii.gz", "*.png"], auto_reload=False)

    def masks(image_id):
        path, info = final_label(datastore, image_id)
        return path if path and label_task(info, {"tumor_seg": {"tumor": 1}}) == "tumor_seg" else None

    items = [
        i
        for i in classification_items(datastore, "tumor_gate", ["no_tumor", "tumor"], masks)
        if split_of(split, i["subject"]) == "test"
    ]
    assert summary["n_images"] == len(items) > 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]
    assert metrics["n"] == len(items)
    assert metrics["threshold"]["target_recall"] == 0.97 and metrics["threshold"]["chosen_on"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "confusion_matrix.png",
        "metrics.json",
        "reliability.png",
        "report.md",
        "roc.png",
    ]


def test_segmentation_report_has_per_subject_dice_and_volumes(setup, tmp_path):
    studies, models = setup
    summary = evaluate(
        "hippocampus", str(studies), out=str(tmp_path / "hippo"), model_dir=str(models), progress=lambda m: None
    )
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
    run = lambda kind: evaluate(  # noqa: E731
        "tumor_type",
        str(studies),
        out=str(tmp_path / kind),
        model_dir=str(models),
        progress=seen[kind].append,
        split_kind=kind,
    )
    grouped = run("grouped")
    split_file = (studies / "split.json").read_bytes()
    random = run("random")
    assert (studies / "split.json").read_bytes() == split_file  # the training split is never touched
    objects = json.loads((studies / "datastore_v2.json").read_text())["objects"]
    typed = {
        i: o["image"]["info"] for i, o in objects.items() if "tumor_type" in o["image"]["info"].get("class_labels", {})
    }
    by_subject, by_image = ensure_split(studies), ensure_split(studies, unit="image")
    expected_grouped = sorted(i for i, info in typed.items() if split_of(by_subject, info["subject"]) == "test")
    expected_random = sorted(i for i in typed if by_image["subjects"][i] == "test")
    assert by_image["unit"] == "image" and expected_random != expected_grouped
    assert (grouped["n_images"], random["n_images"]) == (len(expected_grouped), len(expected_random))
    # every image on the test side
    test_images = sorted(i for i, side in by_image["subjects"].items() if side == "test")
    assert seen["random"][-1] == f"tumor_type: {len(test_images)}/{len(test_images)} images"
    assert grouped["split_kind"] == "grouped" and random["split_kind"] == "random" and "macro_f1" in random["headline"]
    saved = json.loads((tmp_path / "random" / "metrics.json").read_text())
    assert saved["meta"]["split_kind"] == "random" and "split_random.json" in saved["meta"]["split"]
    assert saved["metrics"]["ece"] is not None and saved["metrics"]["classes"] == [
        "glioma",
        "meningioma",
        "pituitary",
        "no_tumor",
    ]
    assert "optimistic" in (tmp_path / "random" / "report.md").read_text()
    with pytest.raises(ValueError, match="split_kind"):
        run("stratified")


#: Sources given to the sample subjects (the sample data has none: "synthetic"); synth02 carries its own
#: ``skull_stripped: false``, against the BraTS default.
SOURCES = {
    "synth01": "brats",
    "synth02": "brats",
    "synth03": "lgg",
    "synth04": "lgg",
    "synth05": "lgg",
    "synth06": "lgg",
    "synth_slice01": "classfolders",
    "synth_slice02": "classfolders",
    "synth_slice03": "classfolders",
    "synth_slice04": "classfolders",
    "synth_hippo01": "decathlon",
}
VOLUMES_TEST = ("synth01", "synth02", "synth03", "synth_hippo01", "synth_hippo02")
VAL = ("synth04", "synth_slice04", "synth_hippo03")


def with_sources(studies, test, val=VAL):
    """Give the datastore's images the :data:`SOURCES` and put exactly ``test`` / ``val`` on those split sides."""
    path = studies / "datastore_v2.json"
    content = json.loads(path.read_text())
    for entry in content["objects"].values():
        info = entry["image"]["info"]
        if info["subject"] in SOURCES:
            info["source"] = SOURCES[info["subject"]]
        if info["subject"] == "synth02":
            info["skull_stripped"] = False
    path.write_text(json.dumps(content))
    split = ensure_split(studies)
    split["subjects"] = {s: "test" if s in test else "val" if s in val else "train" for s in split["subjects"]}
    (studies / "split.json").write_text(json.dumps(split))
    return studies


def run_eval(studies, models, task, out, **kwargs):
    return evaluate(task, str(studies), out=str(out), model_dir=str(models), progress=lambda m: None, **kwargs)


@pytest.mark.parametrize("shipped", [None, 0.3])
def test_gate_at_the_shipped_and_the_recall_targeted_threshold_per_source(setup, tmp_path, monkeypatch, shipped):
    import mri_label.evaluate as module

    studies, models = setup
    with_sources(studies, VOLUMES_TEST + ("synth_slice01", "synth_slice03"))
    if shipped is not None:  # as `--conf tumor_gate_threshold 0.3` sets it: the infer's default request and attribute
        load = module.load_app

        def load_app(*args):
            app = load(*args)
            stock.infers(app)["tumor_gate"].threshold = stock.infers(app)["tumor_gate"].config()["threshold"] = shipped
            return app

        monkeypatch.setattr(module, "load_app", load_app)
    summary = run_eval(studies, models, "tumor_gate", tmp_path / "out")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]
    points, head = metrics["operating_points"], summary["headline"]
    assert points["shipped"]["threshold"] == (shipped or 0.5) == head["threshold_shipped"]
    assert (
        points["recall_targeted"]["threshold"] == metrics["threshold"]["threshold"] == head["threshold_recall_targeted"]
    )
    for name in ("shipped", "recall_targeted"):
        assert {k: head[f"{k}_{name}"] for k in ("accuracy", "recall", "specificity")} == {
            k: points[name][k] for k in ("accuracy", "recall", "specificity")
        }
        assert points[name]["tp"] + points[name]["fn"] == sum(metrics["confusion_matrix"][1])  # every tumor row counted
    if shipped is None:  # 0.5 on two softmax probabilities is the argmax (ties aside)
        assert points["shipped"]["accuracy"] == pytest.approx(metrics["accuracy"])
    by = metrics["breakdown"]
    assert set(by["source"]) == {"brats", "lgg", "classfolders"} and set(by["dims"]) == {"volume", "2D slice"}
    assert by["source"]["classfolders"]["n"] == by["dims"]["2D slice"]["n"] == 2  # the two PNG slices, one row each
    assert by["source"]["brats"]["n"] + by["source"]["lgg"]["n"] == by["dims"]["volume"]["n"] == metrics["n"] - 2
    # synth01 (BraTS) is skull-stripped by default; synth02 (BraTS) says it is not
    stripped = by["skull"]["skull-stripped"]["n"]
    assert 0 < stripped < by["source"]["brats"]["n"] and by["skull"]["with skull"]["n"] == metrics["n"] - stripped
    for key, groups in by.items():
        assert sum(g["n"] for g in groups.values()) == metrics["n"], key
        assert set(groups[next(iter(groups))]["operating_points"]) == {"shipped", "recall_targeted"}
        assert head["breakdown"][key].keys() == groups.keys()
    # per subject: the three volumes (many slices each), not the single slices
    assert sorted(s["subject"] for s in metrics["per_subject"]) == ["synth01", "synth02", "synth03"]
    md = (tmp_path / "out" / "report.md").read_text()
    for title in ("## Operating points", "## Per source and kind of input", "## Per subject (subjects with several"):
        assert title in md, title
    assert "| source | classfolders | 2 |" in md and "| dims | 2D slice | 2 |" in md


@pytest.mark.parametrize(
    "task, labels, sources",
    [
        ("tumor_seg", ["tumor"], {"brats", "lgg"}),
        ("hippocampus", ["anterior", "posterior", "foreground"], {"decathlon", "synthetic"}),
    ],
)
def test_segmentation_per_source_per_subject_and_per_label(setup, tmp_path, task, labels, sources):
    studies, models = setup
    with_sources(studies, VOLUMES_TEST)
    summary = run_eval(studies, models, task, tmp_path / task)
    metrics = json.loads((tmp_path / task / "metrics.json").read_text())["metrics"]
    assert list(metrics["labels"]) == labels and set(metrics["breakdown"]["source"]) == sources
    subjects = {s["subject"]: s for s in metrics["subjects"]}
    for source, group in metrics["breakdown"]["source"].items():
        mine = [s for s in subjects.values() if s["source"] == source]
        assert group["n_subjects"] == len(mine) > 0
        for label in labels:  # each group's mean is the mean of its subjects' Dice
            assert group["dice"][label]["mean"] == pytest.approx(
                sum(s["labels"][label]["dice"] for s in mine) / len(mine)
            )
            assert (
                summary["headline"]["breakdown"]["source"][source][f"dice_{label}_mean"] == group["dice"][label]["mean"]
            )
    for label in labels:  # hippocampus: anterior and posterior beside the merged foreground, as MSD reports them
        assert summary["headline"][f"dice_{label}_mean"] == metrics["summary"][label]["dice"]["mean"]
    md = (tmp_path / task / "report.md").read_text()
    assert "| Subject | Source | " + " | ".join(f"Dice {n}" for n in labels) + " |" in md
    for subject, s in subjects.items():  # the per-subject table, every subject
        assert (
            f"| {subject} | {s['source']} | " + " | ".join(f"{s['labels'][n]['dice']:.3f}" for n in labels) + " |" in md
        )
    assert "## Per source and kind of input" in md and "## Per subject and label" in md


def test_pipeline_on_the_flair_volumes_beside_tumor_seg_alone(setup, tmp_path):
    studies, models = setup
    seg_store = tmp_path / "seg_store"
    import shutil

    shutil.copytree(studies, seg_store)
    with_sources(studies, VOLUMES_TEST + ("synth_slice01", "synth_slice03"))  # the slices are no volume: left out
    with_sources(seg_store, VOLUMES_TEST)
    summary = run_eval(studies, models, "tumor_pipeline", tmp_path / "pipe")
    alone = json.loads(
        (run_eval(seg_store, models, "tumor_seg", tmp_path / "seg") and tmp_path / "seg" / "metrics.json").read_text()
    )
    metrics = json.loads((tmp_path / "pipe" / "metrics.json").read_text())["metrics"]
    comparison = metrics["comparison"]
    assert (
        [r["subject"] for r in comparison["subjects"]]
        == ["synth01", "synth02", "synth03"]
        == [s["subject"] for s in metrics["subjects"]]
    )
    expected = {s["subject"]: s["labels"]["tumor"]["dice"] for s in alone["metrics"]["subjects"]}
    assert {r["subject"]: r["dice_reference"] for r in comparison["subjects"]} == pytest.approx(expected)
    for row, subject in zip(comparison["subjects"], metrics["subjects"]):
        assert row["dice"] == subject["labels"]["tumor"]["dice"] and row["difference"] == pytest.approx(
            row["dice"] - row["dice_reference"]
        )
        assert 0 <= row["fired_slices"] <= 16
    head = summary["headline"]
    assert head["dice_tumor_mean_tumor_seg_alone"] == pytest.approx(
        alone["metrics"]["summary"]["tumor"]["dice"]["mean"]
    )
    assert head["within_tolerance"] == (head["dice_tumor_mean"] >= head["dice_tumor_mean_tumor_seg_alone"] - 0.03)
    assert summary["n_subjects"] == 3 and set(metrics["breakdown"]["source"]) == {"brats", "lgg"}
    assert set(metrics["breakdown"]["dims"]) == {"volume"}
    md = (tmp_path / "pipe" / "report.md").read_text()
    assert "## Beside `tumor_seg` alone (same volumes)" in md and "| synth03 | lgg |" in md


def test_pipeline_takes_no_single_checkpoint(setup, tmp_path):
    studies, models = setup
    with pytest.raises(ValueError, match="model: tumor_pipeline chains tumor_gate, tumor_seg"):
        evaluate(
            "tumor_pipeline", str(studies), model=str(tmp_path / "x.pt"), model_dir=str(models), progress=lambda m: None
        )


@pytest.mark.parametrize("keep_largest", ["true", "false"])
def test_the_validation_side_scores_the_val_subjects_with_the_options_given(setup, tmp_path, keep_largest):
    studies, models = setup
    out = tmp_path / f"val-{keep_largest}"
    summary = evaluate(
        "tumor_seg",
        str(studies),
        out=str(out),
        model_dir=str(models),
        progress=lambda m: None,
        side="val",
        conf={"tumor_seg_keep_largest_component": keep_largest},
    )
    split = ensure_split(studies)
    saved = json.loads((out / "metrics.json").read_text())
    scored = {s["subject"] for s in saved["metrics"]["subjects"]}
    assert scored and all(split_of(split, s) == "val" for s in scored)
    assert summary["n_subjects"] == len(scored) and saved["meta"]["split"] == "validation subjects of split.json"
    # the sample data's validation side holds a labelled 2D slice beside the volumes: counted, not mixed in
    assert "1 2D slice(s) with a label left out: volumes are scored." in saved["meta"]["caveats"]


def test_the_side_is_validated(datastore_dir):
    with pytest.raises(ValueError, match="side must be one of test, val, got 'train'"):
        evaluate("tumor_seg", str(datastore_dir), side="train")
