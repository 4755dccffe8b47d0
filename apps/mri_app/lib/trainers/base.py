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

from mri_label.splits import ensure_split, split_of

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
        self._split = None

    @abstractmethod
    def items(self, datastore: Datastore) -> List[Dict]:
        """Training items of this task found in the datastore."""

    def pre_process(self, request, datastore: Datastore):
        items = self.items(datastore)
        if not items:
            raise ValueError(f"{self.task}: the datastore holds no labelled data for this task")
        folder = getattr(datastore, "_datastore_path", None)
        self._split = ensure_split(folder, seed=int(request.get("split_seed", 0))) if folder else None
        return items

    def partition_datalist(self, context: Context, shuffle=False):
        """Train/validation items by the datastore's fixed subject split (``split.json``, written once and
        reused by every training); its test subjects are never trained on. A datastore without a folder
        (DICOMweb) is split by subject hash on each run (``val_split``, ``split_seed``)."""
        self._context = context
        if self._split:
            side = {i["subject"]: split_of(self._split, i["subject"]) for i in context.datalist}
            train = [i for i in context.datalist if side[i["subject"]] == "train"]
            val = [i for i in context.datalist if side[i["subject"]] == "val"]
            test = [i for i in context.datalist if side[i["subject"]] == "test"]
            seed = self._split["seed"]
        else:
            seed = int(context.request.get("split_seed", 0))
            train, val = split_by_subject(context.datalist, float(context.request.get("val_split", 0.2)), seed)
            test = []
        if not train:  # too few subjects for a three-way split: train on what there is
            train, val = val + test, []
        context.split = {
            "source": "split.json" if self._split else "hash per run",
            "seed": seed,
            "train_subjects": sorted({str(i["subject"]) for i in train}),
            "val_subjects": sorted({str(i["subject"]) for i in val}),
            "test_subjects_held_out": sorted({str(i["subject"]) for i in test}),
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
        tracker = _carbon_tracker(str(request.get("carbon_country", "DEU"))) if rank == 0 else None
        try:
            stats = super().train(rank, world_size, request, datalist)
        finally:
            energy = _stop(tracker)
        if rank == 0:
            stats["energy"] = energy
            if os.path.exists(self._stats_path):
                _write_json(self._stats_path, dict(_read_json(self._stats_path), energy=energy))
            if os.path.exists(self._publish_path):
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
                    "energy": stats.get("energy"),
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
        _write_json(os.path.join(os.path.dirname(self._publish_path), "model.json"), card)


def _read_json(path: str) -> Dict:
    with open(path) as handle:
        return json.load(handle)


def _write_json(path: str, content: Dict) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(content, handle, indent=2, default=str)
    os.replace(temporary, path)


def _carbon_tracker(country: str):
    """A started codecarbon tracker in offline mode (no network), or None where codecarbon cannot run here."""
    try:
        from codecarbon import OfflineEmissionsTracker

        tracker = OfflineEmissionsTracker(country_iso_code=country, save_to_file=False, log_level="error")
        tracker.start()
        return tracker
    except Exception as error:  # energy accounting must never stop a training
        logger.warning(f"codecarbon could not start ({error}); this run's energy is not recorded")
        return None


def _stop(tracker) -> Dict:
    """Energy (kWh) and emissions (kg CO2eq) of the run measured by ``tracker``."""
    if tracker is None:
        return {"recorded": False}
    try:
        emissions = tracker.stop()
        data = tracker.final_emissions_data
        return {
            "recorded": True,
            "energy_kwh": float(data.energy_consumed),
            "co2_kg": float(emissions),
            "country": data.country_name,
            "duration_s": round(float(data.duration), 1),
            "tool": "codecarbon (offline)",
        }
    except Exception as error:
        logger.warning(f"codecarbon could not finish ({error}); this run's energy is not recorded")
        return {"recorded": False}


def _code_version() -> str:
    try:
        from importlib.metadata import version

        return version("mri-label")
    except Exception:  # not installed as a package
        return "unknown"
