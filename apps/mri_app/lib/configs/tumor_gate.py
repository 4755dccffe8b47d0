"""``tumor_gate``: does a FLAIR slice (or any slice of a volume) show a tumor? First stage of the pipeline.

``--conf tumor_gate_threshold`` (0..1, default 0.5) is the operating point: the probability of tumor at
which the gate fires. It is reported in every result and can be overridden per request (``threshold``).
Trained on class labels and, for volumes and slices with a ``tumor_seg`` mask, on per-slice labels
derived from the mask.
"""

from lib.conf import conf_float
from lib.infers.classifier import TumorGateInfer
from lib.task_config import RECIPE, ClassifierConfig


class TumorGateConfig(ClassifierConfig):
    classes = ("no_tumor", "tumor")
    description = "Tumor gate: tumor yes/no with probability and operating threshold (FLAIR slice or volume)"
    infer_class = TumorGateInfer
    recipe = dict(RECIPE, max_epochs=30)
    mask_task = ("tumor_seg", {"tumor": 1})
    image_size = 256  # small lesions: at 128 px the stride-2 stem leaves them a pixel or two (held-out AUC 0.82)

    def init(self, name, model_dir, conf, planner=None, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.threshold = conf_float(conf, "tumor_gate_threshold", 0.5, low=0.0, high=1.0)

    def card(self):
        return dict(super().card(), threshold=self.threshold)

    def infer_kwargs(self):
        return {"threshold": self.threshold}
