"""The trained checkpoints shipped in ``apps/mri_app/shipped``: complete, small, self-describing, loaded at start,
checked against the app's config, answering on sample data, and never overwritten by training."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lib import stock
from tests.helpers.app import SHIPPED_DIR

TASKS = ["dementia_stage", "hippocampus", "sequence", "tumor_gate", "tumor_seg", "tumor_type"]


def app_with(datastore_dir, model_dir, shipped=SHIPPED_DIR, models="all"):
    from main import MRIApp
    from tests.helpers.app import APP_DIR

    return MRIApp(
        str(APP_DIR),
        str(datastore_dir),
        {"models": models, "model_dir": str(model_dir), "shipped_models": str(shipped)},
    )


def test_every_task_ships_a_small_self_describing_checkpoint():
    assert sorted(p.name for p in SHIPPED_DIR.iterdir() if p.is_dir()) == TASKS
    total = sum(p.stat().st_size for p in SHIPPED_DIR.rglob("*") if p.is_file())
    assert total <= 60 * 2**20, f"shipped models take {total / 2**20:.1f} MB"
    for task in TASKS:
        card = json.loads((SHIPPED_DIR / task / "model.json").read_text())
        assert card["task"] == task and card["labels"] and card["network"]["name"] and card["input"]["normalization"]
        training = card["training"]
        assert training["data"]["images_by_source"] and training["data"]["subjects"]["train"] > 0
        assert training["split"]["seed"] == training["data"]["split_seed"]
        assert training["epochs"] >= 1 and training["request"]["max_epochs"] >= 1
        held_out = card["metrics"]["held_out"]
        assert held_out["subjects"] > 0 and held_out["metrics"]
        assert card["date"] and card["code_version"]
        torch.load(SHIPPED_DIR / task / "model.pt", map_location="cpu")  # loads on CPU


def test_app_serves_the_shipped_checkpoints(datastore_dir, tmp_path):
    app = app_with(datastore_dir, tmp_path / "model")
    for task in TASKS:
        reads = app.models[task].reads_networks_of  # the gate reads tumor_seg's network where it is served
        assert stock.infers(app)[task].get_path() == str(SHIPPED_DIR / (reads[0] if reads else task) / "model.pt")


def test_shipped_models_answer_on_sample_data(datastore_dir, tmp_path):
    """Trained on real scans, the shipped models still call the synthetic T1 phantom T1 and its fluid-bright T2
    phantom not T1 (the phantom's T2 has no grey/white contrast, so a model of real scans may call it FLAIR; real T2 is
    scored on the held-out scans, README), find the tumor phantom, and flag a hippocampus phantom whose segmented
    volume falls outside the training labels' range (and only such a one)."""
    import nibabel as nib

    app = app_with(datastore_dir, tmp_path / "model")
    store = app.datastore()
    for task in ("sequence", "dementia_stage", "tumor_type", "tumor_gate"):
        result = app.infer({"model": task, "image": "synth01_flair", "device": "cpu"})
        probabilities = result["params"]["probabilities"]
        assert set(probabilities) == set(app.models[task].labels) and sum(probabilities.values()) == pytest.approx(
            1, abs=1e-4
        )
    assert app.infer({"model": "sequence", "image": "synth01_t1", "device": "cpu"})["params"]["label"] == "T1"
    assert app.infer({"model": "sequence", "image": "synth01_t2", "device": "cpu"})["params"]["label"] in (
        "T2",
        "FLAIR",
    )
    result = app.infer({"model": "tumor_seg", "image": "synth01_flair", "device": "cpu"})
    mask = np.asarray(nib.load(result["file"]).dataobj) > 0
    truth = (
        np.asarray(
            nib.load(store.get_label_uri(store.get_label_by_image_id("synth01_flair", "final"), "final")).dataobj
        )
        > 0
    )
    assert (mask & truth.reshape(mask.shape)).sum() > 0.9 * truth.sum(), (
        "the shipped tumor_seg misses the sample tumor phantom"
    )
    flagged = 0
    for image in ("synth_hippo01_t1", "synth_hippo02_t1"):  # phantoms unlike real hippocampi: at least one is flagged
        measured = app.infer({"model": "hippocampus", "image": image, "device": "cpu"})["params"]["measurements"]
        check, (low, high) = measured["volume_check"], measured["volume_check"]["range_mm3"]
        inside = low <= measured["total_mm3"] <= high
        assert check["status"] == ("ok" if inside else "check the segmentation"), check
        flagged += not inside and check["reason"].startswith("hippocampus ")
    assert flagged


def test_a_shipped_card_that_does_not_fit_stops_the_app_with_the_field_named(datastore_dir, tmp_path):
    shipped = tmp_path / "shipped"
    shutil.copytree(SHIPPED_DIR / "hippocampus", shipped / "hippocampus")
    card = json.loads((shipped / "hippocampus" / "model.json").read_text())
    card["network"]["args"]["channels"] = [8, 16, 32, 64]
    (shipped / "hippocampus" / "model.json").write_text(json.dumps(card))
    with pytest.raises(
        ValueError,
        match=r"shipped/hippocampus/model.json does not fit .*network is .*\[8, 16, 32, 64\].*shipped_models none",
    ):
        app_with(datastore_dir, tmp_path / "model", shipped=shipped, models="hippocampus")


def test_a_shipped_checkpoint_without_card_is_refused(datastore_dir, tmp_path):
    shipped = tmp_path / "shipped" / "hippocampus"
    shipped.mkdir(parents=True)
    shutil.copy(SHIPPED_DIR / "hippocampus" / "model.pt", shipped)
    with pytest.raises(ValueError, match="has no model.json"):
        app_with(datastore_dir, tmp_path / "model", shipped=shipped.parent, models="hippocampus")


def test_finetune_starts_from_the_shipped_checkpoint_and_never_writes_it(datastore_dir, tmp_path, monkeypatch):
    """No trained checkpoint yet: a fine-tune run is measured against and starts from the shipped one; the better
    candidate is published to the model folder; the shipped files keep their bytes."""
    from monailabel.config import settings

    from lib.datastore import MRIDatastore
    from lib.trainers.base import MRITrainTask
    from main import discover_configs

    conf = {"tumor_seg_image_size": "64"}
    config = discover_configs()["tumor_seg"]()
    config.init("tumor_seg", str(tmp_path / "build"), dict(conf, shipped_models="none"), None)
    shipped = tmp_path / "shipped" / "tumor_seg"
    shipped.mkdir(parents=True)
    torch.save({"model": config.network.state_dict()}, shipped / "model.pt")
    card = {
        "task": "tumor_seg",
        "labels": config.labels,
        "network": config.network_spec,
        "input": config.card()["input"],
    }
    (shipped / "model.json").write_text(json.dumps(card))
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in shipped.iterdir()}

    config = discover_configs()["tumor_seg"]()
    config.init("tumor_seg", str(tmp_path / "model"), dict(conf, shipped_models=str(tmp_path / "shipped")), None)
    config.check_checkpoints()
    assert config.serving_paths == [str(shipped / "model.pt"), config.path]
    measured = []

    def poor_served(self, context, path):
        measured.append(path)
        return {"name": "val_mean_dice", "value": 0.0}

    monkeypatch.setattr(MRITrainTask, "evaluate_checkpoint", poor_served)
    datastore = MRIDatastore(str(datastore_dir), extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT, auto_reload=False)
    stats = config.trainer()({"finetune": True, "max_epochs": 1, "name": "finetune", "dataset": "Dataset"}, datastore)
    assert measured == [str(shipped / "model.pt")]
    assert stats["finetune"]["promoted"] is True and stats["finetune"]["metric_before"] == 0.0
    assert Path(config.path).exists() and (Path(config.path).parent / "model.json").exists()
    assert config.infer().get_path() == config.path  # the trained checkpoint is now the one served
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in shipped.iterdir()} == before


@pytest.mark.parametrize(
    "models,conf,reads_segmentation",
    [
        ("all", {}, True),
        ("tumor_gate,tumor_seg", {"tumor_gate_source": "classifier"}, False),
        ("tumor_gate", {}, False),  # no tumor_seg served: the gate's own classifier answers
    ],
)
def test_the_gate_reads_the_tumor_segmentation_where_it_is_served(
    datastore_dir, tmp_path, models, conf, reads_segmentation
):
    from lib.infers.classifier import SegmentationGateInfer
    from main import MRIApp
    from tests.helpers.app import APP_DIR

    app = MRIApp(
        str(APP_DIR),
        str(datastore_dir),
        {"models": models, "model_dir": str(tmp_path / "model"), "shipped_models": str(SHIPPED_DIR), **conf},
    )
    gate = stock.infers(app)["tumor_gate"]
    assert isinstance(gate, SegmentationGateInfer) == reads_segmentation
    expected = "tumor_seg" if reads_segmentation else "tumor_gate"
    assert gate.get_path() == str(SHIPPED_DIR / expected / "model.pt")
    result = app.infer({"model": "tumor_gate", "image": "synth01_flair", "device": "cpu"})["params"]
    assert result["tumor"] is True and result["fired_slices"]  # the sample tumor phantom
    assert (result.get("source", {}).get("network") == "segmentation") == reads_segmentation
    if reads_segmentation:  # the pipeline's mask covers the phantom where the gate fired
        mask = app.infer({"model": "tumor_pipeline", "image": "synth01_flair", "device": "cpu"})
        assert (
            mask["params"]["fired_slices"] == result["fired_slices"]
            and mask["params"]["gate"]["source"]["network"] == "segmentation"
        )


def test_an_unknown_gate_source_stops_the_app(datastore_dir, tmp_path):
    from main import MRIApp
    from tests.helpers.app import APP_DIR

    with pytest.raises(ValueError, match="tumor_gate_source must be one of segmentation, classifier, got 'mask'"):
        MRIApp(
            str(APP_DIR),
            str(datastore_dir),
            {"models": "tumor_gate", "model_dir": str(tmp_path / "model"), "tumor_gate_source": "mask"},
        )


def test_tumor_seg_measures_the_lesions_it_finds(datastore_dir, tmp_path):
    """``measurements["lesions"]`` of the shipped tumor_seg on the sample tumor phantom: one or more components,
    the largest with axial diameters, the total volume matching the mask's (mm³ -> mL); the pipeline carries it."""
    app = app_with(datastore_dir, tmp_path / "model", models="tumor_gate,tumor_seg")
    measured = app.infer({"model": "tumor_seg", "image": "synth01_flair", "device": "cpu"})["params"]["measurements"]
    lesions = measured["lesions"]
    assert lesions["components"] >= 1 and lesions["volume_ml"] == pytest.approx(measured["total_mm3"] / 1000, rel=1e-3)
    largest = lesions["lesions"][0]
    assert largest["largest_diameter_mm"] >= largest["perpendicular_diameter_mm"] > 0
    assert largest["slices"][0] <= largest["slice"] <= largest["slices"][1]
    piped = app.infer({"model": "tumor_pipeline", "image": "synth01_flair", "device": "cpu"})["params"]
    assert "lesions" in piped["measurements"]
