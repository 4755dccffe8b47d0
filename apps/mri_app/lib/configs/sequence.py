"""``sequence``: which MRI contrast a slice or volume is (T1 / T2 / FLAIR), for triage before volumetry."""

from lib.task_config import RECIPE, ClassifierConfig


class SequenceConfig(ClassifierConfig):
    classes = ("T1", "T2", "FLAIR")
    description = "MRI sequence classifier: T1 / T2 / FLAIR of a slice, or of a volume from its central slices"
    recipe = dict(RECIPE, max_epochs=40)
