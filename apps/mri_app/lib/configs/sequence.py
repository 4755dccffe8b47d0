"""``sequence``: which MRI contrast a slice or volume is (T1 / T2 / FLAIR), for triage before volumetry."""

from lib.configs.dementia_stage import DementiaStageConfig
from lib.task_config import RECIPE, ClassifierConfig


class SequenceConfig(ClassifierConfig):
    classes = ("T1", "T2", "FLAIR")
    description = "MRI sequence classifier: T1 / T2 / FLAIR of a slice, or of a volume from its central slices"
    recipe = dict(RECIPE, max_epochs=40)
    # mri-label import classfolders: mri_sequence_2d's "<tumour type> <sequence>" folders (T1C+: T1 after contrast),
    # and alzheimer_4class/train, whose folders (named as dementia_stage's classes) all hold axial T1 slices
    folder_classes = {
        **{
            f"{kind} {folder}": name
            for kind in ("Meningioma", "Astrocitoma")
            for folder, name in (("T1", "T1"), ("T1C+", "T1"), ("T2", "T2"))
        },
        **{stage: "T1" for stage in DementiaStageConfig.classes},
    }
    # series id -> class: BraTS file suffixes and LGG channels (mri-label import), synthetic phantoms' contrasts
    series_classes = {"t1": "T1", "t1ce": "T1", "t2": "T2", "flair": "FLAIR"}
    # chosen on the 235 validation images with the shipped checkpoint: balanced accuracy 0.994 without, 0.996 with
    # (docs/explanation/evaluation.md)
    test_time_mirroring = True
