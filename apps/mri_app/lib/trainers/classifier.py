"""Slice classifiers (sequence, dementia_stage, tumor_gate, tumor_type): cross-entropy with class weights."""

import logging
from typing import Dict, List, Optional, Sequence

import torch
from ignite.metrics import Accuracy, Recall
from monai.handlers import from_engine
from monai.transforms import Activationsd
from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.basic_train import Context

from lib.datalists import classification_items, trainable_final_labels
from lib.networks import load_pretrained
from lib.slice_cache import train_cached_pre
from lib.trainers.base import MRITrainTask

logger = logging.getLogger(__name__)


def _stacked(output):
    """Decollated engine output -> ``(probabilities (B, K), class indices (B,))`` for ignite metrics."""
    preds, labels = from_engine(["pred", "label"])(output)
    return torch.stack(list(preds)), torch.stack([torch.as_tensor(v).reshape(()) for v in labels]).long()


class ClassifierTrainer(MRITrainTask):
    """Trains a slice classifier on class labels kept in image info.

    Class imbalance is met with inverse-frequency class weights in the loss; the validation key metric
    is balanced accuracy (macro recall), accuracy is logged beside it. Slices come from the persistent slice cache
    (:mod:`lib.slice_cache`) and are augmented for scanner and source differences
    (:func:`lib.transforms.scanner_augment`) on top of flips, affine, intensity and noise.

    Args:
        classes: class names in index order.
        size: model input side (pixels).
        mask_task: ``(task, labels)`` of a segmentation task whose ``final`` masks give per-slice
            labels (tumor_gate learns from tumor_seg masks: class 1 where the slice has tumor); which masks, by
            ``train_on`` (:func:`lib.datalists.trainable_final_labels`).
        slices_per_volume: central slices taken from each class-labelled volume (evenly spaced).
        pretrained: a ResNet state dict file the network is initialised from before training (see
            :func:`lib.networks.load_pretrained`); a run that resumes its own checkpoint (same run name) or
            fine-tunes the served one loads that on top, as MONAI Label's ``load_path`` does.
    """

    def __init__(
        self,
        *args,
        classes: Sequence[str],
        size: int,
        mask_task: Optional[tuple] = None,
        slices_per_volume: int = 8,
        pretrained: Optional[str] = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.classes, self.size, self.mask_task = list(classes), size, mask_task
        self.slices_per_volume = slices_per_volume
        self.pretrained = pretrained

    def network(self, context: Context):
        network = super().network(context)
        if self.pretrained:
            report = load_pretrained(network, self.pretrained)
            logger.info(
                f"{self.task}: training starts from {report['path']} ({report['loaded']} tensors; "
                f"adapted {report['adapted'] or 'none'}; left out {report['dropped'] or 'none'})"
            )
        return network

    def items(self, datastore: Datastore) -> List[Dict]:
        masks = None
        if self.mask_task:
            task, labels = self.mask_task
            chosen, rule = trainable_final_labels(datastore, task, {task: labels}, self.train_on)
            self._label_rule = dict(rule, task=task)  # the masks of another task give per-slice labels
            masks = chosen.get

        items = classification_items(
            datastore, self.task, self.classes, mask_labels=masks, slices_per_volume=self.slices_per_volume
        )
        return self.cache_slices(items, datastore, self.size, with_mask=False)

    def loss_function(self, context: Context):
        counts = torch.zeros(len(self.classes))
        for item in context.train_datalist:
            counts[int(item["label"])] += 1
        weights = counts.sum() / (len(self.classes) * counts.clamp_min(1))
        return torch.nn.CrossEntropyLoss(weight=weights.to(context.device))

    def train_pre_transforms(self, context: Context):
        return train_cached_pre(with_mask=False, augment=True, scanner=True)

    def val_pre_transforms(self, context: Context):
        return train_cached_pre(with_mask=False, augment=False)

    def train_post_transforms(self, context: Context):
        return [Activationsd(keys="pred", softmax=True)]

    def train_key_metric(self, context: Context):
        return {"train_accuracy": Accuracy(output_transform=_stacked)}

    def val_key_metric(self, context: Context):
        return {"val_balanced_accuracy": Recall(average=True, output_transform=_stacked)}

    def val_additional_metrics(self, context: Context):
        return {"val_accuracy": Accuracy(output_transform=_stacked)}
