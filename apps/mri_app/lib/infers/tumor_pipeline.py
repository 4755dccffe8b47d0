"""Two-stage tumor pipeline: ``tumor_gate`` decides per slice, ``tumor_seg`` runs only where it fires."""

from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from lib.infers.classifier import TumorGateInfer
from lib.infers.segmentation import SliceSegmentationInfer


class TumorPipelineInfer(InferTask):
    """Gate, then segment the slices where the gate's tumor probability reaches its threshold.

    Returns the ``tumor_seg`` label map (empty where the gate does not fire) and a JSON with ``tumor``,
    ``probability``, ``threshold``, ``fired_slices``, the gate's full answer and the mask measurements.
    """

    def __init__(self, gate: TumorGateInfer, segmentation: SliceSegmentationInfer, description: str):
        super().__init__(
            type=InferType.SEGMENTATION,
            labels=segmentation.labels,
            dimension=3,
            description=description,
            config=dict(gate.config()),
        )
        self.gate, self.segmentation = gate, segmentation

    def is_valid(self) -> bool:
        return self.gate.is_valid() and self.segmentation.is_valid()

    def stages(self):
        """The infer tasks this pipeline runs, in order."""
        return [self.gate, self.segmentation]

    def __call__(self, request, callbacks=None):
        _, gate = self.gate(dict(request))
        fired = gate["fired_slices"]
        label_file, seg = self.segmentation(dict(request, slices=fired))
        latencies = {"gate": gate["latencies"]["total"], "segmentation": seg["latencies"]["total"]}
        latencies["total"] = round(latencies["gate"] + latencies["segmentation"], 2)
        return label_file, {
            "task": "tumor_pipeline",
            "tumor": gate["tumor"],
            "probability": gate["probability"],
            "threshold": gate["threshold"],
            "fired_slices": fired,
            "gate": gate,
            "measurements": seg.get("measurements", {}),
            "label_names": self.labels,
            "checkpoints": {"tumor_gate": gate["checkpoint"], "tumor_seg": seg["checkpoint"]},
            "latencies": latencies,
        }
