"""``tumor_type``: which kind of tumor a slice or volume shows: glioma / meningioma / pituitary / no_tumor.

Third stage of ``tumor_pipeline``: it runs there only on the slices where ``tumor_gate`` fires. Trained from
scratch by default (no weights are downloaded); ``--conf tumor_type_pretrained PATH`` starts training from a
torchvision or MONAI ResNet-18/34 state dict on disk instead (see :class:`lib.task_config.ClassifierConfig`).
Data: the class-folder layout of ``brain_tumor_4class/Training/`` through ``mri-label import classfolders
... --task tumor_type`` (near-duplicate groups as subjects).
"""

from lib.task_config import CLASS_FOLDER_CAVEAT, RECIPE, ClassifierConfig


class TumorTypeConfig(ClassifierConfig):
    classes = ("glioma", "meningioma", "pituitary", "no_tumor")
    description = "Tumor type: glioma / meningioma / pituitary / no_tumor from an MRI slice or volume"
    recipe = dict(RECIPE, max_epochs=50)
    negative_class = "no_tumor"
    # mri-label import classfolders (brain_tumor_4class)
    folder_classes = {"glioma_tumor": "glioma", "meningioma_tumor": "meningioma", "pituitary_tumor": "pituitary"}
    caveat = CLASS_FOLDER_CAVEAT  # its data: the brain_tumor_4class class-folder JPEGs
