"""Reference TaskConfig for ``benchmarks/latency.py``: MONAI Label's stock radiology ``segmentation_spleen``.

Mirrors ``sample-apps/radiology/lib/configs/segmentation_spleen.py`` of MONAI Label 0.8.5 (Project-MONAI/MONAILabel,
Apache-2.0): labels ``{"spleen": 1}``, model files ``[<model_dir>/pretrained_<name>.pt, <model_dir>/<name>.pt]``,
1 mm target spacing, ``roi_size`` (96, 96, 96) handed to the infer task, and the same network::

    UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=[16, 32, 64, 128, 256], strides=[2, 2, 2, 2],
         num_res_units=2, norm="batch")

Left out, for a benchmark that must not reach the network: the download of the pre-trained weights
(``use_pretrained_model`` must be ``false`` here; the app writes random initial weights instead, see ``main.py``),
the trainer, and the epistemic strategy/scoring (off by default upstream).
"""

import logging
import os
from typing import Any, Dict

from monai.networks.nets import UNet
from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.utils.others.generic import strtobool

import lib.infers

logger = logging.getLogger(__name__)


class SegmentationSpleen(TaskConfig):
    def init(self, name: str, model_dir: str, conf: Dict[str, str], planner: Any, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)

        # Labels
        self.labels = {
            "spleen": 1,
        }

        # Model Files
        self.path = [
            os.path.join(self.model_dir, f"pretrained_{name}.pt"),  # pretrained
            os.path.join(self.model_dir, f"{name}.pt"),  # published
        ]

        if strtobool(self.conf.get("use_pretrained_model", "false")):
            raise ValueError("this reference copy downloads nothing: start it with --conf use_pretrained_model false")

        self.target_spacing = (1.0, 1.0, 1.0)  # target space for image
        # Setting ROI size - This is for the image padding
        self.roi_size = (96, 96, 96)

        # Network
        self.network = UNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=2,
            channels=[16, 32, 64, 128, 256],
            strides=[2, 2, 2, 2],
            num_res_units=2,
            norm="batch",
        )

    def infer(self) -> InferTask:
        return lib.infers.SegmentationSpleen(
            path=self.path,
            network=self.network,
            roi_size=self.roi_size,
            target_spacing=self.target_spacing,
            labels=self.labels,
            preload=strtobool(self.conf.get("preload", "false")),
        )

    def trainer(self):
        return None
