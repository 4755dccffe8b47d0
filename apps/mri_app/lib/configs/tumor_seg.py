"""``tumor_seg``: FLAIR tumor mask from a 2D ResUNet (residual encoder-decoder) with focal Tversky loss.

Second stage of the tumor pipeline: run directly it segments every slice; inside ``tumor_pipeline``
only the slices where ``tumor_gate`` fires.
"""

from lib.task_config import SliceSegmentationConfig


class TumorSegConfig(SliceSegmentationConfig):
    task_labels = {"tumor": 1}
    description = "Tumor segmentation (FLAIR), 2D ResUNet slice by slice; mask in the input grid, volume in mm³"
