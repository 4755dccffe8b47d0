"""The learning curve of a training run: metric vs epoch, recorded by an ignite handler and drawn with matplotlib.

``learning_curve.json`` is a list of epochs, each ``{"epoch": n, "<metric>": value, ...}`` with the trainer's
metrics (e.g. ``train_accuracy``), the validation metrics of that epoch (``val_...``) and the learning rate
(``lr``). It is written into the run folder after every epoch (a resumed run continues it) and copied beside the
published checkpoint with ``learning_curve.png`` when the checkpoint's ``model.json`` is written.
"""

import json
import logging
import os
import shutil
from typing import Dict, List, Optional

from ignite.engine import Engine, Events

from mri_label.core.atomic import atomic_write_json

logger = logging.getLogger(__name__)

CURVE_FILE = "learning_curve.json"
PLOT_FILE = "learning_curve.png"


def read_curve(path: str) -> List[Dict]:
    """The epochs recorded in ``path`` (a ``learning_curve.json``); [] when there is none or it is unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            curve = json.load(handle)
    except (OSError, ValueError):
        return []
    return (
        [e for e in curve if isinstance(e, dict) and isinstance(e.get("epoch"), int)] if isinstance(curve, list) else []
    )


class LearningCurveHandler:
    """Ignite handler: after every training epoch (and after its validation, when attached after MONAI's
    ``ValidationHandler``) append the epoch's metrics to ``path``.

    Args:
        path: the run's ``learning_curve.json``; epochs already in it (an interrupted run that resumes) are kept up to
            the epoch the trainer continues from.
        evaluator: the validation engine whose ``state.metrics`` belong to the same epoch, or None.
        optimizer: its first parameter group's learning rate at the start of the epoch is recorded as ``lr``.
    """

    def __init__(self, path: str, evaluator: Optional[Engine] = None, optimizer=None):
        self.path, self.evaluator, self.optimizer = path, evaluator, optimizer
        self._lr: Optional[float] = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _epoch_started(self, engine: Engine) -> None:
        # the rate this epoch trains with (an epoch-level schedule steps it at the epoch's end)
        self._lr = float(self.optimizer.param_groups[0]["lr"]) if self.optimizer is not None else None

    def __call__(self, engine: Engine) -> None:
        epoch = int(engine.state.epoch)
        curve = [e for e in read_curve(self.path) if e["epoch"] < epoch]
        entry = {"epoch": epoch, **_numbers(engine.state.metrics)}
        if self.evaluator is not None and self.evaluator.state.epoch:
            entry.update(_numbers(self.evaluator.state.metrics))
        if self._lr is not None:
            entry["lr"] = self._lr
        atomic_write_json(self.path, curve + [entry], indent=1)


def _numbers(metrics: Dict) -> Dict[str, float]:
    out = {}
    for name, value in (metrics or {}).items():
        try:
            out[name] = round(float(value), 6)
        except (TypeError, ValueError):  # per-class tensors and the like: the curve keeps scalars only
            continue
    return out


def publish_curve(run_curve: str, folder: str, key_metric: Optional[str] = None) -> Optional[Dict]:
    """Copy a run's ``learning_curve.json`` into ``folder`` (beside the checkpoint) and draw ``learning_curve.png``.

    Returns:
        ``{"file", "plot", "epochs", "key_metric", "best_epoch"}`` for ``model.json``, or None when the run recorded
        no epoch.
    """
    curve = read_curve(run_curve)
    if not curve:
        return None
    target = os.path.join(folder, CURVE_FILE)
    if os.path.abspath(run_curve) != os.path.abspath(target):
        shutil.copyfile(run_curve, target)
    best = None
    if key_metric and any(key_metric in e for e in curve):
        best = max((e for e in curve if key_metric in e), key=lambda e: e[key_metric])["epoch"]
    plot = plot_curve(curve, os.path.join(folder, PLOT_FILE), key_metric)
    return {
        "file": CURVE_FILE,
        "plot": plot and PLOT_FILE,
        "epochs": len(curve),
        "key_metric": key_metric,
        "best_epoch": best,
    }


def plot_curve(curve: List[Dict], path: str, key_metric: Optional[str] = None) -> Optional[str]:
    """Validation and training metrics (0..1 scale, left) and the learning rate (right) against the epoch, as a PNG
    at ``path``; None where matplotlib cannot draw here."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as error:  # the curve must never stop a training
        logger.warning(f"learning curve not drawn ({error})")
        return None
    names = sorted({k for e in curve for k in e if k not in ("epoch", "lr")})
    figure, axis = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    for name in names:
        points = [(e["epoch"], e[name]) for e in curve if name in e]
        axis.plot(*zip(*points), marker="o", markersize=3, linewidth=2.2 if name == key_metric else 1.2, label=name)
    axis.set_xlabel("epoch")
    axis.set_ylabel("metric")
    axis.grid(alpha=0.3)
    if any("lr" in e for e in curve):
        lr_axis = axis.twinx()
        lr_axis.plot(
            [e["epoch"] for e in curve if "lr" in e],
            [e["lr"] for e in curve if "lr" in e],
            color="grey",
            linestyle=":",
            label="learning rate",
        )
        lr_axis.set_ylabel("learning rate", color="grey")
    axis.legend(loc="lower right", fontsize=8)
    axis.set_title(f"learning curve (key metric: {key_metric or 'n/a'})", fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
