"""What every mri-label trainer shares: data from the datastore, a fixed subject split, AMP on GPU,
a cosine learning-rate schedule, early stopping, and a ``model.json`` written beside the checkpoint."""

import json
import logging
import os
import time
from abc import abstractmethod
from typing import Dict, List

import torch
from monai.handlers import LrScheduleHandler
from monai.inferers import SimpleInferer
from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.basic_train import BasicTrainTask, Context

from lib.datalists import split_by_subject
from lib.networks import build_network

logger = logging.getLogger(__name__)


class MRITrainTask(BasicTrainTask):
    """Base trainer.

    Args:
        model_dir: folder for this task's training runs (``<app>/model/<task>``).
        task: task name (used in messages and ``model.json``).
        network_spec: :mod:`lib.networks` spec of the network to train.
        card: static part of ``model.json`` (labels, input size, spacing, normalisation...).
        publish_path: where the best checkpoint is published for inference.
        config: defaults shown in ``/info`` and overridable per request.
    """

    def __init__(self, model_dir: str, task: str, network_spec: Dict, card: Dict, publish_path: str, description: str, config: Dict = None):
        defaults = {
            "max_epochs": 30,
            "early_stop_patience": 10,
            "val_split": 0.2,
            "split_seed": 0,
            "learning_rate": 1e-3,
            "train_batch_size": 16,
            "val_batch_size": 16,
            "dataset": "CacheDataset",
            "dataloader": "DataLoader",
            "tracking": "None",
        }
        defaults.update(config or {})
        super().__init__(
            model_dir=model_dir,
            description=description,
            config=defaults,
            amp=torch.cuda.is_available(),
            publish_path=publish_path,
            tracking=None,
            load_strict=True,
        )
        self.task, self.network_spec, self.card = task, network_spec, card

    @abstractmethod
    def items(self, datastore: Datastore) -> List[Dict]:
        """Training items of this task found in the datastore."""

    def pre_process(self, request, datastore: Datastore):
        items = self.items(datastore)
        if not items:
            raise ValueError(f"{self.task}: the datastore holds no labelled data for this task")
        return items

    def partition_datalist(self, context: Context, shuffle=False):
        val_split = float(context.request.get("val_split", 0.2))
        seed = int(context.request.get("split_seed", 0))
        train, val = split_by_subject(context.datalist, val_split, seed)
        self._context = context
        context.split = {
            "seed": seed,
            "train_subjects": sorted({str(i["subject"]) for i in train}),
            "val_subjects": sorted({str(i["subject"]) for i in val}),
            "train_items": len(train),
            "val_items": len(val),
        }
        logger.info(
            f"{self.task}: {len(train)} training items from {len(context.split['train_subjects'])} subjects, "
            f"{len(val)} validation items from {len(context.split['val_subjects'])} subjects"
        )
        return train, val

    def network(self, context: Context):
        return build_network(self.network_spec)

    def optimizer(self, context: Context):
        lr = float(context.request.get("learning_rate", 1e-3))
        return torch.optim.AdamW(context.network.parameters(), lr=lr, weight_decay=1e-4)

    def lr_scheduler_handler(self, context: Context):
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(context.optimizer, T_max=max(1, int(context.max_epochs)))
        return LrScheduleHandler(schedule, print_lr=True, epoch_level=True)

    def val_inferer(self, context: Context):
        return SimpleInferer()

    def train(self, rank, world_size, request, datalist):
        self._context = None
        stats = super().train(rank, world_size, request, datalist)
        if rank == 0 and os.path.exists(self._publish_path):
            self.write_card(self._context, stats)
        return stats

    def write_card(self, context: Context, stats: Dict) -> None:
        """Write ``model.json`` beside the published checkpoint (nnU-Net style self-description)."""
        evaluation = stats.get("eval") or stats.get("train") or {}
        card = dict(self.card)
        card.update(
            {
                "task": self.task,
                "network": self.network_spec,
                "checkpoint": os.path.basename(self._publish_path),
                "training": {
                    "items": len(context.datalist) if context else None,
                    "split": getattr(context, "split", None),
                    "epochs": stats.get("epoch"),
                    "device": str(context.device) if context else None,
                    "amp": self._amp,
                },
                "metrics": {
                    "key_metric": evaluation.get("key_metric_name"),
                    "best": evaluation.get("best_metric"),
                    "best_epoch": evaluation.get("best_metric_epoch"),
                    "split": "validation subjects" if stats.get("eval") else "training items",
                },
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "code_version": _code_version(),
            }
        )
        target = os.path.join(os.path.dirname(self._publish_path), "model.json")
        temporary = target + ".tmp"
        with open(temporary, "w") as handle:
            json.dump(card, handle, indent=2, default=str)
        os.replace(temporary, target)


def _code_version() -> str:
    try:
        from importlib.metadata import version

        return version("mri-label")
    except Exception:  # not installed as a package
        return "unknown"
