"""Crash-safe checkpoints of a training run, as ignite handlers (attached by :class:`lib.trainers.base.MRITrainTask`).

- :class:`AtomicPublisher`, in place of MONAI Label's ``PublishStatsAndModel``
  (:meth:`lib.stock.StockTrainTask.publisher`): after each validation the run's statistics and, only at an epoch
  that improved the run's best validation metric, the served checkpoint are replaced atomically (a crash never
  leaves a half-copied ``model.pt`` to be served; after a resumed run's first validation the run folder's
  ``model.pt`` may hold a worse network than the one served). ``on_publish(stats)`` is called after each publish:
  the task writes ``model.json`` there, so the card beside the served checkpoint describes that checkpoint also
  when the run is killed before its end.
- :class:`ResumeState`: the run's ``resume.pt`` (network, optimizer, learning-rate schedule, AMP scaler,
  epoch/iteration, best validation metric): restored into a run that resumes (a request ``{"resume": true}`` with
  the same run ``name``), written atomically by rank 0 after every epoch, removed by rank 0 when the run completes.
  Early stopping's patience counter starts afresh on resume.
"""

import contextlib
import filecmp
import logging
import os
from typing import Callable, Dict, Optional

import torch
from ignite.engine import Events
from monailabel.tasks.train.handler import prepare_stats

from mri_label.core.atomic import atomic_copy, atomic_write, atomic_write_json

logger = logging.getLogger(__name__)

RESUME_FILE = "resume.pt"


class AtomicPublisher:
    """Ignite handler: MONAI Label's per-epoch publisher with atomic writes, publishing only at a best epoch.

    Args:
        stats_path: the task's ``train_stats.json`` (also written: ``<output_dir>/stats_<run_id>.json``).
        publish_path: where the best checkpoint is published (the served one, or a fine-tune run's candidate).
        key_metric_filename: the run's best checkpoint in ``output_dir`` (``model.pt``).
        start_ts, run_id, output_dir, trainer, evaluator: the run's (its context's).
        on_publish: called with the run's statistics after each publish.
    """

    def __init__(
        self,
        stats_path: Optional[str],
        publish_path: Optional[str],
        key_metric_filename: str,
        start_ts: float,
        run_id: str,
        output_dir: str,
        trainer,
        evaluator,
        on_publish: Optional[Callable[[Dict], None]] = None,
    ):
        self.stats_path, self.publish_path, self.key_metric_filename = stats_path, publish_path, key_metric_filename
        self.start_ts, self.run_id, self.output_dir = start_ts, run_id, output_dir
        self.trainer, self.evaluator, self.on_publish = trainer, evaluator, on_publish

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine=None) -> None:
        self.iteration_completed()

    def iteration_completed(self) -> Dict:
        stats = prepare_stats(self.start_ts, self.trainer, self.evaluator)
        atomic_write_json(os.path.join(self.output_dir, f"stats_{self.run_id}.json"), stats, indent=2, default=str)
        if self.stats_path:
            atomic_write_json(self.stats_path, stats, indent=2, default=str)
        best = self.evaluator is None or self.evaluator.state.best_metric_epoch == self.evaluator.state.epoch
        final_model = os.path.join(self.output_dir, self.key_metric_filename)
        if best and self.publish_path and os.path.exists(final_model):
            if not os.path.exists(self.publish_path) or not filecmp.cmp(self.publish_path, final_model, shallow=False):
                atomic_copy(final_model, self.publish_path)
                logger.info(f"New Model published: {final_model} => {self.publish_path}")  # MONAI Label's wording
                if self.on_publish is not None:
                    self.on_publish(stats)
        return stats


class ResumeState:
    """Ignite handler owning a run's ``resume.pt``.

    Args:
        path: the run's ``resume.pt`` (:func:`resume_path`).
        context: the run's context (network, optimizer, schedule, engines).
        resume: restore ``path`` into the run when attached (the run continues the interrupted one).
    """

    def __init__(self, path: str, context, resume: bool):
        self.path, self.context, self.resume = path, context, resume

    def attach(self, trainer) -> None:
        """Restore the state (``resume``) on every rank; on rank 0, write it after every epoch and remove it when the
        run completes (also after early stopping; not when the run fails)."""
        if self.resume:
            load_resume_state(self.context, self.path)
        if self.context.local_rank == 0:
            trainer.add_event_handler(Events.EPOCH_COMPLETED, self.save)
            trainer.add_event_handler(Events.COMPLETED, self.remove)

    def save(self, engine=None) -> None:
        save_resume_state(self.context, self.path)

    def remove(self, engine=None) -> None:
        with contextlib.suppress(FileNotFoundError):  # the run finished: nothing left to resume
            os.remove(self.path)


def resume_path(model_dir: str, run_name: str) -> str:
    """``<model_dir>/<run name>/resume.pt``."""
    return os.path.join(model_dir, run_name, RESUME_FILE)


def resume_problem(path: str, max_epochs: int) -> Optional[str]:
    """Why a run cannot be resumed from ``path`` with ``max_epochs``, or None if it can."""
    if not os.path.exists(path):
        return f"nothing to resume: {path} does not exist (the run finished, or never completed an epoch)"
    epoch = int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    if epoch >= max_epochs:
        return f"the interrupted run already completed {epoch} epochs; ask max_epochs > {epoch} to resume it"
    return None


def _network(context):
    return getattr(context.network, "module", context.network)  # without DDP


def save_resume_state(context, path: str) -> None:
    """Write the state needed to continue the run after its current epoch (rank 0, atomically)."""
    trainer, evaluator = context.trainer, context.evaluator
    state = {
        "epoch": int(trainer.state.epoch),
        "model": _network(context).state_dict(),
        "optimizer": context.optimizer.state_dict(),
        "lr_schedule": context.lr_schedule.state_dict() if getattr(context, "lr_schedule", None) else None,
        "scaler": trainer.scaler.state_dict() if getattr(trainer, "scaler", None) else None,
        "best_metric": float(evaluator.state.best_metric) if evaluator else None,
        "best_metric_epoch": int(evaluator.state.best_metric_epoch) if evaluator else None,
    }
    atomic_write(path, lambda f: torch.save(state, f))


def load_resume_state(context, path: str) -> int:
    """Restore the state written by :func:`save_resume_state` into a run about to start; return its epoch."""
    state = torch.load(path, map_location=context.device, weights_only=True)
    epoch = int(state["epoch"])
    if epoch >= context.max_epochs:
        raise ValueError(
            f"max_epochs must exceed the {epoch} epochs the interrupted run completed, got {context.max_epochs}"
        )
    _network(context).load_state_dict(state["model"])
    context.optimizer.load_state_dict(state["optimizer"])
    if state["lr_schedule"] and getattr(context, "lr_schedule", None):
        context.lr_schedule.load_state_dict(state["lr_schedule"])
    if state["scaler"] and getattr(context.trainer, "scaler", None):
        context.trainer.scaler.load_state_dict(state["scaler"])
    if context.evaluator is not None and state["best_metric_epoch"] is not None:
        context.evaluator.state.best_metric = state["best_metric"]
        context.evaluator.state.best_metric_epoch = state["best_metric_epoch"]
    trainer = context.trainer
    trainer.state.epoch = epoch
    trainer.state.iteration = epoch * (trainer.state.epoch_length or 0)
    logger.info(f"resuming {path} after epoch {epoch} (best validation metric so far {state['best_metric']})")
    return epoch
