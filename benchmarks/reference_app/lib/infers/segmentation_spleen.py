"""Reference infer for ``benchmarks/latency.py``: MONAI Label's stock radiology ``segmentation_spleen`` infer.

Mirrors ``sample-apps/radiology/lib/infers/segmentation_spleen.py`` of MONAI Label 0.8.5 (Project-MONAI/MONAILabel,
Apache-2.0; identical to the copy the monailabel 0.8.5 wheel installs under ``<venv>/monailabel/sample-apps`` and to
the upstream main branch as read for this copy): the same pre-transforms (load, channel first, RAS orientation,
1 mm spacing, CT window -57..164 scaled to 0..1 then to -1..1), the same sliding-window inferer (ROI 160^3, batch 1,
overlap 0.25, constant blending) and the same post-transforms (softmax, argmax, largest connected component,
restore to the input grid), with MONAI Label's default writer (compressed NIfTI). Nothing is changed: the CT window
makes no sense for MRI, but the cost of every step does not depend on the intensities.
"""

from typing import Callable, Sequence

from monai.inferers import Inferer, SlidingWindowInferer
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    EnsureChannelFirstd,
    EnsureTyped,
    KeepLargestConnectedComponentd,
    LoadImaged,
    Orientationd,
    ScaleIntensityd,
    ScaleIntensityRanged,
    Spacingd,
)
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.transform.post import Restored


class SegmentationSpleen(BasicInferTask):
    """Inference engine of the pre-trained spleen segmentation (UNet) model over the MSD data set (upstream)."""

    def __init__(
        self,
        path,
        network=None,
        target_spacing=(1.0, 1.0, 1.0),
        type=InferType.SEGMENTATION,
        labels=None,
        dimension=3,
        description="A pre-trained model for volumetric (3D) segmentation of the spleen from CT image",
        **kwargs,
    ):
        super().__init__(
            path=path,
            network=network,
            type=type,
            labels=labels,
            dimension=dimension,
            description=description,
            load_strict=False,
            **kwargs,
        )
        self.target_spacing = target_spacing

    def pre_transforms(self, data=None) -> Sequence[Callable]:
        return [
            LoadImaged(keys="image"),
            EnsureTyped(keys="image", device=data.get("device") if data else None),
            EnsureChannelFirstd(keys="image"),
            Orientationd(keys="image", axcodes="RAS"),
            Spacingd(keys="image", pixdim=self.target_spacing, allow_missing_keys=True),
            ScaleIntensityRanged(keys="image", a_min=-57, a_max=164, b_min=0.0, b_max=1.0, clip=True),
            ScaleIntensityd(keys="image", minv=-1.0, maxv=1.0),
        ]

    def inferer(self, data=None) -> Inferer:
        return SlidingWindowInferer(
            roi_size=[160, 160, 160],
            sw_batch_size=1,
            overlap=0.25,
        )

    def inverse_transforms(self, data=None):
        return []

    def post_transforms(self, data=None) -> Sequence[Callable]:
        return [
            EnsureTyped(keys="pred", device=data.get("device") if data else None),
            Activationsd(keys="pred", softmax=True),
            AsDiscreted(keys="pred", argmax=True),
            KeepLargestConnectedComponentd(keys="pred"),
            Restored(keys="pred", ref_image="image"),
        ]
