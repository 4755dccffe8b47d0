"""Crash-safe training checkpoints (lib.trainers.checkpoints): atomic publishing at best epochs only, and an
interrupted run resumed from its ``resume.pt`` (network, optimizer, schedule, epoch, best metric)."""

import json
import os
from types import SimpleNamespace

import pytest
import torch
from ignite.engine import Events

from lib.trainers.checkpoints import AtomicPublisher, resume_path, resume_problem

TASK = "tumor_gate"
CONF = {f"{TASK}_image_size": "32", f"{TASK}_widths": "4,8,8,8"}
REQUEST = {"dataset": "Dataset", "seed": 0, "early_stop_patience": 0, "name": "run"}


def _train(datastore_dir, model_dir, request, crash_after_epoch=None):
    """Train in this process; with ``crash_after_epoch``, raise after that epoch (after its resume state is
    written), as a killed run stops. Returns (config, stats, seen) with the epoch and learning rate it started at."""
    from monailabel.config import settings

    from lib.datastore import MRIDatastore
    from main import discover_configs

    config = discover_configs()[TASK]()
    config.init(TASK, str(model_dir), CONF, None)
    datastore = MRIDatastore(str(datastore_dir), extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT, auto_reload=False)
    trainer, seen = config.trainer(), {}
    original = trainer.finalize

    def finalize(context):  # on the instance: MONAI Label may have re-imported lib, so not on a module's class
        original(context)
        seen.update(start_epoch=context.trainer.state.epoch, lr_at_start=context.optimizer.param_groups[0]["lr"])

        def crash(engine):
            if engine.state.epoch == crash_after_epoch:
                raise _Crash(f"killed after epoch {crash_after_epoch}")

        context.trainer.add_event_handler(Events.EPOCH_COMPLETED, crash)

    trainer.finalize = finalize
    return config, trainer(request, datastore), seen


class _Crash(RuntimeError):
    pass


def test_an_interrupted_run_resumes_where_it_stopped(datastore_dir, tmp_path):
    model_dir = tmp_path / "model"
    with pytest.raises(_Crash):
        _train(datastore_dir, model_dir, dict(REQUEST, max_epochs=4), crash_after_epoch=2)
    state_file = resume_path(str(model_dir / TASK), "run")
    saved = torch.load(state_file, weights_only=True)
    assert saved["epoch"] == 2 and saved["best_metric_epoch"] in (1, 2)
    served = model_dir / TASK / "model.pt"
    assert served.exists()  # published at a best epoch before the crash
    card = json.loads((model_dir / TASK / "model.json").read_text())  # describes that checkpoint, not an older run
    assert card["training"]["finished"] is False and card["training"]["max_epochs"] == 4
    assert card["training"]["epochs"] == card["metrics"]["best_epoch"] == saved["best_metric_epoch"]
    assert (
        resume_problem(state_file, 2)
        == "the interrupted run already completed 2 epochs; ask max_epochs > 2 to resume it"
    )
    assert resume_problem(state_file, 4) is None

    config, stats, seen = _train(datastore_dir, model_dir, dict(REQUEST, max_epochs=4, resume=True))
    assert seen["start_epoch"] == 2  # epochs 3 and 4 only
    assert stats["epoch"] == 4
    cosine = 1e-3 * (1 + torch.cos(torch.tensor(torch.pi * 2 / 4))) / 2  # the schedule continued, not restarted
    assert seen["lr_at_start"] == pytest.approx(float(cosine), rel=1e-5)
    assert not os.path.exists(state_file)  # the run finished: nothing left to resume
    assert resume_problem(state_file, 10).startswith("nothing to resume")
    assert stats["best_metric"] >= saved["best_metric"] - 1e-9  # the best of the whole run, not of its second part
    card = json.loads((model_dir / TASK / "model.json").read_text())
    assert card["training"]["finished"] is True and card["training"]["epochs"] == 4


def test_resume_and_finetune_exclude_each_other(datastore_dir, tmp_path):
    with pytest.raises(ValueError, match="finetune and resume exclude each other"):
        _train(datastore_dir, tmp_path / "model", dict(REQUEST, max_epochs=1, resume=True, finetune=True))


def _publisher(tmp_path, best_epoch, epoch):
    run, served = tmp_path / "run", tmp_path / "served.pt"
    run.mkdir(exist_ok=True)
    (run / "model.pt").write_bytes(b"new network")
    served.write_bytes(b"old network")
    state = SimpleNamespace(
        epoch=epoch,
        best_metric_epoch=best_epoch,
        best_metric=0.5,
        iteration=epoch,
        max_epochs=5,
        epoch_length=1,
        metrics={},
        key_metric_name="acc",
    )
    engine = SimpleNamespace(state=state, get_stats=lambda: {}, published=[])
    stats = tmp_path / "train_stats.json"
    publisher = AtomicPublisher(
        str(stats), str(served), "model.pt", 0, "r1", str(run), engine, engine, on_publish=engine.published.append
    )
    return publisher, served, stats


@pytest.mark.parametrize("best_epoch, epoch, published", [(3, 3, True), (2, 3, False)])
def test_the_served_checkpoint_changes_only_at_a_best_epoch(tmp_path, best_epoch, epoch, published):
    publisher, served, stats = _publisher(tmp_path, best_epoch, epoch)
    publisher.iteration_completed()
    assert served.read_bytes() == (b"new network" if published else b"old network")
    assert len(publisher.trainer.published) == int(published)  # model.json is written with each publish only
    assert stats.exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".partial")]


@pytest.mark.parametrize("key", ["finetune", "resume"])
def test_a_bad_flag_in_the_train_request_is_refused_naming_the_param(datastore_dir, tmp_path, key):
    """The train request's flags are request params: the message names ``params <key>``, never ``--conf``."""
    with pytest.raises(ValueError) as refused:
        _train(datastore_dir, tmp_path / "model", dict(REQUEST, max_epochs=1, **{key: "maybe"}))
    message = str(refused.value)
    assert message == f"params {key} must be true or false, got 'maybe'" and "--conf" not in message
