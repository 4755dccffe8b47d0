"""``tumor_gate``: does a FLAIR slice (or any slice of a volume) show a tumor? First stage of the pipeline.

``--conf tumor_gate_threshold`` (0..1, default 0.5) is the operating point: the probability of tumor at
which the gate fires. It is reported in every result and can be overridden per request (``threshold``).

``--conf tumor_gate_source`` chooses what answers:

- ``segmentation`` (default): where ``tumor_seg`` is served with a checkpoint, the gate reads its network:
  p(tumor) of a slice is the mean of its highest tumor probabilities over :attr:`TumorGateConfig.area_fraction`
  of the slice (:class:`lib.infers.classifier.SegmentationGateInfer`). Trained on every pixel of the masks, it
  tells tumor slices far better than a classifier trained on per-slice labels (held-out slices, README), and the
  pipeline then fires where the mask finds tumor. Without ``tumor_seg`` the classifier below answers.
- ``classifier``: the gate's own 2D classifier, trained on class labels and, for volumes and slices with a
  ``tumor_seg`` mask, on per-slice labels derived from the mask (what ``POST /train/tumor_gate`` trains).
"""

from lib.conf import conf_float
from lib.infers.classifier import SegmentationGateInfer, TumorGateInfer
from lib.task_config import RECIPE, ClassifierConfig

SOURCES = ("segmentation", "classifier")


class TumorGateConfig(ClassifierConfig):
    classes = ("no_tumor", "tumor")
    description = "Tumor gate: tumor yes/no with probability and operating threshold (FLAIR slice or volume)"
    infer_class = TumorGateInfer
    recipe = dict(RECIPE, max_epochs=30)
    mask_task = ("tumor_seg", {"tumor": 1})
    evaluation = "gate"  # per slice of a volume with a tumor_seg mask; shipped and recall-targeted thresholds
    negative_class = "no_tumor"
    # mri-label import classfolders (brain_tumor_4class): every tumor folder is a tumor
    folder_classes = {"glioma_tumor": "tumor", "meningioma_tumor": "tumor", "pituitary_tumor": "tumor"}
    image_size = 256  # small lesions: at 128 px the stride-2 stem leaves them a pixel or two (held-out AUC 0.82)
    reads_networks_of = ("tumor_seg",)
    area_fraction = 50 / 256**2
    """Of a slice's pixels, whose tumor probabilities are averaged (50 pixels at 256²; chosen on the validation
    subjects among 1, 10, 20, 50, 100, 200 and 400 pixels of predicted area)."""

    def init(self, name, model_dir, conf, planner=None, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.threshold = conf_float(conf, "tumor_gate_threshold", 0.5, low=0.0, high=1.0)
        self.source = str(conf.get("tumor_gate_source", SOURCES[0])).strip().lower()
        if self.source not in SOURCES:
            raise ValueError(
                f"--conf tumor_gate_source must be one of {', '.join(SOURCES)}, got {conf.get('tumor_gate_source')!r}"
            )

    def card(self):
        return dict(super().card(), threshold=self.threshold)

    def infer_kwargs(self):
        return {"threshold": self.threshold}

    def infer_in(self, configs):
        segmenter = configs.get(self.reads_networks_of[0])
        if self.source != "segmentation" or segmenter is None or not segmenter.has_checkpoint():
            return self.infer()
        return SegmentationGateInfer(
            segmenter.serving_paths,
            segmenter.network,
            self.labels,
            segmenter.size,
            self.description,
            threshold=self.threshold,
            area_fraction=self.area_fraction,
        )
