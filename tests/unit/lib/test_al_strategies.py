"""Active learning pieces without a server: promotion, the retrain scheduler's coalescing, uncertainty strategies."""

import json
import time
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import SimpleInferer
from monailabel.datastore.local import LocalDatastore

from lib.activelearning import ModelScorer, RetrainScheduler, UncertaintyStrategy, entropy, mc_dropout_variance
from lib.infers import INFER_LOCK
from lib.mirroring import MirrorAveragingInferer
from lib.trainers.promotion import candidate_path, promote_candidate

# ------------------------------------------------------------------------------------------- promotion


def _checkpoints(tmp_path):
    served, candidate = tmp_path / "model.pt", tmp_path / "model.candidate.pt"
    served.write_bytes(b"served weights")
    candidate.write_bytes(b"candidate weights")
    return str(served), str(candidate)


def test_candidate_path_sits_beside_the_served_checkpoint():
    assert candidate_path("/m/tumor_seg/model.pt") == "/m/tumor_seg/model.candidate.pt"


def test_worse_candidate_is_not_promoted_and_served_bytes_are_unchanged(tmp_path):
    served, candidate = _checkpoints(tmp_path)
    promoted, reason = promote_candidate(candidate, served, before=0.80, after=0.79)
    assert promoted is False and "worse" in reason and "0.7900" in reason and "0.8000" in reason
    assert open(served, "rb").read() == b"served weights"
    assert not (tmp_path / "model.candidate.pt").exists()


@pytest.mark.parametrize("after", [0.80, 0.95])
def test_candidate_not_worse_replaces_the_served_checkpoint(tmp_path, after):
    served, candidate = _checkpoints(tmp_path)
    promoted, _ = promote_candidate(candidate, served, before=0.80, after=after)
    assert promoted is True and open(served, "rb").read() == b"candidate weights"


def test_first_checkpoint_is_promoted_and_missing_metrics_keep_the_served_one(tmp_path):
    served, candidate = _checkpoints(tmp_path)
    promoted, reason = promote_candidate(candidate, served, before=None, after=0.5)
    assert promoted is False and "no validation metric" in reason and open(served, "rb").read() == b"served weights"
    (tmp_path / "model.pt").unlink()
    (tmp_path / "model.candidate.pt").write_bytes(b"first")
    assert promote_candidate(candidate, served, None, None, had_served=False)[0] is True
    assert open(served, "rb").read() == b"first"


# ------------------------------------------------------------------------------------------- scheduler


class FakeTrainings:
    """Stands in for MONAI Label's train queue: records requests; the test ends runs by setting ``status``."""

    def __init__(self):
        self.records = []

    def __call__(self, request):
        record = {"status": "SUBMITTED", "request": request}
        self.records.append(record)
        return record


def _wait(predicate, timeout=10):
    started = time.time()
    while not predicate():
        assert time.time() - started < timeout, "condition not reached"
        time.sleep(0.02)


def test_scheduler_triggers_after_n_labels_and_coalesces_bursts_during_a_run(tmp_path):
    runs = FakeTrainings()
    ended = []
    scheduler = RetrainScheduler(
        str(tmp_path), retrain_after=2, epochs=1, launch=runs, on_run_end=ended.append, poll_s=0.02
    )
    assert scheduler.note_label("tumor_seg", "a") is None and runs.records == []
    assert scheduler.note_label("tumor_seg", "b") is not None
    assert len(runs.records) == 1
    request = runs.records[0]["request"]
    assert (
        request["finetune"] is True
        and request["pretrained"] is True
        and request["max_epochs"] == 1
        and request["model"] == "tumor_seg"
    )

    for image in "cdef":  # two bursts while the first run is running: one more run, not two
        runs.records[0]["status"] = "RUNNING"
        assert scheduler.note_label("tumor_seg", image) is None
    assert len(runs.records) == 1 and scheduler.stats()["tasks"]["tumor_seg"]["pending"] is True

    runs.records[0]["status"] = "DONE"
    _wait(lambda: len(runs.records) == 2)
    runs.records[1]["status"] = "DONE"
    _wait(lambda: len(ended) == 2)
    time.sleep(0.1)
    assert len(runs.records) == 2
    stats = scheduler.stats()
    assert [r["status"] for r in stats["runs"]] == ["DONE", "DONE"] and stats["tasks"]["tumor_seg"]["pending"] is False
    assert stats["runs"][0]["labels_used"] == 2 and stats["runs"][1]["labels_used"] == 6
    assert json.loads((tmp_path / "activelearning.json").read_text())["runs"] == stats["runs"]


# (labels sent, runs started, labels counted, counted towards the next run) with retrain_after=2: an image counts
# once until a run is due; after that it counts again.
REPEATS = [("aaaaa", 0, 1, 1), ("aaaab", 1, 2, 0), ("abab", 1, 4, 0), ("abcc", 1, 3, 1)]


@pytest.mark.parametrize("images,runs_started,total,new", REPEATS)
def test_the_same_image_counts_once_towards_the_next_run(tmp_path, images, runs_started, total, new):
    runs = FakeTrainings()
    scheduler = RetrainScheduler(str(tmp_path), retrain_after=2, epochs=1, launch=runs, poll_s=0.02)
    for image in images:
        scheduler.note_label("sequence", image)
    assert len(runs.records) == runs_started
    entry = scheduler.stats()["tasks"]["sequence"]
    assert (entry["labels_total"], entry["new_labels"]) == (total, new)


def test_scheduler_counts_tasks_apart_and_reads_the_trainer_result(tmp_path):
    runs = FakeTrainings()
    scheduler = RetrainScheduler(str(tmp_path), retrain_after=2, epochs=1, launch=runs, poll_s=0.02)
    scheduler.note_label("sequence", "a")
    scheduler.note_label("tumor_seg", "b")
    assert runs.records == []
    run = scheduler.note_label("sequence", "c")
    (tmp_path / "sequence").mkdir()
    result = {
        "run": run,
        "metric_before": 0.5,
        "metric_after": 0.4,
        "promoted": False,
        "reason": "worse",
        "device": "cpu",
    }
    (tmp_path / "sequence" / "finetune_result.json").write_text(json.dumps(result))
    runs.records[0]["status"] = "DONE"
    _wait(lambda: scheduler.stats()["runs"])
    record = scheduler.stats()["runs"][0]
    assert record["task"] == "sequence" and record["promoted"] is False and record["metric_before"] == 0.5


def test_scheduler_state_survives_a_restart(tmp_path):
    runs = FakeTrainings()
    scheduler = RetrainScheduler(str(tmp_path), retrain_after=2, epochs=1, launch=runs, poll_s=0.02)
    scheduler.note_label("sequence", "a")
    scheduler.note_label("sequence", "b")  # a run starts; the server "stops" before it ends
    scheduler.note_label("tumor_seg", "c")
    again = RetrainScheduler(str(tmp_path), retrain_after=2, epochs=1, launch=runs, poll_s=0.02)
    state = again.stats()
    assert state["tasks"]["tumor_seg"]["new_labels"] == 1
    assert state["tasks"]["sequence"]["pending"] is True and state["runs"][0]["status"] == "INTERRUPTED"
    again.resume()
    assert len(runs.records) == 2 and runs.records[1]["request"]["model"] == "sequence"


# ------------------------------------------------------------------------------------------- strategies


def test_entropy_is_highest_for_the_flattest_distribution():
    assert entropy([0.5, 0.5]) == pytest.approx(np.log(2))
    assert entropy([1.0, 0.0]) == pytest.approx(0.0, abs=1e-9)
    assert entropy([0.4, 0.6]) > entropy([0.1, 0.9])


class DropoutSegmenter(torch.nn.Module):
    """Two-class segmenter whose foreground logit is dropout(input): MC variance grows with the intensity."""

    def __init__(self):
        super().__init__()
        self.dropout = torch.nn.Dropout(0.5)

    def forward(self, x):
        return torch.cat([torch.zeros_like(x), self.dropout(x)], dim=1)


def test_mc_dropout_variance_grows_where_dropout_changes_the_output():
    network = DropoutSegmenter().eval()
    low = mc_dropout_variance(network, torch.full((1, 1, 8, 8), 0.1), SimpleInferer(), samples=8)
    high = mc_dropout_variance(network, torch.full((1, 1, 8, 8), 2.0), SimpleInferer(), samples=8)
    assert high > low > 0
    assert network.training is False and network.dropout.training is False  # the served network is left as it was


@pytest.fixture
def small_store(tmp_path):
    """A datastore of four 8x8x4 volumes of constant intensity 0.2, 1.0, 2.0, 3.0; the last one is labelled."""
    folder = tmp_path / "store"
    (folder / "labels" / "final").mkdir(parents=True)
    for name, value in {"dim": 0.2, "mid": 1.0, "bright": 2.0, "labelled": 3.0}.items():
        nib.save(nib.Nifti1Image(np.full((8, 8, 4), value, np.float32), np.eye(4)), folder / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.uint8), np.eye(4)), folder / "labels" / "final" / "labelled.nii.gz")
    return LocalDatastore(str(folder), extensions=["*.nii.gz"], auto_reload=False)


class StandInScorer:
    """Scores with a controlled model: a classifier p(tumor) = sigmoid(4 (mean - 1)), most unsure at mean 1.0,
    or the DropoutSegmenter's MC variance."""

    def __init__(self):
        self.calls = 0

    def checkpoint_mtime(self, task):
        return 1.0

    def __call__(self, task, image_id, datastore):
        self.calls += 1
        image = torch.as_tensor(np.asarray(nib.load(datastore.get_image_uri(image_id)).dataobj))[None, None]
        if task == "gate":
            p = float(torch.sigmoid(4 * (image.mean() - 1.0)))
            return entropy([1 - p, p])
        return mc_dropout_variance(DropoutSegmenter(), image, SimpleInferer(), samples=8)


TASKS = {"gate": ("classification", False), "seg": ("segmentation", True)}


def test_entropy_strategy_picks_the_image_the_classifier_is_least_sure_of(small_store):
    scorer = StandInScorer()
    strategy = UncertaintyStrategy("entropy", "classification", lambda: TASKS, scorer)
    small_store.update_image_info("labelled", {"class_labels": {"gate": {"label": "tumor"}}})
    choice = strategy({"task": "gate"}, small_store)
    assert choice["id"] == "mid" and choice["task"] == "gate"
    assert small_store.get_image_info("mid")["al_scores"]["gate"]["entropy"] == pytest.approx(np.log(2))
    calls = scorer.calls
    assert strategy({}, small_store)["id"] == "mid" and scorer.calls == calls  # cached for the same checkpoint


def test_epistemic_strategy_picks_the_highest_mc_variance_among_unlabelled_images(small_store):
    strategy = UncertaintyStrategy("epistemic", "segmentation", lambda: TASKS, StandInScorer())
    choice = strategy({"task": "seg"}, small_store)
    assert choice["id"] == "bright"  # "labelled" is brighter but already has a final mask
    scores = {i: small_store.get_image_info(i)["al_scores"]["seg"]["epistemic"] for i in ("dim", "mid", "bright")}
    assert scores["dim"] < scores["mid"] < scores["bright"]


def test_strategy_refuses_a_task_of_the_other_kind(small_store):
    strategy = UncertaintyStrategy("entropy", "classification", lambda: TASKS, StandInScorer())
    with pytest.raises(Exception, match="404"):
        strategy({"task": "seg"}, small_store)


def test_the_app_wires_each_strategy_to_the_tasks_whose_config_declares_it():
    """main.py reads ``uncertainty`` and ``volume_only`` from each served task's config (no probing)."""
    from types import SimpleNamespace

    from lib.activelearning import UNCERTAINTY
    from main import MRIApp

    def config(kind, uncertainty, volume_only=False):
        return SimpleNamespace(kind=kind, uncertainty=uncertainty, volume_only=volume_only)

    app = SimpleNamespace(
        models={
            "gate": config("classification", "entropy"),
            "crop": config("segmentation", "epistemic", volume_only=True),
            "slices": config("segmentation", "epistemic"),
            "unranked": config("classification", ""),
        },
        _scorer=StandInScorer(),
    )
    strategies = MRIApp.init_strategies(app)
    assert list(strategies) == ["random", "first", *UNCERTAINTY]
    assert strategies["entropy"].tasks() == {"gate": ("classification", False)}
    assert strategies["epistemic"].tasks() == {"crop": ("segmentation", True), "slices": ("segmentation", False)}
    assert strategies["epistemic"].kind == "segmentation" and strategies["entropy"].method == "entropy"
    rescored = []
    strategies["epistemic"].rescore = lambda task, datastore: rescored.append(task) or {}
    app._strategies, app.datastore = strategies, lambda: None
    MRIApp._after_retraining(app, {"task": "crop", "promoted": True})  # the task's declared strategy rescores
    MRIApp._after_retraining(app, {"task": "gate", "promoted": False})
    assert rescored == ["crop"]


# ------------------------------------------------------------------------------------------- one real run


def test_real_finetune_run_does_not_promote_a_candidate_worse_than_the_served_checkpoint(
    datastore_dir, tmp_path, monkeypatch
):
    """A 1-epoch fine-tune of tumor_seg on the sample data, with the served checkpoint's measured metric
    replaced by a perfect 1.0: the candidate is worse, so the served file keeps its bytes."""
    from monailabel.config import settings

    from lib.datastore import MRIDatastore
    from lib.trainers.base import MRITrainTask
    from main import discover_configs

    config = discover_configs()["tumor_seg"]()
    config.init("tumor_seg", str(tmp_path / "model"), {"tumor_seg_image_size": "64"}, None)
    (tmp_path / "model" / "tumor_seg").mkdir(parents=True)
    torch.save({"model": config.network.state_dict()}, config.path)
    served_bytes = open(config.path, "rb").read()
    measured = []

    def perfect_served(self, context, path):
        measured.append(path)
        return {"name": "val_mean_dice", "value": 1.0}

    monkeypatch.setattr(MRITrainTask, "evaluate_checkpoint", perfect_served)
    datastore = MRIDatastore(str(datastore_dir), extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT, auto_reload=False)
    stats = config.trainer()(
        {"finetune": True, "max_epochs": 1, "name": "finetune", "al_run": "r1", "dataset": "Dataset"}, datastore
    )
    result = json.loads((tmp_path / "model" / "tumor_seg" / "finetune_result.json").read_text())
    assert measured == [config.path]  # the served checkpoint was the one measured (and the run started from it)
    assert result["run"] == "r1" and result["promoted"] is False and "worse" in result["reason"]
    assert result["metric_before"] == 1.0 and result["metric_after"] < 1.0 and stats["finetune"] == result
    assert open(config.path, "rb").read() == served_bytes
    assert not (tmp_path / "model" / "tumor_seg" / "model.candidate.pt").exists()


class CountingSegmenter(DropoutSegmenter):
    """Records, per forward pass, whether the one-inference-at-a-time lock was held (in a class attribute: the
    scorer runs a deep copy of the network)."""

    lock_held: list = []

    def forward(self, x):
        self.lock_held.append(INFER_LOCK.locked())
        return super().forward(x)


class MirroredVolumeInfer:
    """Stands in for a volume segmentation infer task served with test-time mirroring along one axis."""

    type = "segmentation"

    def __init__(self):
        self.network = CountingSegmenter()

    def pre_transforms(self, data):
        return [lambda d: dict(d, image=np.asarray(nib.load(d["image"]).dataobj)[None])]

    def _get_network(self, device, data):
        return self.network

    def inferer(self, data):
        return MirrorAveragingInferer(SimpleInferer(), flip_axes=(0,))


def test_model_scorer_holds_the_infer_lock_per_image_and_samples_dropout_without_the_mirrors(small_store):
    infer = MirroredVolumeInfer()
    CountingSegmenter.lock_held.clear()
    scorer = ModelScorer(SimpleNamespace(_infers={"seg": infer}), samples=5)
    assert scorer("seg", "bright", small_store) > scorer("seg", "dim", small_store) > 0
    assert CountingSegmenter.lock_held == [True] * 10  # 5 dropout passes per image, not 5 per mirror
    assert not INFER_LOCK.locked()  # released after each image: an infer request waits for one image at most
