"""``tumor_pipeline``: ``tumor_gate`` decides per slice; only where it fires, ``tumor_seg`` segments and
``tumor_type`` (where it is served) says which kind of tumor it is (:class:`lib.pipeline_config.PipelineConfig`).
Served where ``tumor_gate`` and ``tumor_seg`` are; ``mri-label evaluate tumor_pipeline`` scores it on the FLAIR
volumes (``tumor_seg``'s ``input_series``) beside ``tumor_seg`` alone."""

from lib.pipeline_config import PipelineConfig


class TumorPipelineConfig(PipelineConfig):
    gate = "tumor_gate"
    segmentation = "tumor_seg"
    typing = "tumor_type"
    reference = "tumor_seg"  # its mean Dice should lie within mri_label.evaluate.PIPELINE_TOLERANCE of tumor_seg's
    description = "Tumor pipeline: {gate} per slice; {later} only where the gate fires"
