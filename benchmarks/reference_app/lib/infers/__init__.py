from .segmentation_spleen import SegmentationSpleen  # noqa: F401
