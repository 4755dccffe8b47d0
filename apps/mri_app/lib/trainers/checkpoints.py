"""Crash-safe checkpoints for training runs.

- :class:`AtomicPublisher` replaces MONAI Label's ``PublishStatsAndModel``: the served checkpoint and
  ``train_stats.json`` are replaced atomically (a crash never leaves a half-copied ``model.pt`` to be served), and
  only at an epoch that improved the run's best validation metric (after a resumed run's first validation the run
  folder's ``model.pt`` may hold a worse network than the one served). A trainer engine that carries
  ``on_publish(stats)`` has it called after each publish: the task writes ``model.json`` there, so the card beside
  the served checkpoint describes that checkpoint also when the run is killed before its end.
- :func:`save_resume_state` / :func:`load_resume_state`: after every epoch, rank 0 writes ``resume.pt`` in the
  run folder (network, optimizer, learning-rate schedule, AMP scaler, epoch/iteration, best validation metric),
  atomically; a request ``{"resume": true}`` with the same run ``name`` continues from it. Early stopping's
  patience counter starts afresh on resume.
"""

import filecmp
import logging
import os
from typing import Optional

import torch
from monailabel.tasks.train import basic_train
from monailabel.tasks.train.handler import PublishStatsAndModel, prepare_stats

from mri_label.core.atomic import atomic_copy, atomic_write, atomic_write_json

logger = logging.getLogger(__name__)

RESUME_FILE = "resume.pt"


class AtomicPublisher(PublishStatsAndModel):
    """MONAI Label's per-epoch publisher with atomic writes, publishing only at a best epoch."""

    def iteration_completed(self):
        stats = prepare_stats(self.start_ts, self.trainer, self.evaluator)
        atomic_write_json(os.path.join(self.output_dir, f"stats_{self.run_id}.json"), stats, indent=2, default=str)
        if self._stats_path:
            atomic_write_json(self._stats_path, stats, indent=2, default=str)
        best = self.evaluator is None or self.evaluator.state.best_metric_epoch == self.evaluator.state.epoch
        final_model = os.path.join(self.output_dir, self._key_metric_filename)
        if best and self._publish_path and os.path.exists(final_model):
            if not os.path.exists(self._publish_path) or not filecmp.cmp(
                self._publish_path, final_model, shallow=False
            ):
                atomic_copy(final_model, self._publish_path)
                logger.info(f"New Model published: {final_model} => {self._publish_path}")  # MONAI Label's wording
                on_publish = getattr(self.trainer, "on_publish", None)
                if on_publish is not None:
                    on_publish(stats)
        return stats


# BasicTrainTask.finalize builds its publisher by this module-level name; ours takes its place for every task.
basic_train.PublishStatsAndModel = AtomicPublisher


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
