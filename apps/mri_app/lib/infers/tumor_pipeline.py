"""Tumor pipeline: ``tumor_gate`` decides per slice; only where it fires, ``tumor_seg`` segments and
``tumor_type`` (when served) says which kind of tumor it is."""

from typing import Optional

from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from lib.infers import checkpoint_info
from lib.infers.classifier import ClassifierInfer, TumorGateInfer
from lib.infers.segmentation import SliceSegmentationInfer


class TumorPipelineInfer(InferTask):
    """Gate, then segment and type the slices where the gate's tumor probability reaches its threshold.

    Returns the ``tumor_seg`` label map (empty where the gate does not fire) and a JSON with ``tumor``,
    ``probability``, ``threshold``, ``fired_slices``, the gate's full answer and the mask measurements. With a
    ``tumor_type`` stage the JSON also holds ``tumor_type``: ``{"label", "probabilities", "aggregation",
    "slices"}`` of the type classifier run on the fired slices only (their mean probabilities), or ``null``
    where the gate does not fire (then only the gate's answer counts and the mask is empty).
    """

    def __init__(
        self, gate: TumorGateInfer, segmentation: SliceSegmentationInfer, description: str, tumor_type: Optional[ClassifierInfer] = None
    ):
        super().__init__(
            type=InferType.SEGMENTATION,
            labels=segmentation.labels,
            dimension=3,
            description=description,
            config=dict(gate.config()),
        )
        self.gate, self.segmentation, self.tumor_type = gate, segmentation, tumor_type

    def is_valid(self) -> bool:
        return all(stage.is_valid() for stage in self.stages())

    def stages(self):
        """The infer tasks this pipeline runs, in order."""
        return [self.gate, self.segmentation] + ([self.tumor_type] if self.tumor_type is not None else [])

    def __call__(self, request, callbacks=None):
        _, gate = self.gate(dict(request, cam=False))
        fired = gate["fired_slices"]
        label_file, seg = self.segmentation(dict(request, slices=fired))
        latencies = {"gate": gate["latencies"]["total"], "segmentation": seg["latencies"]["total"]}
        checkpoints = {"tumor_gate": gate["checkpoint"], "tumor_seg": seg["checkpoint"]}
        extra = {}
        if self.tumor_type is not None:
            kind = None
            checkpoints["tumor_type"] = checkpoint_info(self.tumor_type.get_path())
            if fired:
                _, kind = self.tumor_type(dict(request, slices=fired, cam=False))
                latencies["type"] = kind["latencies"]["total"]
                kind = {k: kind[k] for k in ("label", "probabilities", "aggregation", "slices")}
            extra["tumor_type"] = kind
        latencies["total"] = round(sum(latencies.values()), 2)
        return label_file, {
            "task": "tumor_pipeline",
            "tumor": gate["tumor"],
            "probability": gate["probability"],
            "threshold": gate["threshold"],
            "fired_slices": fired,
            "gate": gate,
            "measurements": seg.get("measurements", {}),
            **extra,
            "label_names": self.labels,
            "checkpoints": checkpoints,
            "latencies": latencies,
        }
