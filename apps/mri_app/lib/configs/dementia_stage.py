"""``dementia_stage``: Alzheimer stage from an axial T1 slice or volume."""

from lib.task_config import CLASS_FOLDER_CAVEAT, RECIPE, ClassifierConfig


class DementiaStageConfig(ClassifierConfig):
    classes = ("NonDemented", "VeryMildDemented", "MildDemented", "ModerateDemented")  # in order of severity
    description = "Dementia stage from T1: NonDemented / VeryMildDemented / MildDemented / ModerateDemented"
    recipe = dict(RECIPE, max_epochs=120, early_stop_patience=30)
    input_series = "t1"  # it reads T1 (mri-label sample-data puts its stages on the T1 phantoms)
    caveat = CLASS_FOLDER_CAVEAT  # its data: the Alzheimer class-folder JPEGs
    # chosen on the 422 validation images with the shipped checkpoint: balanced accuracy 0.888 without, 0.916 with
    # (docs/explanation/evaluation.md)
    test_time_mirroring = True
