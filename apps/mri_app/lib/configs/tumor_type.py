"""``tumor_type``: which kind of tumor a slice or volume shows: glioma / meningioma / pituitary / no_tumor.

Third stage of ``tumor_pipeline``: it runs there only on the slices where ``tumor_gate`` fires. Trained from
scratch by default (no weights are downloaded); ``--conf tumor_type_pretrained PATH`` starts training from a
torchvision or MONAI ResNet-18/34 state dict on disk instead (see :class:`lib.task_config.ClassifierConfig`).
Data: the class-folder layout of ``brain_tumor_4class/Training/`` through ``mri-label import classfolders
... --task tumor_type`` (near-duplicate groups as subjects).
"""

from lib.task_config import RECIPE, ClassifierConfig


class TumorTypeConfig(ClassifierConfig):
    classes = ("glioma", "meningioma", "pituitary", "no_tumor")
    description = "Tumor type: glioma / meningioma / pituitary / no_tumor from an MRI slice or volume"
    recipe = dict(RECIPE, max_epochs=50)
