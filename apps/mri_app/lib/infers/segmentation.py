"""Segmentation infer tasks: slice-wise 2D (tumor_seg) and 3D sliding window (hippocampus).

Both return a label map in the input's own grid (the stock MONAI Label Slicer panel loads it as is)
and ``measurements`` in the result JSON: volume per label in mm³ (area in mm² for a 2D image),
total, and left/right volumes for 3D input.
"""

from typing import Dict, Optional, Sequence

from monai.transforms import Activationsd, AsDiscreted, KeepLargestConnectedComponentd, SqueezeDimd
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.transform.post import Restored

from lib.infers import checkpoint_info
from lib.mirroring import volume_inferer
from lib.slicewise import SlicewiseInferer
from lib.transforms import LabelVolumesd, LesionMeasuresd, axial_axis, infer_slices_pre, infer_volume_pre
from lib.uncertainty import PredictiveEntropyd, UncertainSlicesd, wants_uncertainty


class _SegmentationInfer(BasicInferTask):
    answers_uncertainty = True  # params {"uncertainty": true}: the voxel uncertainty map (lib.uncertainty)

    def __init__(self, path: str, network, labels: Dict[str, int], description: str, **kwargs):
        super().__init__(
            path=path,
            network=network,
            type=InferType.SEGMENTATION,
            labels=labels,
            dimension=3,
            description=description,
            **kwargs,
        )

    def inverse_transforms(self, data=None):
        return []

    def post_transforms(self, data=None) -> Sequence:
        if wants_uncertainty(data):  # the answer is the voxel uncertainty map (lib.uncertainty), not the labels
            return [
                Activationsd(keys="pred", softmax=True),
                PredictiveEntropyd(keys="pred"),
                SqueezeDimd(keys="pred", dim=0),
                Restored(keys="pred", ref_image="image", has_channel=False, mode="bilinear"),
                UncertainSlicesd(keys="pred"),
            ]
        return [
            Activationsd(keys="pred", softmax=True),
            AsDiscreted(keys="pred", argmax=True),
            SqueezeDimd(keys="pred", dim=0),
            Restored(keys="pred", ref_image="image", has_channel=False),
            LabelVolumesd(keys="pred", labels=self.labels),
        ]

    def writer(self, data, extension=None, dtype=None):
        if wants_uncertainty(data):  # float32 in a format that holds it (a 2D picture's own PNG/JPG/TIF would not)
            dtype = dtype or "float32"
            path = str(data.get("image_path") or "")
            if not extension and not data.get("result_extension") and not path.endswith((".nii", ".nii.gz", ".nrrd")):
                extension = ".nii.gz"
        result_file, result = super().writer(data, extension=extension, dtype=dtype or "uint8")
        result["checkpoint"] = checkpoint_info(self.get_path())
        return result_file, result


class SliceSegmentationInfer(_SegmentationInfer):
    """2D network over the axial slices of a slice or volume; ``slices`` in the request limits which run.
    ``lesions``: name of the label whose connected components are measured as lesions (``measurements["lesions"]``,
    :class:`lib.transforms.LesionMeasuresd`); None: none. ``keep_largest``: keep only the largest connected
    component (face-connected, over the whole volume: MONAI's ``KeepLargestConnectedComponentd``) of the labels,
    nnU-Net's post-processing, for a task whose validation says it helps."""

    def __init__(self, *args, size: int, lesions: Optional[str] = None, keep_largest: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.size = size
        if lesions is not None and lesions not in self.labels:
            raise ValueError(f"lesions must name one of the labels {list(self.labels)}, got {lesions!r}")
        self.lesions = lesions
        self.keep_largest = bool(keep_largest)

    def post_transforms(self, data=None) -> Sequence:
        chain = list(super().post_transforms(data))
        if wants_uncertainty(data):
            return chain
        if self.keep_largest:  # on the argmax labels (B=1 channel first), before the channel is squeezed
            at = next(i for i, t in enumerate(chain) if isinstance(t, AsDiscreted)) + 1
            chain.insert(at, KeepLargestConnectedComponentd(keys="pred", independent=False, connectivity=1))
        if self.lesions is not None:
            chain.append(LesionMeasuresd(keys="pred", label=self.labels[self.lesions]))
        return chain

    def pre_transforms(self, data=None) -> Sequence:
        return infer_slices_pre()

    def inferer(self, data=None):
        image = data["image"]
        axis = axial_axis(image.affine) if image.ndim == 4 else 2
        return SlicewiseInferer(self.size, axis=axis, segmentation=True, slices=data.get("slices"))


class VolumeSegmentationInfer(_SegmentationInfer):
    """3D network, sliding window at ``spacing`` mm over patches of ``roi`` voxels, averaged over the mirrors along
    ``flip_axes`` (:class:`lib.mirroring.MirrorAveragingInferer`); 2D input is refused."""

    volume_only = True

    def __init__(self, *args, spacing: Sequence[float], roi: Sequence[int], flip_axes: Sequence[int] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.spacing, self.roi, self.flip_axes = tuple(spacing), tuple(roi), tuple(flip_axes)

    def pre_transforms(self, data=None) -> Sequence:
        return infer_volume_pre(self.spacing)

    def inferer(self, data=None):
        return volume_inferer(self.roi, self.flip_axes)
