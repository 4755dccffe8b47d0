"""``hippocampus``: 3D U-Net segmentation of the hippocampus from T1 (labels as in the Decathlon's
Task04: 1 = anterior, 2 = posterior); the result gives volumes in mm³ per label and per side."""

from lib.task_config import VolumeSegmentationConfig


class HippocampusConfig(VolumeSegmentationConfig):
    task_labels = {"anterior": 1, "posterior": 2}
    description = "Hippocampus segmentation (T1, 3D U-Net): anterior/posterior mask, volumes in mm³ left/right"
