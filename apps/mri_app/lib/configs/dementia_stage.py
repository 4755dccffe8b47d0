"""``dementia_stage``: Alzheimer stage from an axial T1 slice or volume."""

from lib.task_config import RECIPE, ClassifierConfig


class DementiaStageConfig(ClassifierConfig):
    classes = ("NonDemented", "VeryMildDemented", "MildDemented", "ModerateDemented")
    description = "Dementia stage from T1: NonDemented / VeryMildDemented / MildDemented / ModerateDemented"
    recipe = dict(RECIPE, max_epochs=120, early_stop_patience=30)
