"""Tests of lib.learning_curve: one entry per epoch with the epoch's validation metrics, resume, publish, plot."""

import json

import pytest
import torch
from ignite.engine import Engine, Events

from lib.learning_curve import CURVE_FILE, PLOT_FILE, LearningCurveHandler, publish_curve, read_curve


def _run(path, epochs, start_epoch=0, val=lambda e: 0.1 * e):
    """A trainer whose metric is ``epoch / 10`` and an evaluator run at each epoch's end, as MONAI Label wires them."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    evaluator = Engine(lambda engine, batch: None)

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _metric(engine):
        engine.state.metrics["val_dice"] = val(trainer.state.epoch)

    trainer = Engine(lambda engine, batch: None)

    @trainer.on(Events.EPOCH_COMPLETED)
    def _validate(engine):  # MONAI's ValidationHandler, attached before the curve
        engine.state.metrics["train_dice"] = engine.state.epoch / 20
        evaluator.run([0])
        optimizer.param_groups[0]["lr"] /= 2  # an epoch-level schedule

    LearningCurveHandler(str(path), evaluator, optimizer).attach(trainer)
    if start_epoch:  # resumed, as MONAI Label's CheckpointLoader restores the trainer
        trainer.load_state_dict({"epoch": start_epoch, "max_epochs": epochs, "epoch_length": 1})
        trainer.run([0])
    else:
        trainer.run([0], max_epochs=epochs)


@pytest.mark.parametrize("epochs", [1, 3])
def test_one_entry_per_epoch_with_its_validation_metric(tmp_path, epochs):
    path = tmp_path / CURVE_FILE
    _run(path, epochs)
    curve = json.loads(path.read_text())
    assert [e["epoch"] for e in curve] == list(range(1, epochs + 1))
    for e in curve:
        assert e["val_dice"] == pytest.approx(0.1 * e["epoch"]) and e["train_dice"] == pytest.approx(e["epoch"] / 20)
    assert [e["lr"] for e in curve] == [0.5 / 2**k for k in range(epochs)]  # the rate each epoch trained with


def test_a_resumed_run_continues_the_curve(tmp_path):
    path = tmp_path / CURVE_FILE
    path.write_text(
        json.dumps([{"epoch": 1, "val_dice": 0.5}, {"epoch": 2, "val_dice": 0.6}, {"epoch": 3, "val_dice": 0.0}])
    )
    _run(path, 4, start_epoch=2)  # epoch 3 was cut off by the crash: recorded again
    assert [(e["epoch"], round(e["val_dice"], 2)) for e in read_curve(str(path))] == [
        (1, 0.5),
        (2, 0.6),
        (3, 0.3),
        (4, 0.4),
    ]


def test_publish_copies_and_draws_and_names_the_best_epoch(tmp_path):
    run, out = tmp_path / "run", tmp_path / "published"
    run.mkdir()
    out.mkdir()
    _run(run / CURVE_FILE, 4, val=lambda e: [0.2, 0.7, 0.5, 0.6][e - 1])
    card = publish_curve(str(run / CURVE_FILE), str(out), "val_dice")
    assert card == {"file": CURVE_FILE, "plot": PLOT_FILE, "epochs": 4, "key_metric": "val_dice", "best_epoch": 2}
    assert (out / PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_curve(str(out / CURVE_FILE)) == read_curve(str(run / CURVE_FILE))


@pytest.mark.parametrize("content", [None, "", "not json", "{}", "[1, 2]", '[{"epoch": "x"}]'])
def test_missing_or_broken_curve_reads_empty_and_publishes_nothing(tmp_path, content):
    path = tmp_path / CURVE_FILE
    if content is not None:
        path.write_text(content)
    assert read_curve(str(path)) == []
    assert publish_curve(str(path), str(tmp_path), "val_dice") is None
