"""Segmentation trainers: slice-wise 2D ResUNet with focal Tversky loss, 3D U-Net with Dice + CE."""

from typing import Dict, List, Sequence

import numpy as np
import SimpleITK as sitk
from monai.handlers import IgniteMetricHandler, from_engine
from monai.inferers import SliceInferer
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.transforms import Activationsd, AsDiscreted
from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.basic_train import Context

from lib.datalists import segmentation_items, trainable_final_labels
from lib.losses import FocalTverskyCELoss
from lib.mirroring import volume_inferer
from lib.slice_cache import train_cached_pre, volume_items
from lib.trainers.base import MRITrainTask
from lib.transforms import train_volume_pre


class _SegmentationTrainer(MRITrainTask):
    slicewise = True

    def __init__(self, *args, labels: Dict[str, int], **kwargs):
        super().__init__(*args, **kwargs)
        self.labels = labels
        self.num_classes = len(labels) + 1

    def items(self, datastore: Datastore) -> List[Dict]:
        task_labels = {self.task: self.labels}
        labels, self._label_rule = trainable_final_labels(datastore, self.task, task_labels, self.train_on)
        return segmentation_items(datastore, self.task, task_labels, slicewise=self.slicewise, labels=labels)

    def train_post_transforms(self, context: Context):
        return [
            Activationsd(keys="pred", softmax=True),
            AsDiscreted(keys=("pred", "label"), argmax=(True, False), to_onehot=self.num_classes),
        ]


class SliceSegmentationTrainer(_SegmentationTrainer):
    """2D ResUNet on axial slices (all tumor slices plus as many healthy head slices) from the slice cache, with
    focal Tversky over the whole batch plus cross-entropy (:class:`lib.losses.FocalTverskyCELoss`: healthy slices'
    false positives cost). Validation runs each validation image whole, slice by slice (every slice, the empty ones
    too), and scores its Dice over the whole volume (an image without tumor: 1 if left empty, else 0), so the
    checkpoint is chosen on the false positives a clinician would see.

    Args:
        size: model input side (pixels).
        scanner_augment: also the scanner and source appearance changes of the classifiers
            (:func:`lib.transforms.scanner_augment`; the mask is zoomed with its image).
    """

    VOLUME_DICE = "val_volume_dice"

    def __init__(self, *args, size: int, scanner_augment: bool = False, **kwargs):
        kwargs["config"] = dict(kwargs.get("config") or {}, val_batch_size=1)  # whole volumes differ in depth
        super().__init__(*args, **kwargs)
        self.size = size
        self.scanner_augment = scanner_augment

    def items(self, datastore: Datastore) -> List[Dict]:
        return self.cache_slices(super().items(datastore), datastore, self.size, with_mask=True)

    def partition_datalist(self, context: Context, shuffle=False):
        train, val = super().partition_datalist(context, shuffle)
        return train, volume_items(val)

    def loss_function(self, context: Context):
        return FocalTverskyCELoss()

    def train_pre_transforms(self, context: Context):
        return train_cached_pre(with_mask=True, augment=True, scanner=self.scanner_augment)

    def val_pre_transforms(self, context: Context):
        return train_cached_pre(with_mask=True, augment=False)

    def val_inferer(self, context: Context):
        return SliceInferer(roi_size=(self.size, self.size), spatial_dim=2, sw_batch_size=16, progress=False)

    def val_key_metric(self, context: Context):
        dice = DiceMetric(include_background=False, reduction="mean", ignore_empty=False)
        return {self.VOLUME_DICE: IgniteMetricHandler(metric_fn=dice, output_transform=from_engine(["pred", "label"]))}


class VolumeSegmentationTrainer(_SegmentationTrainer):
    """3D U-Net on random patches of ``roi`` voxels at ``spacing`` mm, Dice + cross-entropy loss; random mirrors
    along ``flip_axes``, validated with the served inferer (mirror-averaged likewise). ``nnunet_augment``: nnU-Net's
    augmentation (:func:`lib.transforms.nnunet_augment_3d`) in place of the mild default."""

    slicewise = False

    def __init__(
        self,
        *args,
        spacing: Sequence[float],
        roi: Sequence[int],
        flip_axes: Sequence[int] = (),
        nnunet_augment: bool = False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.spacing, self.roi, self.flip_axes = tuple(spacing), tuple(roi), tuple(flip_axes)
        self.nnunet_augment = nnunet_augment

    def loss_function(self, context: Context):
        return DiceCELoss(to_onehot_y=True, softmax=True)

    def train_pre_transforms(self, context: Context):
        return train_volume_pre(
            self.spacing, self.roi, augment=True, flip_axes=self.flip_axes, nnunet_augment=self.nnunet_augment
        )

    def val_pre_transforms(self, context: Context):
        return train_volume_pre(self.spacing, self.roi, augment=False)

    def val_inferer(self, context: Context):
        return volume_inferer(self.roi, self.flip_axes)

    def training_card(self, context: Context) -> Dict:
        """``reference_volume_mm3``: range of the foreground volume of the training labels (the infer's sanity
        check)."""
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
