"""The small pieces a training run is composed of (lib.trainers): what a request decides before the run
(TrainingRun), the fine-tune policy's start and candidate (FineTune), codecarbon around the run (EnergyMeter) and the
owner of resume.pt (ResumeState), each on its own, without a training."""

import os
import re
from types import SimpleNamespace

import pytest

from lib.trainers.base import TrainingRun
from lib.trainers.checkpoints import ResumeState
from lib.trainers.energy import EnergyMeter
from lib.trainers.promotion import FineTune


def _task(tmp_path, served=True, shipped=None):
    folder = tmp_path / "model" / "tumor_gate"
    (folder / "run").mkdir(parents=True)
    if served:
        (folder / "model.pt").write_bytes(b"served")
    return SimpleNamespace(
        model_dir=str(folder),
        publish_path=str(folder / "model.pt"),
        key_metric_filename="model.pt",
        shipped_path=shipped,
    )


def test_a_plain_run_publishes_to_the_served_path(tmp_path):
    task = _task(tmp_path)
    run = TrainingRun({"name": "run"}, task)
    assert run.publish_path == task.publish_path and run.finetune is None and run.resume is False
    assert run.context is None


def test_a_finetune_run_starts_from_the_served_checkpoint_and_publishes_a_candidate(tmp_path):
    task = _task(tmp_path)
    candidate = tmp_path / "model" / "tumor_gate" / "model.candidate.pt"
    stale_run_model = tmp_path / "model" / "tumor_gate" / "run" / "model.pt"
    candidate.write_bytes(b"left by an earlier run")
    stale_run_model.write_bytes(b"left by an earlier run")
    run = TrainingRun({"name": "run", "finetune": "true"}, task)
    assert run.finetune.start == task.publish_path and run.publish_path == str(candidate)
    assert not candidate.exists() and not stale_run_model.exists()  # every rank decides what to load alike
    assert os.path.exists(task.publish_path)  # the served checkpoint is never touched before the decision


def test_a_finetune_run_without_a_trained_checkpoint_starts_from_the_shipped_one(tmp_path):
    shipped = str(tmp_path / "shipped" / "model.pt")
    assert TrainingRun({"name": "run", "finetune": True}, _task(tmp_path, False, shipped)).finetune.start == shipped
    assert FineTune(str(tmp_path / "none.pt"), None, str(tmp_path / "x.pt")).start is None


@pytest.mark.parametrize(
    "request_, message",
    [
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
        ({"seed": True}, "seed must be an integer >= 0, got True"),
        ({"finetune": True, "resume": True}, "finetune and resume exclude each other"),
        ({"resume": "maybe"}, "params resume must be true or false, got 'maybe'"),
    ],
)
def test_a_bad_request_is_refused_before_anything_is_removed(tmp_path, request_, message):
    task = _task(tmp_path)
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainingRun(dict(request_, name="run"), task)
    assert os.path.exists(task.publish_path)


def test_the_fine_tune_metrics_come_from_the_baseline_and_the_run(tmp_path):
    policy = FineTune(str(tmp_path / "model.pt"), None, str(tmp_path / "run.pt"))
    assert policy.metrics({}) == {"metric": None, "metric_before": None, "metric_after": None}
    policy.measure_baseline(lambda path: {"name": "val_acc", "value": 0.5}, "task")
    assert policy.baseline is None  # nothing served: nothing to measure
    policy.start = str(tmp_path / "served.pt")
    policy.measure_baseline(lambda path: {"name": "val_acc", "value": 0.5}, "task")
    stats = {"eval": {"key_metric_name": "val_acc", "best_metric": 0.7}}
    assert policy.metrics(stats) == {"metric": "val_acc", "metric_before": 0.5, "metric_after": 0.7}


class _Tracker:
    def __init__(self, fail_stop=False):
        self.stopped, self.fail_stop = False, fail_stop
        self.final_emissions_data = SimpleNamespace(energy_consumed=0.002, country_name="Germany", duration=12.34)

    def stop(self):
        self.stopped = True
        if self.fail_stop:
            raise RuntimeError("no power meter")
        return 0.001


def test_energy_is_measured_around_the_run_and_never_stops_it(monkeypatch):
    # the module EnergyMeter runs in (tests that load the app through MONAI Label may import lib a second time)
    energy = EnergyMeter.__enter__.__globals__
    tracker = _Tracker()
    monkeypatch.setitem(energy, "_start", lambda country: tracker)
    with pytest.raises(KeyError):  # the run's own error goes on, the tracker is stopped all the same
        with EnergyMeter("DEU") as meter:
            raise KeyError("run failed")
    assert tracker.stopped and meter.record["recorded"] is True and meter.record["energy_kwh"] == 0.002
    assert meter.record["duration_s"] == 12.3 and meter.record["tool"] == "codecarbon (offline)"

    monkeypatch.setitem(energy, "_start", lambda country: _Tracker(fail_stop=True))
    with EnergyMeter("DEU") as meter:
        pass
    assert meter.record == {"recorded": False}
    with EnergyMeter("DEU", active=False) as meter:  # ranks other than 0 measure nothing
        assert meter.tracker is None
    assert meter.record == {"recorded": False}


class _Engine:
    def __init__(self):
        self.handlers = []

    def add_event_handler(self, event, handler):
        self.handlers.append((str(event), handler.__name__))


@pytest.mark.parametrize(
    "rank, handlers", [(0, [("Events.EPOCH_COMPLETED", "save"), ("Events.COMPLETED", "remove")]), (1, [])]
)
def test_only_rank_0_writes_and_removes_resume_pt(tmp_path, rank, handlers):
    trainer = _Engine()
    state = ResumeState(str(tmp_path / "resume.pt"), SimpleNamespace(local_rank=rank), resume=False)
    state.attach(trainer)
    assert trainer.handlers == handlers
    (tmp_path / "resume.pt").write_bytes(b"state")
    state.remove()
    state.remove()  # already gone: nothing to do
    assert not (tmp_path / "resume.pt").exists()
