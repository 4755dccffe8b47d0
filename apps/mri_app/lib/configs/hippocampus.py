"""``hippocampus``: 3D U-Net segmentation of the hippocampus from T1 (labels as in the Decathlon's
Task04: 1 = anterior, 2 = posterior). A Decathlon-like crop is segmented as given; a whole-head T1 is
registered to the MNI152 template and each hippocampus is cropped, segmented and pasted back
(:mod:`lib.infers.hippocampus`). The result gives volumes in mm³ per label and per side, and flags a
hippocampus whose volume lies outside the range of the training labels."""

from lib.infers.hippocampus import HippocampusInfer
from lib.task_config import RECIPE, VolumeSegmentationConfig


class HippocampusConfig(VolumeSegmentationConfig):
    task_labels = {"anterior": 1, "posterior": 2}
    description = (
        "Hippocampus segmentation (T1 crop or whole head, 3D U-Net): anterior/posterior mask, left/right volumes in mm³"
    )
    infer_class = HippocampusInfer
    input_series = "t1"  # it reads T1 (mri-label sample-data's hippocampus phantoms are T1)
    evaluation = "segmentation+union"  # anterior and posterior, and the whole hippocampus (as MSD reports them)
    recipe = dict(RECIPE, max_epochs=70, train_batch_size=4, learning_rate=1e-3, early_stop_patience=20)
    flip_axes = (0,)  # left-right mirrors in training, averaged over at inference (lib.mirroring)
    measures = "volumes"  # reported per label and side; change over time also per year (mri_label.core.change)
