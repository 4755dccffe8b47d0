"""Reference MONAI Label app for ``benchmarks/latency.py``: the stock radiology app reduced to its
``segmentation_spleen`` model.

Mirrors ``sample-apps/radiology/main.py`` of MONAI Label 0.8.5 (Project-MONAI/MONAILabel) as far as one model needs:
the app loads the TaskConfigs named by ``--conf models``, calls ``init(name, model_dir, conf, planner)`` and serves
their infer tasks through the stock ``MONAILabelApp`` (datastore, endpoints, infer path). Left out: scribbles, SAM2,
bundles, trainers, the heuristic planner (off by default upstream) and the other models. Two benchmark-only
options: ``--conf model_dir DIR`` (upstream: ``<app>/model``; default here ``<tmp>/mri-label-reference-model``, so
that no weights land in the repository) and ``--conf random_init_weights true``, which writes the network's initial
weights as the published checkpoint when none exists; upstream downloads pre-trained weights, and the time of an
infer does not depend on the weights.

    monailabel start_server --app benchmarks/reference_app --studies DIR --conf models segmentation_spleen \
        --conf use_pretrained_model false --conf random_init_weights true --conf model_dir /tmp/ref_model
"""

import logging
import os
import tempfile
from typing import Dict

import torch
from lib.configs.segmentation_spleen import SegmentationSpleen
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.utils.others.generic import strtobool

logger = logging.getLogger(__name__)

CONFIGS = {"segmentation_spleen": SegmentationSpleen}


class ReferenceApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        self.model_dir = conf.get("model_dir") or os.path.join(tempfile.gettempdir(), "mri-label-reference-model")
        wanted = [m.strip() for m in (conf.get("models") or "segmentation_spleen").split(",") if m.strip()]
        unknown = [m for m in wanted if m != "all" and m not in CONFIGS]
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; available: all, {', '.join(CONFIGS)}")
        self.models: Dict[str, TaskConfig] = {}
        for name, cls in CONFIGS.items():
            if name in wanted or "all" in wanted:
                self.models[name] = cls()
                self.models[name].init(name, self.model_dir, conf, None)
                if strtobool(conf.get("random_init_weights", "false")):
                    self._write_initial_weights(self.models[name])
        logger.info(f"+++ Using Models: {list(self.models.keys())}")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="MONAILabel - Radiology reference (segmentation_spleen)",
            description="Stock radiology segmentation_spleen infer, for latency comparison",
            version="0.8.5",
        )

    @staticmethod
    def _write_initial_weights(config: TaskConfig) -> None:
        paths = config.path if isinstance(config.path, list) else [config.path]
        if any(os.path.exists(p) for p in paths):
            return
        os.makedirs(os.path.dirname(paths[-1]), exist_ok=True)
        torch.save({"model": config.network.state_dict()}, paths[-1])
        logger.info(f"wrote random initial weights to {paths[-1]}")

    def init_infers(self) -> Dict[str, InferTask]:
        return {name: config.infer() for name, config in self.models.items()}

    def init_trainers(self) -> Dict[str, TrainTask]:
        return {}

    def init_strategies(self) -> Dict[str, Strategy]:
        return {"random": Random(), "first": First()}
