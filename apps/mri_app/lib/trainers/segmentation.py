"""Segmentation trainers: slice-wise 2D ResUNet with focal Tversky loss, 3D U-Net with Dice + CE."""

from typing import Dict, List, Sequence

import numpy as np
import SimpleITK as sitk
from monai.inferers import SlidingWindowInferer
from monai.losses import DiceCELoss
from monai.transforms import Activationsd, AsDiscreted
from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.basic_train import Context

from lib.datalists import segmentation_items
from lib.losses import FocalTverskyLoss
from lib.trainers.base import MRITrainTask
from lib.transforms import train_slices_pre, train_volume_pre


class _SegmentationTrainer(MRITrainTask):
    slicewise = True

    def __init__(self, *args, labels: Dict[str, int], **kwargs):
        super().__init__(*args, **kwargs)
        self.labels = labels
        self.num_classes = len(labels) + 1

    def items(self, datastore: Datastore) -> List[Dict]:
        return segmentation_items(datastore, self.task, {self.task: self.labels}, slicewise=self.slicewise)

    def train_post_transforms(self, context: Context):
        return [
            Activationsd(keys="pred", softmax=True),
            AsDiscreted(keys=("pred", "label"), argmax=(True, False), to_onehot=self.num_classes),
        ]


class SliceSegmentationTrainer(_SegmentationTrainer):
    """2D ResUNet on axial slices (all tumor slices plus as many healthy head slices), focal Tversky loss."""

    def __init__(self, *args, size: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.size = size

    def loss_function(self, context: Context):
        return FocalTverskyLoss()

    def train_pre_transforms(self, context: Context):
        return train_slices_pre(self.size, with_mask=True, augment=True)

    def val_pre_transforms(self, context: Context):
        return train_slices_pre(self.size, with_mask=True, augment=False)


class VolumeSegmentationTrainer(_SegmentationTrainer):
    """3D U-Net on random patches of ``roi`` voxels at ``spacing`` mm, Dice + cross-entropy loss."""

    slicewise = False

    def __init__(self, *args, spacing: Sequence[float], roi: Sequence[int], **kwargs):
        super().__init__(*args, **kwargs)
        self.spacing, self.roi = tuple(spacing), tuple(roi)

    def loss_function(self, context: Context):
        return DiceCELoss(to_onehot_y=True, softmax=True)

    def train_pre_transforms(self, context: Context):
        return train_volume_pre(self.spacing, self.roi, augment=True)

    def val_pre_transforms(self, context: Context):
        return train_volume_pre(self.spacing, self.roi, augment=False)

    def val_inferer(self, context: Context):
        return SlidingWindowInferer(roi_size=self.roi, sw_batch_size=4, overlap=0.25)

    def training_card(self, context: Context) -> Dict:
        """``reference_volume_mm3``: range of the foreground volume of the training labels (the infer's sanity check)."""
        items = (context.train_datalist or []) if context else []
        return {"reference_volume_mm3": label_volume_range([i["label"] for i in items])} if items else {}


def label_volume_range(label_paths: Sequence[str]) -> Dict:
    """Min / median / max foreground volume (mm³) over label files (NIfTI/NRRD, any voxel size)."""
    volumes = []
    for path in label_paths:
        image = sitk.ReadImage(path)
        volumes.append(float((sitk.GetArrayViewFromImage(image) > 0).sum()) * float(np.prod(image.GetSpacing())))
    return {
        "min": round(min(volumes), 1),
        "median": round(float(np.median(volumes)), 1),
        "max": round(max(volumes), 1),
        "labels": len(volumes),
        "source": "foreground volume of each training label",
    }
